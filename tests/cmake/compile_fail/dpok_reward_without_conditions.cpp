// Must not compile: DPOK scores final states with r(x, z), and this reward takes
// the states alone, so it is not a RewardFunction and Dpok must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct StateOnlyReward {
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor&) const { return x.sum(1); }
#else
  torch::Tensor operator()(const torch::Tensor& x) const { return x.sum(1); }
#endif
};

double run(const diffctl::models::TimeStateMlp& network, at::Generator& generator) {
  using diffctl::algorithms::PolicyScore;
  diffctl::algorithms::Dpok<diffctl::sde::OrnsteinUhlenbeck, PolicyScore, StateOnlyReward> dpok(
      diffctl::sde::OrnsteinUhlenbeck{}, PolicyScore(network), StateOnlyReward{},
      diffctl::algorithms::chain_shape(network));
  return dpok.train_iteration(generator).reward;
}

}  // namespace DIFFCTL_CHECK
