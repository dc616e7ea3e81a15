#pragma once
// Terminal rewards the algorithm tests share on their 1-D and 2-D problems.

#include <torch/torch.h>

namespace diffctl::testing {

// -|y - 2|^2 over the coordinates of each sample y [B, d]: prefers samples near 2.
struct NearTwo {
  torch::Tensor operator()(const torch::Tensor& y, const torch::Tensor&) const { return -(y - 2.0).square().sum(1); }
};

}  // namespace diffctl::testing
