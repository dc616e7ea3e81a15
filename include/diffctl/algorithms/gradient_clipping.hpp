#pragma once
// Gradient clipping by the joint l2 norm without a host read: LibTorch's
// torch::nn::utils::clip_grad_norm_ returns the norm as a double, which waits for
// the device at every optimisation step. Here the norm and the scale stay tensors.

#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::algorithms {

// Scales the parameters' gradients by min(1, max_norm / (||g|| + 1e-6)), as
// clip_grad_norm_ does, and returns ||g|| as a 0-dim tensor (undefined when no
// parameter has a gradient).
inline torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  require(max_norm > 0.0, "clip_grad_norm: max_norm must be > 0, found ", max_norm);
  std::vector<torch::Tensor> norms;
  for (const auto& p : parameters)
    if (p.grad().defined()) norms.push_back(p.grad().detach().norm());
  if (norms.empty()) return {};
  const torch::Tensor total = torch::stack(norms).norm();
  const torch::Tensor scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (const auto& p : parameters)
    if (p.grad().defined()) p.grad().detach().mul_(scale);
  return total;
}

}  // namespace diffctl::algorithms
