// Must not compile: the network predicts the noise from (x, time) alone, but
// DenoisingTrainer also passes the labels (undefined when unconditional), so it
// is not an EpsilonNetwork and DenoisingTrainer must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

struct TimeOnlyNetImpl : torch::nn::Module {
  torch::nn::Linear layer = register_module("layer", torch::nn::Linear(3, 2));
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& time, const torch::Tensor&) {
    return layer(torch::cat({x, time.unsqueeze(1)}, 1));
  }
#else
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& time) {
    return layer(torch::cat({x, time.unsqueeze(1)}, 1));
  }
#endif
};
TORCH_MODULE(TimeOnlyNet);

double run(const torch::Tensor& x0) {
  diffctl::algorithms::DenoisingTrainer<parts::Schedule, TimeOnlyNet> trainer(parts::Schedule{}, TimeOnlyNet(),
                                                                              TimeOnlyNet());
  return trainer.step(x0, torch::Tensor{}).loss.item<double>();
}

}  // namespace DIFFCTL_CHECK
