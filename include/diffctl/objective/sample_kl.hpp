#pragma once
// Samples of one model with each sample's path KL to another: the figure that puts
// any fine-tuned sampler (SEIKO's controls, DDPO's or DPOK's drift) on one axis.
// Both models step with the same schedule, solver and grid, so every step is a
// Gaussian with the same noise and costs objective::transition_kl.

#include <limits>
#include <utility>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/objective/path_kl.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/time_grid.hpp"

namespace diffctl::objective {

struct SampleKlOptions {
  // Return each path's last step mean instead of its draw: the sample of a solver
  // whose last step adds no noise, from the same path (DDPM's forward variance,
  // which gives every step a density, otherwise leaves noise of std
  // sqrt(beta_last) in the samples, about 0.07 for 25 cosine steps: enough to
  // lower a classifier's accuracy on them). The KL stays the noisy chain's.
  bool clean_last_step = false;
  // From this time on the model's drift is the reference's (a tuned model that
  // hands over to the pretrained one, models::SwitchedDrift): the steps from it
  // cost no KL, and the reference is not evaluated a second time on them.
  double reference_from = std::numeric_limits<double>::infinity();
};

struct SamplesWithKl {
  torch::Tensor x;   // x_T [B, ...]
  torch::Tensor kl;  // [B] nats, KL of the sample's path under `model` to `reference`'s
};

// Integrates `model` from x_init with conditions z (undefined: none), without
// gradients, and adds up each step's KL to `reference`'s step from the same state.
template <NoiseSchedule Schedule, DriftModel Model, DriftModel Reference, class Solver>
  requires SdeSolver<Solver, Schedule, Model> && SdeSolver<Solver, Schedule, Reference> SamplesWithKl
  sample_with_path_kl(const Schedule& schedule, const Model& model, const Reference& reference, const Solver& solver,
                      const sde::TimeGrid& grid, const torch::Tensor& x_init, const torch::Tensor& z,
                      at::Generator& generator, SampleKlOptions sample_options = {}) {
    torch::NoGradGuard no_grad;
    torch::Tensor kl = torch::zeros({x_init.size(0)}, x_init.options()), last_mean;
    sde::IntegrateOptions options;
    options.record_x0 = false;
    options.generator = generator;
    options.on_step = [&](const sde::StepRecord& r) {
      if (r.t < sample_options.reference_from)
        kl += transition_kl(r.step, solver.transition(schedule, reference, r.t, r.t_next, r.state, z));
      if (sample_options.clean_last_step && r.k + 1 == grid.steps()) last_mean = r.step.mean;
    };
    torch::Tensor x = sde::integrate(schedule, model, solver, grid, x_init, z, options).final_state;
    if (sample_options.clean_last_step) x = std::move(last_mean);
    return {std::move(x), std::move(kl)};
  }

}  // namespace diffctl::objective
