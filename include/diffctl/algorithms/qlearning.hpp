#pragma once
// Reward-directed score learning by continuous-time q-learning (Gao, Zha & Zhou
// 2024, Algorithms 1 and 2).
//
// Generation time t in [0, T], forward time s = T - t. The action a_t stands in
// for the score in the controlled reverse process
//
//   dY = [ -f(s) Y + g(s)^2 a ] dt + g(s) dB      (Euler-Maruyama simulator), or
//   dY = [ -f(s) Y + g(s)^2 a / 2 ] dt            (probability-flow simulators),
//
// with f, g the schedule's forward drift coefficient and diffusion (the paper's
// OU: f = -1, g^2 = 2). The objective E[ -int g^2 |a - score|^2 dt + beta h(Y_T) ]
// with entropy temperature theta has a Gaussian optimal policy
// N(mu(t, y), theta / (2 g^2) I). mu_psi and the value J_phi are MLPs; the little
// q-function is q_psi(t, y, a) = theta log pi_psi(a | t, y). The true score being
// unknown, the running reward r_k = -g^2 |a_k - score_k|^2 uses a score estimate
// (the ratio estimator over the data). Both networks minimise the martingale loss
//
//   mean_batch sum_k [ J(t_{k+1}, Y_{k+1}) - J(t_k, Y_k) + (r_k - q(t_k, Y_k, a_k)) dt ]^2,
//
// with J(T, y) := beta h(y), over trajectories simulated with the current policy.
//
// The episode is written once (QLearning::train_episode) over what a backend
// gives it: the simulation's running and terminal rewards, the terms J(t_k, Y_k)
// and log pi(a_k | t_k, Y_k) per step and sample, and an update from weights on
// those terms (the loss's gradient with respect to each). TorchBackend runs them
// with LibTorch and autograd, EigenBackend (qlearning_eigen.hpp) with Eigen and
// written-out gradients.
//
// Data parallel (TorchBackend, QLearningOptions::group): every rank draws the
// episode's noise whole, simulates its shard of the trajectories and sums the
// gradients of its share of the batch mean with the others' before the step.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/values.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/models/module_copy.hpp"
#include "diffctl/models/time_state_mlp.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/time_grid.hpp"
#include "diffctl/sde/transition.hpp"

namespace diffctl::algorithms {

// The reward of plain score matching (beta = 0 makes it irrelevant).
struct NoReward {
  torch::Tensor operator()(const torch::Tensor& y, const torch::Tensor&) const {
    return torch::zeros({y.size(0)}, y.options());
  }
};

struct QLearningOptions {
  double temperature = 0.1;            // theta: the policy's spread is theta / (2 g^2)
  double beta = 0.0;                   // weight of the terminal reward (0: score matching)
  double dt = 0.25;                    // generation-time step; T / dt steps per trajectory
  int64_t batch = 300;                 // trajectories per episode
  double learning_rate = 1e-3;         // Adam, both networks
  int64_t hidden = 64;                 // width of both MLPs
  torch::Device device = torch::kCPU;  // where the networks and trajectories live
  torch::Dtype dtype = torch::kFloat;  // their precision (an Eigen backend's must match its scalar)
  distributed::Group group{};          // the processes that share each episode's batch (TorchBackend)
};

struct EpisodeStats {
  double loss = 0.0;             // the martingale loss of the episode's batch
  double terminal_reward = 0.0;  // mean h(Y_T) of the batch
  double score_gap = 0.0;        // mean g^2 |mu - score estimate|^2 dt summed over steps
  // By name, for progress lines and logs (callbacks.hpp).
  std::vector<std::pair<std::string, double>> fields() const {
    return {{"loss", loss}, {"reward", terminal_reward}, {"score_gap", score_gap}};
  }
};

namespace detail {
// The policy's action as the score a solver steps with.
struct GivenScore {
  torch::Tensor value;
  torch::Tensor score(double, const torch::Tensor&, const torch::Tensor&) const { return value; }
};
}  // namespace detail

// One simulator step with the action as the score, Y' = keep Y + push a + noise_std N(0, I).
struct AffineStep {
  double keep = 0.0, push = 0.0, noise_std = 0.0;
};

// The step of `simulator` from t to t_next, read off the simulator itself by
// evaluating it at probe points: Euler-Maruyama, the probability-flow Euler step,
// Heun and DDIM/DDPM without x0 clipping all step affinely in (Y, a), coordinate
// by coordinate. The Eigen backends and the batched passes of DDPO and DPOK run
// these coefficients, so the solver stays the one definition of a step. A step
// that is not affine (x0 clipping, a state-dependent noise) gives none.
template <class Schedule, class Simulator>
std::optional<AffineStep> try_affine_step(const Schedule& schedule, const Simulator& simulator, double t,
                                          double t_next) {
  const auto step = [&](double y, double a) {
    const auto opts = torch::TensorOptions(torch::kDouble);
    const Transition transition = simulator.transition(schedule, detail::GivenScore{torch::full({1, 1}, a, opts)}, t,
                                                       t_next, torch::full({1, 1}, y, opts), {});
    return std::pair{transition.mean.template item<double>(), transition.noise_std};
  };
  const auto [origin, noise] = step(0.0, 0.0);
  const AffineStep affine{step(1.0, 0.0).first - origin, step(0.0, 1.0).first - origin, noise};
  const auto [probe, probe_noise] = step(2.0, -3.0);
  const double expected = 2.0 * affine.keep - 3.0 * affine.push;
  const double scale = 1.0 + std::abs(affine.keep) + std::abs(affine.push);
  if (std::abs(origin) <= 1e-12 * scale && std::abs(probe - expected) <= 1e-9 * scale && probe_noise == noise)
    return affine;
  return std::nullopt;
}

// The same, refusing a step that is not affine rather than running it wrongly.
template <class Schedule, class Simulator>
AffineStep affine_step(const Schedule& schedule, const Simulator& simulator, double t, double t_next) {
  const auto affine = try_affine_step(schedule, simulator, t, t_next);
  require(affine.has_value(), "the simulator ", Simulator::name,
          " does not step affinely in the state and the action at t = ", t,
          " (clipping or state-dependent noise?); the Eigen backend needs an affine step: use TorchBackend");
  return *affine;
}

// The policy mean mu_psi(t, y, z) as a DriftModel: the learned score. It shares
// the module it is given; snapshot() is an independent copy.
class PolicyScore {
 public:
  explicit PolicyScore(models::TimeStateMlp policy) : policy_(std::move(policy)) {}
  torch::Tensor score(double t, const torch::Tensor& y, const torch::Tensor& z) const {
    return score_at(torch::full({y.size(0)}, t, y.options()), y, z);
  }
  // One time per sample, t [B]: every step of a chain in one pass.
  torch::Tensor score_at(const torch::Tensor& t, const torch::Tensor& y, const torch::Tensor& z) const {
    return policy_.ptr()->forward(t, y, z);
  }
  const models::TimeStateMlp& network() const { return policy_; }
  PolicyScore snapshot() const { return PolicyScore(models::clone_module(policy_)); }

 private:
  models::TimeStateMlp policy_;
};

// n samples [n, d] of the model whose score is the policy mean, integrated by
// `solver` over `grid` from the schedule's prior; z [n] conditions or undefined.
template <NoiseSchedule Schedule, class Solver>
torch::Tensor sample_policy(const Schedule& schedule, const models::TimeStateMlp& policy, const sde::TimeGrid& grid,
                            int64_t n, const torch::Tensor& z, at::Generator& generator, const Solver& solver) {
  torch::NoGradGuard no_grad;
  sde::IntegrateOptions options;
  options.generator = generator;
  const torch::Tensor weight = policy->parameters().front();
  const torch::Tensor prior = sde::sample_prior(schedule, {n, policy->options().state_dim}, generator,
                                                torch::TensorOptions(weight.dtype()).device(weight.device()));
  return sde::integrate(schedule, PolicyScore(policy), solver, grid, prior, z, options).final_state;
}

// The parameters of several networks, for one optimizer.
inline std::vector<torch::Tensor> parameters_of(std::initializer_list<models::TimeStateMlp> networks) {
  std::vector<torch::Tensor> all;
  for (const auto& network : networks)
    for (const auto& p : network->parameters()) all.push_back(p);
  return all;
}

inline void check_learning_rate(double learning_rate) {
  require(learning_rate > 0.0 && std::isfinite(learning_rate), "learning rate must be > 0, found ", learning_rate);
}

// Sets the learning rate of every parameter group of `optimizer` (a step of a
// learning-rate schedule).
inline void set_learning_rate(torch::optim::Adam& optimizer, double learning_rate) {
  check_learning_rate(learning_rate);
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamOptions&>(group.options()).lr(learning_rate);
}

// The grid of T / dt equal steps, refusing a dt that does not divide T.
template <NoiseSchedule Schedule>
sde::TimeGrid grid_with_step(const Schedule& schedule, double dt) {
  const double horizon = schedule.horizon();
  require(dt > 0.0 && std::isfinite(dt), "dt must be > 0, found ", dt);
  const double steps = std::round(horizon / dt);
  require(steps >= 1.0 && std::abs(steps * dt - horizon) <= 1e-9 * horizon, "dt = ", dt,
          " must divide the horizon T = ", horizon);
  return sde::TimeGrid::uniform(horizon, static_cast<std::size_t>(steps));
}

// The randomness of one episode, drawn by QLearning from the caller's generator
// in one fixed order (classes, prior, then all the steps' normals in one call), so
// that every backend consumes the same numbers for the same seed.
struct EpisodeNoise {
  torch::Tensor z;      // [B] int64 classes, or undefined (unconditional)
  torch::Tensor prior;  // [B, d]: Y_0
  torch::Tensor steps;  // [N, 2, B, d]: per step, the action's and the simulator's standard normals
};

// An episode's fixed parts besides the networks, as the backends see them.
template <class Schedule, class ScoreEstimate, class Reward, class Simulator>
struct EpisodeProblem {
  const Schedule& schedule;
  const ScoreEstimate& score_estimate;
  const Reward& reward;
  const Simulator& simulator;
  const sde::TimeGrid& grid;
  const QLearningOptions& options;

  // g(s)^2 at generation time t.
  double squared_diffusion(double t) const {
    const double g = schedule.diffusion(sde::forward_time(schedule, t));
    return g * g;
  }
  // theta / (2 g^2) at the start of step k: the variance of each action coordinate.
  double policy_variance(std::size_t k) const { return options.temperature / (2.0 * squared_diffusion(grid[k])); }
};

// The networks' shapes: the policy mean (t, y, z) -> R^d and the value -> R.
inline std::pair<models::TimeStateMlpOptions, models::TimeStateMlpOptions> network_shapes(int64_t state_dim,
                                                                                          int64_t classes,
                                                                                          int64_t hidden) {
  return {{.state_dim = state_dim, .out_dim = state_dim, .classes = classes, .hidden = hidden},
          {.state_dim = state_dim, .out_dim = 1, .classes = classes, .hidden = hidden}};
}

// What a backend's simulation of an episode gives the loss: per (step, sample)
// the running reward r_k = -g^2 |a_k - score estimate|^2 [N, B], the terminal
// reward h(Y_N) [B], and this process's share of the mean score gap.
template <class Values, class Total>
struct EpisodeRollout {
  Values running_rewards;
  Values terminal_rewards;
  Total score_gap;
};

// The terms of the martingale loss that depend on the networks, per (step,
// sample) [N, B]: J(t_k, Y_k) and log pi(a_k | t_k, Y_k).
template <class Values>
struct EpisodeTerms {
  Values state_values;
  Values log_policy;
};

// LibTorch runs the networks, on any device, with autograd and torch::optim::Adam:
// the default, for GPUs and large networks. Its per-(step, sample) values are
// tensors [N, B] of this process's B trajectories.
class TorchBackend {
 public:
  using Network = models::TimeStateMlp;
  using Values = torch::Tensor;  // [N, B]
  using Total = torch::Tensor;   // a scalar on the networks' device

  TorchBackend(int64_t state_dim, int64_t classes, const QLearningOptions& options)
      : options_(options),
        policy_(network_shapes(state_dim, classes, options.hidden).first),
        value_(network_shapes(state_dim, classes, options.hidden).second),
        optimizer_(parameters_of({policy_, value_}), torch::optim::AdamOptions(options.learning_rate)) {
    require(options.group.alone() || options.batch >= options.group.size(), "q-learning: a batch of ", options.batch,
            " trajectories cannot be split over ", options.group.size(), " processes");
    for (auto* network : {&policy_, &value_}) {
      (*network)->to(options.device, options.dtype);
      options.group.broadcast_module(**network);  // every rank starts from rank 0's networks
    }
  }

  // This process's trajectories (rows [first, first + B) of the episode's) under
  // the stochastic policy a_k ~ N(mu(t_k, Y_k), theta / (2 g^2) I), the
  // simulator stepping with a_k as the score.
  template <class Schedule, class ScoreEstimate, class Reward, class Simulator>
  EpisodeRollout<Values, Total> simulate(const EpisodeProblem<Schedule, ScoreEstimate, Reward, Simulator>& problem,
                                         const EpisodeNoise& noise) {
    torch::NoGradGuard no_grad;
    const distributed::Group& group = options_.group;
    const sde::TimeGrid& grid = problem.grid;
    const distributed::Shard shard = group.shard(options_.batch);
    const int64_t batch = shard.size();
    const auto opts = tensor_options();
    z_ = group.local_rows(noise.z);
    const torch::Tensor step_noises = group.alone() ? noise.steps : noise.steps.narrow(2, shard.begin, batch);
    std::vector<torch::Tensor> states{group.local_rows(noise.prior)}, actions, rewards;
    std::vector<double> times, spreads;
    torch::Tensor score_gap = torch::zeros({}, opts);
    for (std::size_t k = 0; k < grid.steps(); ++k) {
      const double t = grid[k], dt = grid[k + 1] - t;
      const double g2 = problem.squared_diffusion(t);
      const torch::Tensor& y = states.back();
      const torch::Tensor step_noise = step_noises[int64_t(k)];
      const torch::Tensor mu = policy_->forward(torch::full({batch}, t, opts), y, z_);
      spreads.push_back(std::sqrt(problem.policy_variance(k)));
      const torch::Tensor action = mu + spreads.back() * step_noise[0];
      const torch::Tensor estimate = problem.score_estimate.score(t, y, z_);
      rewards.push_back(-g2 * (action - estimate).square().sum(1));
      score_gap += g2 * dt * (mu - estimate).square().sum(1).sum() / double(options_.batch);
      const Transition step =
          problem.simulator.transition(problem.schedule, detail::GivenScore{action}, t, grid[k + 1], y, z_);
      states.push_back(step.noise_std > 0.0 ? step.mean + step.noise_std * step_noise[1] : step.mean);
      actions.push_back(action);
      times.push_back(t);
    }
    const torch::Tensor terminal = problem.reward(states.back(), z_).to(opts);
    require(terminal.dim() == 1 && terminal.size(0) == batch, "q-learning: the reward must give [", batch,
            "] values, found ", terminal.sizes());
    states.pop_back();  // the terms need the states before each step
    const int64_t steps = int64_t(grid.steps());
    before_ = torch::stack(states).flatten(0, 1);  // [N B, d]
    before_times_ = torch::tensor(times, opts).repeat_interleave(batch);
    actions_ = torch::stack(actions);  // [N, B, d]
    policy_spreads_ = torch::tensor(spreads, opts).view({steps, 1});
    return {torch::stack(rewards), terminal, score_gap};
  }

  // J and log pi over the last simulation, recorded for update().
  EpisodeTerms<Values> terms() {
    const int64_t steps = actions_.size(0), batch = actions_.size(1);
    const torch::Tensor zs = z_.defined() ? z_.repeat({steps}) : torch::Tensor{};
    const torch::Tensor mu = policy_->forward(before_times_, before_, zs).view(actions_.sizes());
    tracked_ = {value_->forward(before_times_, before_, zs).view({steps, batch}),
                gaussian_step_log_prob((actions_ - mu).square().sum(2), policy_spreads_, double(actions_.size(2)))};
    return {tracked_.state_values.detach(), tracked_.log_policy.detach()};
  }

  // An Adam step on the gradient of sum(v J) + sum(w log pi) over the recorded
  // terms, summed over processes.
  void update(const Values& value_weights, const Values& log_policy_weights) {
    require(tracked_.state_values.defined(), "q-learning: update() needs terms() of the episode before it");
    optimizer_.zero_grad();
    ((value_weights * tracked_.state_values).sum() + (log_policy_weights * tracked_.log_policy).sum()).backward();
    tracked_ = {};
    options_.group.all_reduce_gradients(parameters_of({policy_, value_}));
    optimizer_.step();
  }

  // The totals summed over processes, as numbers.
  std::vector<double> totals(const std::vector<Total>& parts) const {
    const torch::Tensor sums = options_.group.all_reduce_scalars(parts).cpu().to(torch::kDouble);
    return std::vector<double>(sums.data_ptr<double>(), sums.data_ptr<double>() + sums.numel());
  }

  // The networks as LibTorch modules (these very ones): for sampling and saving.
  std::pair<models::TimeStateMlp, models::TimeStateMlp> networks() const { return {policy_, value_}; }
  // Takes the weights of modules of the same shape.
  void assign(const models::TimeStateMlp& policy, const models::TimeStateMlp& value) {
    models::copy_weights(*policy, *policy_);
    models::copy_weights(*value, *value_);
  }

  void set_learning_rate(double learning_rate) { algorithms::set_learning_rate(optimizer_, learning_rate); }

  models::TimeStateMlp& policy() { return policy_; }
  models::TimeStateMlp& value() { return value_; }

 private:
  torch::TensorOptions tensor_options() const { return torch::TensorOptions(options_.dtype).device(options_.device); }

  QLearningOptions options_;
  models::TimeStateMlp policy_;
  models::TimeStateMlp value_;
  torch::optim::Adam optimizer_;
  // The last simulation: conditions z [B], (t_k, Y_k) [N B] and [N B, d],
  // actions [N, B, d], the policy's standard deviation per step [N, 1].
  torch::Tensor z_, before_times_, before_, actions_, policy_spreads_;
  EpisodeTerms<Values> tracked_;
};

template <NoiseSchedule Schedule, DriftModel ScoreEstimate, RewardFunction Reward = NoReward,
          class Simulator = sde::EulerMaruyama, class Backend = TorchBackend>
  requires SdeSolver<Simulator, Schedule, detail::GivenScore> &&
      QLearningBackend<Backend, EpisodeProblem<Schedule, ScoreEstimate, Reward, Simulator>>
class QLearning {
 public:
  using Problem = EpisodeProblem<Schedule, ScoreEstimate, Reward, Simulator>;

  // state_dim: d; classes: number of conditions (0: unconditional).
  QLearning(Schedule schedule, ScoreEstimate score_estimate, int64_t state_dim, int64_t classes = 0,
            QLearningOptions options = {}, Reward reward = Reward(), Simulator simulator = Simulator())
      : schedule_(std::move(schedule)),
        score_estimate_(std::move(score_estimate)),
        reward_(std::move(reward)),
        simulator_(std::move(simulator)),
        options_(options),
        state_dim_(state_dim),
        classes_(classes),
        grid_(grid_with_step(schedule_, options.dt)),
        step_lengths_(grid_.step_lengths()),
        backend_(state_dim, classes, options_) {
    require(options.temperature > 0.0 && std::isfinite(options.temperature),
            "q-learning: temperature must be > 0, found ", options.temperature);
    require(options.batch >= 1, "q-learning: batch must be >= 1, found ", options.batch);
    require(options.learning_rate > 0.0, "q-learning: learning rate must be > 0, found ", options.learning_rate);
    require(std::isfinite(options.beta), "q-learning: beta must be finite, found ", options.beta);
  }

  // One episode: simulate a batch with the current stochastic policy, then one
  // Adam step on the martingale loss.
  EpisodeStats train_episode(at::Generator& generator) {
    namespace values = detail::values;
    using Values = typename Backend::Values;
    const auto rollout = backend_.simulate(Problem{schedule_, score_estimate_, reward_, simulator_, grid_, options_},
                                           draw_noise(generator));
    const EpisodeTerms<Values> terms = backend_.terms();
    const double whole = double(options_.batch);
    // J(t_{k+1}, Y_{k+1}) - J(t_k, Y_k) + (r_k - q_k) dt_k per step and sample, with
    // q_k = theta log pi(a_k | t_k, Y_k) and J(T, y) = beta h(y).
    const Values increments =
        values::next_steps(terms.state_values, rollout.terminal_rewards * options_.beta) - terms.state_values +
        values::per_step(rollout.running_rewards - terms.log_policy * options_.temperature, step_lengths_);
    // This process's share of the batch mean; summed over processes, the loss.
    const auto loss = values::sum(increments.square()) / whole;
    // Its gradient: with w_k = d loss / d increment_k = 2 increment_k / B, J(t_k, Y_k)
    // gets w_{k-1} - w_k (it ends step k - 1 and starts step k), log pi_k gets
    // -theta dt_k w_k.
    const Values weights = increments * (2.0 / whole);
    backend_.update(values::previous_steps(weights) - weights,
                    values::per_step(weights, step_lengths_) * -options_.temperature);
    const std::vector<double> totals =
        backend_.totals({loss, values::sum(rollout.terminal_rewards) / whole, rollout.score_gap});
    return {totals[0], totals[1], totals[2]};
  }

  // The learning rate of both networks from the next episode on (a schedule's step).
  void set_learning_rate(double learning_rate) { backend_.set_learning_rate(learning_rate); }

  // The episode's randomness, in the order train_episode draws it.
  EpisodeNoise draw_noise(at::Generator& generator) const {
    const int64_t batch = options_.batch;
    const auto opts = torch::TensorOptions(options_.dtype).device(options_.device);
    EpisodeNoise noise;
    if (classes_ > 0) noise.z = torch::randint(classes_, {batch}, generator, torch::kLong).to(options_.device);
    noise.prior = sde::sample_prior(schedule_, {batch, state_dim_}, generator, opts);
    noise.steps = standard_normal({int64_t(grid_.steps()), 2, batch, state_dim_}, generator, opts);
    return noise;
  }

  // n samples from the learned model: the policy mean as the score, integrated by
  // `solver` over the training grid from the prior.
  template <class Solver = sde::EulerMaruyama>
  torch::Tensor sample(int64_t n, const torch::Tensor& z, at::Generator& generator,
                       const Solver& solver = Solver()) const {
    return sample_policy(schedule_, backend_.networks().first, grid_, n, z, generator, solver);
  }

  // Saves both networks, with the shape they were built with, whole or not at all.
  // Every backend writes the same format, so one backend's checkpoint loads into
  // another. In a run of several processes rank 0 writes, the others wait for it.
  void save(const std::filesystem::path& path) const {
    if (!options_.group.is_main()) return options_.group.barrier();
    const auto [policy_network, value_network] = backend_.networks();
    torch::serialize::OutputArchive archive, policy, value;
    policy_network->save(policy);
    value_network->save(value);
    archive.write("policy", policy);
    archive.write("value", value);
    archive.write("shape", shape());
    io::write_archive(path, archive);
    options_.group.barrier();
  }

  // Loads networks saved by save(); the checkpoint's shape must match this learner's.
  void load(const std::filesystem::path& path) {
    const std::string name = "checkpoint " + path.string();
    torch::serialize::InputArchive archive = io::read_archive(path, options_.device);
    torch::Tensor saved_shape;
    require(archive.try_read("shape", saved_shape), name, ": not a q-learning checkpoint (no shape)");
    const auto text = [](const torch::Tensor& v) {
      const torch::Tensor c = v.cpu().to(torch::kLong).flatten();
      std::string out = "(";
      for (int64_t i = 0; i < c.numel(); ++i) out += (i ? ", " : "") + std::to_string(c[i].item<int64_t>());
      return out + ")";
    };
    require(torch::equal(saved_shape.cpu(), shape()), name,
            ": holds networks for (state_dim, classes, hidden) = ", text(saved_shape), " but this learner has ",
            text(shape()));
    const auto [policy_shape, value_shape] = network_shapes(state_dim_, classes_, options_.hidden);
    models::TimeStateMlp policy_network(policy_shape), value_network(value_shape);
    torch::serialize::InputArchive policy, value;
    archive.read("policy", policy);
    archive.read("value", value);
    policy_network->load(policy);
    value_network->load(value);
    backend_.assign(policy_network, value_network);
  }

  // The backend's networks: TimeStateMlp modules for TorchBackend.
  auto& policy() { return backend_.policy(); }
  auto& value() { return backend_.value(); }
  Backend& backend() { return backend_; }
  const sde::TimeGrid& grid() const { return grid_; }
  const QLearningOptions& options() const { return options_; }

 private:
  torch::Tensor shape() const { return torch::tensor({state_dim_, classes_, options_.hidden}, torch::kLong); }

  Schedule schedule_;
  ScoreEstimate score_estimate_;
  Reward reward_;
  Simulator simulator_;
  QLearningOptions options_;
  int64_t state_dim_;
  int64_t classes_;
  sde::TimeGrid grid_;
  std::vector<double> step_lengths_;  // dt_k
  Backend backend_;
};

}  // namespace diffctl::algorithms
