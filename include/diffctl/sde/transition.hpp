#pragma once

#include <cmath>
#include <numbers>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl {

// One step of a reverse-process solver, as a Gaussian transition:
//   x_next = mean + noise_std * xi,  xi ~ N(0, I).
// Deterministic solvers have noise_std == 0. Writing every solver this way lets the
// integrator own the randomness (one generator, reproducible) and lets the
// objectives compute per-step log-densities and KL divergences in closed form.
struct Transition {
  torch::Tensor mean;      // same shape as the state
  double noise_std = 0.0;  // per-coordinate standard deviation of the step's noise
  torch::Tensor score;     // the model's score at the step's start (t, x): reused
                           // for the Tweedie estimate, so recording costs no extra call
};

// Several steps of one batch of chains, stacked on a leading step dimension: the
// means [K, B, ...] and each step's noise_std [K]. DDPO and DPOK differentiate a
// group of steps at once in this form.
struct StepStack {
  torch::Tensor means;
  torch::Tensor noise_std;

  // The stack of one step.
  static StepStack of(const Transition& step) {
    return {step.mean.unsqueeze(0), torch::full({1}, step.noise_std, step.mean.options())};
  }
};

// The two formulas of a Gaussian step N(mean, s^2 I) over `coordinates`
// coordinates, written once for tensors and for the Eigen backends' arrays (s a
// tensor that broadcasts, or a number): the log-density of a state at squared
// distance |next - mean|^2 from the mean, and the KL to a step of the same noise
// whose mean is at squared distance |mean - mean'|^2.
template <class SquaredDistance, class NoiseStd>
auto gaussian_step_log_prob(const SquaredDistance& squared_residual, const NoiseStd& noise_std, double coordinates) {
  using std::log;
  return squared_residual * (-0.5) / (noise_std * noise_std) -
         coordinates * (log(noise_std) + 0.5 * std::log(2.0 * std::numbers::pi));
}
template <class SquaredDistance, class NoiseStd>
auto gaussian_step_kl(const SquaredDistance& squared_gap, const NoiseStd& noise_std) {
  return squared_gap / (2.0 * (noise_std * noise_std));
}

// log N(next_k; mean_k, noise_std_k^2 I) [K, B] over all of a sample's
// coordinates, for next [K, B, ...]: the density a policy-gradient method
// differentiates, read off the solver's own steps. Every noise_std must be > 0.
inline torch::Tensor log_prob(const StepStack& steps, const torch::Tensor& next) {
  require(next.dim() >= 3 && next.sizes() == steps.means.sizes() && steps.noise_std.dim() == 1 &&
              steps.noise_std.size(0) == next.size(0),
          "step log-probability: states of shape ", next.sizes(), " for means of shape ", steps.means.sizes(), " and ",
          steps.noise_std.sizes(), " noise levels (expected [K, B, ...] and [K])");
  return gaussian_step_log_prob((next - steps.means).square().flatten(2).sum(2), steps.noise_std.view({-1, 1}),
                                double(c10::multiply_integers(next.sizes().slice(2))));
}

}  // namespace diffctl
