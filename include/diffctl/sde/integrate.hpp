#pragma once
// Controlled integration of the reverse process over a time grid:
//
//   dx = [ drift(t, x, z) + sum_k delta(t - t_k) u_k ] dt + sigma(t) dW,
//
// i.e. the solver's steps, with the state jumping by u_k at each impulse time t_k
// (a grid point) before the step that leaves it.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <functional>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/time_grid.hpp"

namespace diffctl::sde {

// An impulse u applied at generation time t. u has the state's shape, or the shape
// of one sample (no batch dimension) to apply the same jump to every sample.
struct Impulse {
  double t = 0.0;
  torch::Tensor u;
};

// One step of the integration, as an observer sees it: the state before and after
// the impulse at t (the same tensor when there was none) and the solver's step
// from the latter to t_next.
struct StepRecord {
  std::size_t k = 0;
  double t = 0.0, t_next = 0.0;
  const torch::Tensor& before_impulse;
  const torch::Tensor& state;
  const Transition& step;
};

struct IntegrateOptions {
  // Generation times at which to record the state (each must be a grid point).
  std::vector<double> record_times;
  // Also record Tweedie's estimate E[x0 | x(t)] at those times.
  bool record_x0 = true;
  // Build the autograd graph through the steps (and the model and impulses).
  bool with_grad = false;
  // With with_grad: keep only the last K steps in the graph and treat the state
  // before them as a constant, so memory stays bounded on long grids.
  std::optional<std::size_t> backprop_steps;
  // Source of the steps' noise; the device's default generator when absent.
  c10::optional<at::Generator> generator;
  // The state's rows as part of a larger batch (one process's shard, in a run of
  // several): each step draws the noise of all noise_batch rows and keeps rows
  // [noise_first, noise_first + B), so the processes together draw what one
  // process integrating the whole batch draws. 0: the state is the whole batch.
  int64_t noise_batch = 0;
  int64_t noise_first = 0;
  // A drift added to the solver's step from grid point k (time t, state x after any
  // impulse): a defined v (x's shape or one sample's) shifts the step's mean by
  // v (t_next - t), a control held over the step. Steps without noise take none
  // (there it would cost infinite KL).
  std::function<torch::Tensor(std::size_t, double, const torch::Tensor&)> added_drift{};
  // Called at every step, under the step's gradient mode (e.g. to add up a path KL
  // against reference models).
  std::function<void(const StepRecord&)> on_step{};
};

// Sets `options` to draw each step's noise for a whole batch of `batch` rows of
// which the state holds `group`'s shard (nothing to set for one process).
inline void draw_noise_of_batch(IntegrateOptions& options, int64_t batch, const distributed::Group& group) {
  if (group.alone()) return;
  options.noise_batch = batch;
  options.noise_first = group.shard(batch).begin;
}

struct Trajectory {
  std::vector<double> times;                // the recorded generation times
  std::vector<torch::Tensor> states;        // x(t+) there: after any impulse at t
  std::vector<torch::Tensor> x0_estimates;  // E[x0 | x(t+)] there, when asked
  torch::Tensor final_state;                // x at the grid's last time
};

// Thrown when a trajectory's state becomes NaN or infinite (a drift or a control
// that blew up).
class NonFiniteState : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

inline bool all_finite(const torch::Tensor& x) { return torch::isfinite(x).all().item<bool>(); }

// what: "impulse" (a jump of the state) or "held drift" (added to a step's drift).
inline void check_impulse(const torch::Tensor& u, const torch::Tensor& x, double t, const char* what = "impulse") {
  require(u.defined(), what, " at t = ", t, ": u is undefined");
  require(u.device() == x.device(), what, " at t = ", t, ": u is on ", u.device(), " but the state is on ", x.device());
  const bool whole = u.sizes() == x.sizes();
  const bool per_sample = x.dim() >= 1 && u.sizes() == x.sizes().slice(1);
  require(whole || per_sample, what, " at t = ", t, ": u has shape ", u.sizes(), ", expected the state's ", x.sizes(),
          " or one sample's ", x.sizes().slice(1));
}

// A step's standard normal noise for the state x (see IntegrateOptions::noise_batch).
inline torch::Tensor step_noise(const torch::Tensor& x, const IntegrateOptions& options) {
  if (options.noise_batch == 0) return standard_normal(x.sizes(), options.generator, x.options());
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] = options.noise_batch;
  return standard_normal(shape, options.generator, x.options()).narrow(0, options.noise_first, x.size(0));
}

inline void check_inputs(const TimeGrid& grid, double horizon, const torch::Tensor& x, const torch::Tensor& z,
                         const IntegrateOptions& options) {
  require(std::abs(grid.horizon() - horizon) <= 1e-12 * horizon, "integrate: the grid's T = ", grid.horizon(),
          " differs from the schedule's T = ", horizon);
  require(x.defined() && x.dim() >= 1,
          "integrate: the initial state must be a batch-first "
          "tensor, found ",
          x.defined() ? x.sizes() : torch::IntArrayRef{});
  require(x.is_floating_point(), "integrate: the initial state must be floating point, found ", x.scalar_type());
  require(all_finite(x), "integrate: the initial state holds NaN or Inf");
  require(
      options.noise_batch == 0 || (options.noise_first >= 0 && options.noise_first + x.size(0) <= options.noise_batch),
      "integrate: rows [", options.noise_first, ", ", options.noise_first + x.size(0), ") are not in a batch of ",
      options.noise_batch);
  if (!z.defined()) return;
  require(z.dim() == 1 && z.size(0) == x.size(0), "integrate: conditions z must have shape [", x.size(0),
          "] (one class index per sample), found ", z.sizes());
  require(z.scalar_type() == torch::kLong, "integrate: conditions z must be int64, found ", z.scalar_type());
  require(z.device() == x.device(), "integrate: conditions z are on ", z.device(), " but the state is on ", x.device());
}

// The integration loop, on inputs check_inputs has accepted.
template <class Schedule, class Model, class Solver, class Impulses>
Trajectory run_checked(const Schedule& schedule, const Model& model, const Solver& solver, const TimeGrid& grid,
                       const torch::Tensor& x_init, const torch::Tensor& z, const Impulses& impulses,
                       const IntegrateOptions& options) {
  const std::size_t steps = grid.steps();
  std::vector<bool> record(grid.size(), false);
  for (const double t : options.record_times) {
    const auto k = grid.index_of(t);
    require(k.has_value(), "integrate: record time ", t, " is not a point of the time grid");
    record[*k] = true;
  }
  const std::size_t first_tracked =
      options.with_grad && options.backprop_steps ? steps - std::min(*options.backprop_steps, steps) : 0;

  Trajectory trajectory;
  const auto keep = [&](double t, const torch::Tensor& state, const auto& x0_estimate) {
    trajectory.times.push_back(t);
    trajectory.states.push_back(state);
    if (options.record_x0) trajectory.x0_estimates.push_back(x0_estimate());
  };
  torch::Tensor x = x_init;
  for (std::size_t k = 0; k <= steps; ++k) {
    const double t = grid[k];
    const double s = forward_time(schedule, t);
    const torch::AutoGradMode grad_mode(options.with_grad && k >= first_tracked);
    if (k == first_tracked && k > 0) x = x.detach();

    const torch::Tensor before_impulse = x;
    if (torch::Tensor u = impulses(k, t, x); u.defined()) {
      detail::check_impulse(u, x, t);
      x = x + u;
    }
    if (k == steps) {
      // At a noise-free end (sigma = 0) the state is its own estimate, and a score
      // network need not be defined there.
      if (record[k])
        keep(t, x, [&] {
          return schedule.sigma(s) == 0.0 ? x / schedule.alpha(s) : x0_from_score(schedule, s, x, model.score(t, x, z));
        });
      break;
    }

    Transition step = solver.transition(schedule, model, t, grid[k + 1], x, z);
    require(step.mean.sizes() == x.sizes(), "integrate: the step from t = ", t, " returned shape ", step.mean.sizes(),
            " for a state of shape ", x.sizes());
    if (options.added_drift && step.noise_std > 0.0) {
      if (torch::Tensor v = options.added_drift(k, t, x); v.defined()) {
        detail::check_impulse(v, x, t, "held drift");
        step.mean = step.mean + v * (grid[k + 1] - t);
      }
    }
    if (record[k]) keep(t, x, [&] { return x0_from_score(schedule, s, x, step.score); });
    if (options.on_step) options.on_step(StepRecord{k, t, grid[k + 1], before_impulse, x, step});
    x = step.noise_std > 0.0 ? step.mean + step.noise_std * detail::step_noise(x, options) : std::move(step.mean);
  }

  // One check at the end rather than a device sync per step; the recorded states
  // narrow down where the state broke.
  if (!detail::all_finite(x)) {
    double last_good = grid.front();
    for (std::size_t r = 0; r < trajectory.states.size(); ++r) {
      if (!detail::all_finite(trajectory.states[r])) break;
      last_good = trajectory.times[r];
    }
    throw NonFiniteState(diffctl::detail::concat("integrate: the state became NaN or Inf after t = ", last_good,
                                                 " (before t = ", grid.back(),
                                                 "); record more times to narrow it down, or use more steps"));
  }
  trajectory.final_state = std::move(x);
  return trajectory;
}
}  // namespace detail

// Integrates from x_init at grid.front() to grid.back(), asking `impulses` for the
// jump at each grid point. See IntegrateOptions for recording and gradients.
template <NoiseSchedule Schedule, DriftModel Model, class Solver, ImpulseSource Impulses>
  requires SdeSolver<Solver, Schedule, Model> Trajectory integrate(const Schedule& schedule, const Model& model,
                                                                   const Solver& solver, const TimeGrid& grid,
                                                                   const torch::Tensor& x_init, const torch::Tensor& z,
                                                                   const Impulses& impulses,
                                                                   const IntegrateOptions& options = {}) {
    detail::check_inputs(grid, schedule.horizon(), x_init, z, options);
    return detail::run_checked(schedule, model, solver, grid, x_init, z, impulses, options);
  }

// Fixed impulses {(t_k, u_k)}, checked before any step is taken: each t_k must be a
// grid point and each u_k must match the state's shape and device. Impulses at the
// same time add up, as their Dirac terms do.
template <NoiseSchedule Schedule, DriftModel Model, class Solver>
  requires SdeSolver<Solver, Schedule, Model> Trajectory integrate(const Schedule& schedule, const Model& model,
                                                                   const Solver& solver, const TimeGrid& grid,
                                                                   const torch::Tensor& x_init, const torch::Tensor& z,
                                                                   const std::vector<Impulse>& impulses,
                                                                   const IntegrateOptions& options = {}) {
    detail::check_inputs(grid, schedule.horizon(), x_init, z, options);
    std::vector<torch::Tensor> jump_at(grid.size());
    for (const Impulse& impulse : impulses) {
      const auto k = grid.index_of(impulse.t);
      require(k.has_value(), "integrate: impulse time ", impulse.t, " is not a point of the time grid");
      detail::check_impulse(impulse.u, x_init, impulse.t);
      jump_at[*k] = jump_at[*k].defined() ? jump_at[*k] + impulse.u : impulse.u;
    }
    const auto source = [&jump_at](std::size_t k, double, const torch::Tensor&) { return jump_at[k]; };
    return detail::run_checked(schedule, model, solver, grid, x_init, z, source, options);
  }

// Integration without control.
template <NoiseSchedule Schedule, DriftModel Model, class Solver>
  requires SdeSolver<Solver, Schedule, Model> Trajectory integrate(const Schedule& schedule, const Model& model,
                                                                   const Solver& solver, const TimeGrid& grid,
                                                                   const torch::Tensor& x_init,
                                                                   const torch::Tensor& z = {},
                                                                   const IntegrateOptions& options = {}) {
    return integrate(schedule, model, solver, grid, x_init, z, std::vector<Impulse>{}, options);
  }

}  // namespace diffctl::sde
