// Must not compile: each round keeps a copy of the policy as the previous round's
// (the KL to it is part of the objective), and this policy cannot copy itself, so
// it is not a TrainablePolicy and ContinuousSeiko must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct PushRight {
  torch::Tensor shift = torch::zeros({2}, torch::requires_grad());
  torch::Tensor control(double, const torch::Tensor& x, const torch::Tensor&) const { return x * 0 + shift; }
  std::vector<torch::Tensor> parameters() const { return {shift}; }
#ifdef DIFFCTL_CHECK_COMPLETE
  PushRight snapshot() const { return {shift.detach().clone().requires_grad_(true)}; }
#endif
  void add_to(diffctl::io::Checkpoint& checkpoint, const std::string& prefix) {
    checkpoint.tensors.emplace_back(prefix + "shift", &shift);
  }
};

diffctl::algorithms::SeikoRound run(parts::Ensemble ensemble, parts::Oracle& oracle,
                                    diffctl::reward::FeedbackDataset& feedback) {
  return parts::seiko_round(PushRight{}, diffctl::mss::EveryStep{}, std::move(ensemble), oracle, feedback);
}

}  // namespace DIFFCTL_CHECK
