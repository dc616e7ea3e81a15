// Must not compile: the resampling scheme draws from the generator alone, but the
// ensemble also gives it the run's seed (masks derived from it stay the same as
// the data grow), so it is not a ResamplingScheme and BootstrapEnsemble must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct HalfMasks {
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor weights(int64_t members, int64_t n, std::uint64_t, at::Generator& generator) const {
    return torch::bernoulli(torch::full({members, n}, 0.5), generator);
  }
#else
  torch::Tensor weights(int64_t members, int64_t n, at::Generator& generator) const {
    return torch::bernoulli(torch::full({members, n}, 0.5), generator);
  }
#endif
};

double run(parts::Members members, const diffctl::reward::FeedbackDataset& feedback) {
  diffctl::reward::BootstrapEnsemble<parts::Members, diffctl::reward::optimism::MeanPlusStd, HalfMasks> ensemble(
      std::move(members));
  return ensemble.fit(feedback).member_loss.sum().item<double>();
}

}  // namespace DIFFCTL_CHECK
