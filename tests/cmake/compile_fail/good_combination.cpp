// Positive control for the compile-fail cases: the same program as
// model_without_score.cpp and schedule_without_diffusion.cpp with every component
// complete. It must compile, so that their rejection is the concepts' doing and
// not a broken include path or a mistake elsewhere in the program.

#include <cmath>

#include <diffctl/diffctl.hpp>

namespace {

struct Schedule {
  double horizon() const { return 1.0; }
  double alpha(double s) const { return std::exp(-s); }
  double sigma(double s) const { return std::sqrt(-std::expm1(-2.0 * s)); }
  double drift_coef(double) const { return -1.0; }
  double diffusion(double) const { return std::sqrt(2.0); }
};

struct Model {
  torch::Tensor score(double, const torch::Tensor& x, const torch::Tensor&) const { return -x; }
};

}  // namespace

diffctl::sde::Trajectory run(const torch::Tensor& x) {
  return diffctl::sde::integrate(Schedule{}, Model{}, diffctl::sde::ProbabilityFlowEuler{},
                                 diffctl::sde::TimeGrid::uniform(1.0, 10), x);
}
