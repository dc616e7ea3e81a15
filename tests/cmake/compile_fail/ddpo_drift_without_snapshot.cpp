// Must not compile: DDPO fine-tunes a copy of the drift model, and this one can
// neither copy itself nor show its network, so it is not a TunableDrift and Ddpo
// must say so. Compare good_combination.cpp.

#include <diffctl/diffctl.hpp>

namespace {

struct FrozenDrift {
  torch::Tensor score(double, const torch::Tensor& x, const torch::Tensor&) const { return -x; }
};

struct Reward {
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor&) const { return x.sum(1); }
};

}  // namespace

double run(at::Generator& generator) {
  diffctl::algorithms::Ddpo<diffctl::sde::OrnsteinUhlenbeck, FrozenDrift, Reward> ddpo(
      diffctl::sde::OrnsteinUhlenbeck{}, FrozenDrift{}, Reward{}, {.sample = {2}});
  return ddpo.train_iteration(generator).reward;
}
