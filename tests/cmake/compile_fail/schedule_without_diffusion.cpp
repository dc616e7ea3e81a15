// Must not compile: the schedule has no diffusion(s), so it is not a
// NoiseSchedule and integrate() must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct ScheduleWithoutDiffusion {
  double horizon() const { return 1.0; }
  double alpha(double s) const { return std::exp(-s); }
  double sigma(double s) const { return std::sqrt(-std::expm1(-2.0 * s)); }
  double drift_coef(double) const { return -1.0; }
#ifdef DIFFCTL_CHECK_COMPLETE
  double diffusion(double) const { return std::sqrt(2.0); }
#endif
};

diffctl::sde::Trajectory run(const torch::Tensor& x) {
  return diffctl::sde::integrate(ScheduleWithoutDiffusion{}, parts::Model{}, diffctl::sde::ProbabilityFlowEuler{},
                                 parts::grid(), x);
}

}  // namespace DIFFCTL_CHECK
