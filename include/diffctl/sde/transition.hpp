#pragma once

#include <torch/torch.h>

namespace diffctl {

// One step of a reverse-process solver, as a Gaussian transition:
//   x_next = mean + noise_std * xi,  xi ~ N(0, I).
// Deterministic solvers have noise_std == 0. Writing every solver this way lets the
// integrator own the randomness (one generator, reproducible) and lets the
// objectives compute per-step log-densities and KL divergences in closed form.
struct Transition {
  torch::Tensor mean;       // same shape as the state
  double noise_std = 0.0;   // per-coordinate standard deviation of the step's noise
  torch::Tensor score;      // the model's score at the step's start (t, x): reused
                            // for the Tweedie estimate, so recording costs no extra call
};

}  // namespace diffctl
