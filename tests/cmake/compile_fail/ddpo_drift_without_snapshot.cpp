// Must not compile: DDPO fine-tunes a copy of the drift model, and this one can
// neither copy itself nor show its network, so it is not a TunableDrift and Ddpo
// must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct FrozenDrift {
  diffctl::models::TimeStateMlp net{diffctl::models::TimeStateMlpOptions{.state_dim = 2, .out_dim = 2}};
  torch::Tensor score(double, const torch::Tensor& x, const torch::Tensor&) const { return -x; }
#ifdef DIFFCTL_CHECK_COMPLETE
  FrozenDrift snapshot() const { return {}; }
  const diffctl::models::TimeStateMlp& network() const { return net; }
#endif
};

double run(at::Generator& generator) {
  diffctl::algorithms::Ddpo<diffctl::sde::OrnsteinUhlenbeck, FrozenDrift, parts::Reward> ddpo(
      diffctl::sde::OrnsteinUhlenbeck{}, FrozenDrift{}, parts::Reward{}, {.sample = {2}});
  return ddpo.train_iteration(generator).reward;
}

}  // namespace DIFFCTL_CHECK
