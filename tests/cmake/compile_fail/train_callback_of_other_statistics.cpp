// Must not compile: the callback reads DDPO's statistics, but the step it is given
// is a q-learning episode's, so it has none of a callback's hooks for that step: it
// is not a TrainingCallback and train() must say so, where otherwise it would be
// skipped without a word.

#include <cstdio>

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct PrintLoss {
#ifdef DIFFCTL_CHECK_COMPLETE
  void step(int64_t step, const diffctl::algorithms::EpisodeStats& stats) const {
    std::printf("%lld %g\n", static_cast<long long>(step), stats.loss);
  }
#else
  void step(int64_t step, const diffctl::algorithms::FineTuneStats& stats) const {
    std::printf("%lld %g\n", static_cast<long long>(step), stats.loss);
  }
#endif
};

diffctl::TrainOutcome run() {
  return diffctl::train(
      3, [] { return diffctl::algorithms::EpisodeStats{}; }, PrintLoss{});
}

}  // namespace DIFFCTL_CHECK
