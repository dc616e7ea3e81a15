// Must not compile: the optimism rule reads the predictions alone, but the
// ensemble also gives it the states, the members (a feature bonus reads them)
// and its generator (Thompson draws), so it is not an OptimismRule and
// BootstrapEnsemble must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct Pessimist {
#ifdef DIFFCTL_CHECK_COMPLETE
  template <class Members>
  torch::Tensor operator()(const torch::Tensor& predictions, const torch::Tensor&, const Members&,
                           at::Generator&) const {
    return predictions.amin(0);
  }
#else
  torch::Tensor operator()(const torch::Tensor& predictions) const { return predictions.amin(0); }
#endif
};

torch::Tensor run(parts::Members members, const torch::Tensor& x) {
  diffctl::reward::BootstrapEnsemble<parts::Members, Pessimist> ensemble(std::move(members));
  return ensemble.optimistic(x, torch::Tensor{});
}

}  // namespace DIFFCTL_CHECK
