// Must not compile: the solver returns the next state, not the step's Gaussian
// transition that fine-tuning takes its log-densities and KLs from, so it is not
// an SdeSolver and integrate() must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct NextStateSolver {
  template <class Schedule, class Model>
#ifdef DIFFCTL_CHECK_COMPLETE
  diffctl::Transition transition(const Schedule& schedule, const Model& model, double t, double t_next,
                                 const torch::Tensor& x, const torch::Tensor& z) const {
    return diffctl::sde::ProbabilityFlowEuler{}.transition(schedule, model, t, t_next, x, z);
  }
#else
  torch::Tensor step(const Schedule& schedule, const Model& model, double t, double t_next, const torch::Tensor& x,
                     const torch::Tensor& z) const {
    return diffctl::sde::ProbabilityFlowEuler{}.transition(schedule, model, t, t_next, x, z).mean;
  }
#endif
};

diffctl::sde::Trajectory run(const torch::Tensor& x) {
  return diffctl::sde::integrate(parts::Schedule{}, parts::Model{}, NextStateSolver{}, parts::grid(), x);
}

}  // namespace DIFFCTL_CHECK
