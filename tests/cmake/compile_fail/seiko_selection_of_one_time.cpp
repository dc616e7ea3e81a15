// Must not compile: the selection strategy decides one time at a time, but
// ContinuousSeiko hands it the whole hallucinated trajectory's times and the
// uncertainty there, so it is not a MeasurementSelection and ContinuousSeiko must
// say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct AboveHalf {
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor select(std::span<const double>, const torch::Tensor& uncertainty) const { return uncertainty > 0.5; }
#else
  torch::Tensor select(double, const torch::Tensor& uncertainty) const { return uncertainty > 0.5; }
#endif
};

diffctl::algorithms::SeikoRound run(parts::Ensemble ensemble, parts::Oracle& oracle,
                                    diffctl::reward::FeedbackDataset& feedback) {
  return parts::seiko_round(diffctl::policy::ZeroControl{}, AboveHalf{}, std::move(ensemble), oracle, feedback);
}

}  // namespace DIFFCTL_CHECK
