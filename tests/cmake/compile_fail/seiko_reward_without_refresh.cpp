// Must not compile: after a restart ContinuousSeiko rebuilds what the reward
// model derives from the feedback data (refresh), and this model cannot, so it is
// not an UncertainReward and ContinuousSeiko must say so, not fail deep inside
// its round with "no member named 'refresh'".

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct ConstantReward {
  void fit(const diffctl::reward::FeedbackDataset&) {}
#ifdef DIFFCTL_CHECK_COMPLETE
  void refresh(const diffctl::reward::FeedbackDataset&) {}
#endif
  torch::Tensor mean(const torch::Tensor& x, const torch::Tensor&) const { return torch::zeros({x.size(0)}); }
  torch::Tensor uncertainty(const torch::Tensor& x, const torch::Tensor&) const { return torch::ones({x.size(0)}); }
  torch::Tensor optimistic(const torch::Tensor& x, const torch::Tensor& z) const { return mean(x, z); }
  diffctl::reward::RewardEstimate estimate(const torch::Tensor& x, const torch::Tensor& z) const {
    return {mean(x, z), uncertainty(x, z), optimistic(x, z)};
  }
  void add_to(diffctl::io::Checkpoint&) {}
};

diffctl::algorithms::SeikoRound run(parts::Oracle& oracle, diffctl::reward::FeedbackDataset& feedback) {
  return parts::seiko_round(diffctl::policy::ZeroControl{}, diffctl::mss::EveryStep{}, ConstantReward{}, oracle,
                            feedback);
}

}  // namespace DIFFCTL_CHECK
