// Must not compile: the model gives a drift but no score, so it is not a
// DriftModel and integrate() must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct DriftOnly {
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor score(double, const torch::Tensor& x, const torch::Tensor&) const { return -x; }
#else
  torch::Tensor drift(double, const torch::Tensor& x, const torch::Tensor&) const { return x; }
#endif
};

diffctl::sde::Trajectory run(const torch::Tensor& x) {
  return diffctl::sde::integrate(parts::Schedule{}, DriftOnly{}, diffctl::sde::ProbabilityFlowEuler{}, parts::grid(),
                                 x);
}

}  // namespace DIFFCTL_CHECK
