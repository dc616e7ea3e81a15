// Must not compile: a round's labels may come from outside the process, so
// ContinuousSeiko waits for them (wait) before it refits, and this oracle cannot
// be waited for, so it is not a FeedbackOracle and run_round must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct ImmediateOracle {
  parts::Oracle oracle{parts::Reward{}};
  void record(diffctl::reward::FeedbackDataset& data, const torch::Tensor& x, const torch::Tensor& z, int64_t round) {
    oracle.record(data, x, z, round);
  }
#ifdef DIFFCTL_CHECK_COMPLETE
  void wait(diffctl::reward::FeedbackDataset&, int64_t) {}
#endif
  torch::Tensor ground_truth(const torch::Tensor& x, const torch::Tensor& z) const { return oracle.ground_truth(x, z); }
  int64_t queries() const { return oracle.queries(); }
};

diffctl::algorithms::SeikoRound run(parts::Ensemble ensemble, ImmediateOracle& oracle,
                                    diffctl::reward::FeedbackDataset& feedback) {
  return parts::seiko_round(diffctl::policy::ZeroControl{}, diffctl::mss::EveryStep{}, std::move(ensemble), oracle,
                            feedback);
}

}  // namespace DIFFCTL_CHECK
