// Must not compile: the impulse source answers from the time alone, but the
// integrator asks it with the state (a feedback control reads it), so it is not
// an ImpulseSource and integrate() must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct KickAtStart {
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor operator()(std::size_t k, double, const torch::Tensor& x) const {
    return k == 0 ? torch::ones_like(x) : torch::Tensor{};
  }
#else
  torch::Tensor operator()(std::size_t k, double) const { return k == 0 ? torch::ones({2}) : torch::Tensor{}; }
#endif
};

diffctl::sde::Trajectory run(const torch::Tensor& x) {
  return diffctl::sde::integrate(parts::Schedule{}, parts::Model{}, diffctl::sde::EulerMaruyama{}, parts::grid(), x,
                                 torch::Tensor{}, KickAtStart{});
}

}  // namespace DIFFCTL_CHECK
