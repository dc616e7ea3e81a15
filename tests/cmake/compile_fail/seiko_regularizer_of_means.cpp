// Must not compile: the regularizer compares step means only, but ContinuousSeiko
// gives it the three steps' Gaussian transitions (a KL needs their noise too), so
// it is not a Regularizer and ContinuousSeiko must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct MeanGap {
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor penalty(const diffctl::Transition& tuned, const diffctl::Transition& pretrained,
                        const diffctl::Transition&) const {
    return (tuned.mean - pretrained.mean).square().flatten(1).sum(1);
  }
#else
  torch::Tensor penalty(const torch::Tensor& tuned, const torch::Tensor& pretrained, const torch::Tensor&) const {
    return (tuned - pretrained).square().flatten(1).sum(1);
  }
#endif
};

diffctl::algorithms::SeikoRound run(parts::Ensemble ensemble, parts::Oracle& oracle,
                                    diffctl::reward::FeedbackDataset& feedback) {
  return parts::seiko_round(diffctl::policy::ZeroControl{}, diffctl::mss::EveryStep{}, std::move(ensemble), oracle,
                            feedback, MeanGap{});
}

}  // namespace DIFFCTL_CHECK
