#pragma once
// The KL regularizer of fine-tuning, on the discretised path measures.
//
// Two samplers that share the schedule and the solver make Gaussian steps with the
// same noise: one step from the same state costs |m_tuned - m_ref|^2 / (2 s^2),
// exactly, and the chain rule adds the steps up. With Euler-Maruyama (m = x + drift
// h, s^2 = sigma^2 h) that is Girsanov's sum of |delta drift|^2 h / (2 sigma^2);
// an impulse u before a step adds |u|^2 / (2 sigma^2 h) to it. The initial
// distributions N(m, e^{2l} I) add their own closed-form KL.

#include <cmath>
#include <cstdint>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/sde/transition.hpp"

namespace diffctl::objective {

// KL of stacked Gaussian steps (means [K, B, ...], noise_std [K] > 0) against
// steps with the reference means and the same noise, per step and sample [K, B].
inline torch::Tensor transition_kl(const StepStack& tuned, const torch::Tensor& reference_means) {
  require(tuned.means.sizes() == reference_means.sizes(), "transition KL: means of shapes ", tuned.means.sizes(),
          " and ", reference_means.sizes());
  return gaussian_step_kl((tuned.means - reference_means).square().flatten(2).sum(2), tuned.noise_std.view({-1, 1}));
}

// KL of one Gaussian step against another with the same noise, per sample [B].
// Deterministic steps (noise 0) have no density: they count 0 here, and the
// fine-tuning algorithms place no control before them.
inline torch::Tensor transition_kl(const Transition& tuned, const Transition& reference) {
  require(tuned.mean.sizes() == reference.mean.sizes(), "transition KL: means of shapes ", tuned.mean.sizes(), " and ",
          reference.mean.sizes());
  require(std::abs(tuned.noise_std - reference.noise_std) <= 1e-9 * std::max(1.0, tuned.noise_std),
          "transition KL: the steps' noise differs (", tuned.noise_std, " vs ", reference.noise_std,
          "): the path KL needs one schedule and one solver");
  if (tuned.noise_std <= 0.0) return torch::zeros({tuned.mean.size(0)}, tuned.mean.options());
  return transition_kl(StepStack::of(tuned), reference.mean.unsqueeze(0))[0];
}

// KL( N(mean, e^{2 log_std} I) || N(ref_mean, e^{2 ref_log_std} I) ) over the
// sample shape of mean (log-stds are scalars), a scalar.
inline torch::Tensor gaussian_kl(const torch::Tensor& mean, const torch::Tensor& log_std, const torch::Tensor& ref_mean,
                                 const torch::Tensor& ref_log_std) {
  const double dims = static_cast<double>(mean.numel());
  return dims * (ref_log_std - log_std) +
         (dims * (2.0 * log_std).exp() + (mean - ref_mean).square().sum()) / (2.0 * (2.0 * ref_log_std).exp()) -
         0.5 * dims;
}

// alpha KL(p || p_pretrained) + beta KL(p || p_previous round), step by step.
struct PathKl {
  double alpha = 1.0;
  double beta = 0.0;
  torch::Tensor penalty(const Transition& tuned, const Transition& pretrained, const Transition& previous) const {
    torch::Tensor total = alpha * transition_kl(tuned, pretrained);
    if (beta != 0.0) total = total + beta * transition_kl(tuned, previous);
    return total;
  }
  // The same weights on the initial distributions' KL (scalars).
  torch::Tensor initial_penalty(const torch::Tensor& pretrained_kl, const torch::Tensor& previous_kl) const {
    return alpha * pretrained_kl + beta * previous_kl;
  }
};

}  // namespace diffctl::objective
