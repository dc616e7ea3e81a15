#pragma once
// A q-learning backend for the low-dimensional problems, written with Eigen: at a
// batch of hundreds and networks 64 wide, LibTorch spends most of an episode in
// per-operation overhead (dispatch, autograd bookkeeping, allocation), not in
// arithmetic. This backend runs what QLearning's episode (written once, in
// qlearning.hpp) asks of a backend, the simulation, the terms J and log pi of the
// martingale loss and the update from weights on them, as the same function of
// the same noise as TorchBackend, with
//
//   - both networks as EigenMlp: forward, backward and Adam by hand, on buffers
//     allocated on the first episode and reused after it;
//   - the batch as the matrix's column dimension, so each layer of all N steps is
//     one product through Eigen's blocked GEMM;
//   - both networks' activations kept from the simulation (the policy mean and
//     the value there are the ones the loss needs), so each runs forward once
//     per episode, and the gradients written out (d log pi / d mu = (a - mu) / s^2);
//   - RatioScore fused into one sweep per sample (EigenRatioScore).
//
//   QLearning<Schedule, RatioScore<Schedule>, Reward, sde::EulerMaruyama,
//             EigenBackend<float>> learner(...);
//
// CPU only. Any simulator whose step is affine in the state and the action runs
// natively (Euler-Maruyama, the paper's; probability-flow Euler; DDIM; Heun):
// its coefficients are read off the simulator once per grid. A score estimate
// other than RatioScore and every terminal reward are LibTorch callables: they
// get the states as a tensor that views this backend's buffer. The episode's
// randomness still comes from the LibTorch generator, drawn by QLearning in one
// call, so both backends see identical noise for one seed.

#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <concepts>
#include <cstdint>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Dense>
#include <torch/torch.h>

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/algorithms/values.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/eigen_mlp.hpp"
#include "diffctl/models/eigen_ratio_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/transition.hpp"

namespace diffctl::algorithms {

namespace detail {
template <class Estimate>
struct IsRatioScore : std::false_type {};
template <class Schedule>
struct IsRatioScore<models::RatioScore<Schedule>> : std::true_type {};
}  // namespace detail

template <class Scalar = float>
  requires std::same_as<Scalar, float> || std::same_as<Scalar, double>
class EigenBackend {
 public:
  using Network = models::EigenMlp<Scalar>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;
  using ConstMap = Eigen::Map<const Matrix>;
  using Values = detail::values::Array;  // [B, N]
  using Total = double;

  // Weights initialised as LibTorch initialises a TimeStateMlp (from its global
  // generator), so a seed gives the same start under either backend.
  EigenBackend(int64_t state_dim, int64_t classes, const QLearningOptions& options)
      : options_(options),
        policy_(Network::from(models::TimeStateMlp(network_shapes(state_dim, classes, options.hidden).first))),
        value_(Network::from(models::TimeStateMlp(network_shapes(state_dim, classes, options.hidden).second))) {
    require(options.device.is_cpu(), "EigenBackend: runs on the CPU only, found device ", options.device);
    require(options.group.alone(), "EigenBackend: runs in one process; a run of ", options.group.size(),
            " processes needs the LibTorch backend");
    require(options.dtype == torch::CppTypeToScalarType<Scalar>::value, "EigenBackend<",
            torch::CppTypeToScalarType<Scalar>::value, ">: options.dtype must be ",
            torch::CppTypeToScalarType<Scalar>::value, ", found ", options.dtype);
    adam_.learning_rate = options.learning_rate;
  }

  // The episode's trajectories under the stochastic policy, with both networks'
  // activations at every (t_k, Y_k). The samples are independent, so two threads
  // simulate half the batch each.
  template <class Schedule, class ScoreEstimate, class Reward, class Simulator>
  EpisodeRollout<Values, Total> simulate(const EpisodeProblem<Schedule, ScoreEstimate, Reward, Simulator>& problem,
                                         const EpisodeNoise& noise) {
    const sde::TimeGrid& grid = problem.grid;
    const Eigen::Index batch = options_.batch, d = policy_.options().state_dim;
    const Eigen::Index steps = Eigen::Index(grid.steps()), columns = steps * batch;
    const auto dtype = torch::CppTypeToScalarType<Scalar>::value;
    check_noise(noise, steps, batch, d);
    allocate(steps, batch);
    if (affine_steps_.size() != std::size_t(steps)) {
      affine_steps_.clear();
      for (std::size_t k = 0; k < grid.steps(); ++k)
        affine_steps_.push_back(affine_step(problem.schedule, problem.simulator, grid[k], grid[k + 1]));
    }
    policy_spreads_.clear();
    for (std::size_t k = 0; k < grid.steps(); ++k) policy_spreads_.push_back(std::sqrt(problem.policy_variance(k)));

    states_.leftCols(batch) = ConstMap(noise.prior.template data_ptr<Scalar>(), d, batch);
    const Eigen::Index half = two_threads() ? batch / 2 : batch;
    double gap_first = 0.0, gap_second = 0.0;
    in_parallel([&] { gap_first = simulate(problem, noise, 0, half, 0); },
                [&] {
                  if (half < batch) gap_second = simulate(problem, noise, half, batch - half, 1);
                });

    // The reward of Y_N, through LibTorch.
    const torch::Tensor final_states =
        torch::from_blob(states_.data() + columns * d, {batch, d}, torch::TensorOptions(dtype));
    const torch::Tensor terminal =
        problem.reward(final_states, noise.z).detach().to(torch::kCPU, torch::kDouble).contiguous();
    require(terminal.dim() == 1 && terminal.size(0) == batch, "q-learning: the reward must give [", batch,
            "] values, found ", terminal.sizes());
    return {steps_by_samples(rewards_.data()), Eigen::Map<const Values>(terminal.template data_ptr<double>(), batch, 1),
            gap_first + gap_second};
  }

  // J and log pi over the last simulation: the networks ran forward in it.
  EpisodeTerms<Values> terms() const {
    const Eigen::Index batch = options_.batch, d = policy_.options().state_dim;
    Values log_policy(batch, Eigen::Index(policy_spreads_.size()));
    for (Eigen::Index k = 0; k < log_policy.cols(); ++k)
      log_policy.col(k) =
          gaussian_step_log_prob((actions_.middleCols(k * batch, batch) - mu_.middleCols(k * batch, batch))
                                     .colwise()
                                     .squaredNorm()
                                     .transpose()
                                     .array()
                                     .template cast<double>(),
                                 policy_spreads_[std::size_t(k)], double(d));
    return {steps_by_samples(values_.data()), log_policy};
  }

  // An Adam step on the gradient of sum(v J) + sum(w log pi), written out:
  // d log pi / d mu = (a - mu) / s^2.
  void update(const Values& value_weights, const Values& log_policy_weights) {
    const Eigen::Index batch = options_.batch;
    grad_values_ = Eigen::Map<const Values>(value_weights.data(), 1, value_weights.size()).template cast<Scalar>();
    for (Eigen::Index k = 0; k < log_policy_weights.cols(); ++k) {
      const double spread = policy_spreads_[std::size_t(k)];
      const Row weights = (log_policy_weights.col(k) / (spread * spread)).transpose().template cast<Scalar>();
      const Eigen::Index at = k * batch;
      grad_mu_.middleCols(at, batch) =
          ((actions_.middleCols(at, batch) - mu_.middleCols(at, batch)).array().rowwise() * weights.array()).matrix();
    }
    in_parallel([&] { value_.backward(input_, value_a1_, value_a2_, grad_values_, value_dz2_, value_dz1_); },
                [&] { policy_.backward(input_, policy_a1_, policy_a2_, grad_mu_, policy_dz2_, policy_dz1_); });
    value_.adam_step(adam_);
    policy_.adam_step(adam_);
  }

  std::vector<double> totals(const std::vector<Total>& parts) const { return parts; }

  // The networks as LibTorch modules (CPU, this scalar type): copies.
  std::pair<models::TimeStateMlp, models::TimeStateMlp> networks() const {
    return {policy_.to_torch(), value_.to_torch()};
  }
  // Takes the weights of modules of the same shape (any device and dtype).
  void assign(const models::TimeStateMlp& policy, const models::TimeStateMlp& value) {
    policy_.copy_from(policy);
    value_.copy_from(value);
  }

  void set_learning_rate(double learning_rate) {
    check_learning_rate(learning_rate);
    adam_.learning_rate = learning_rate;
  }

  Network& policy() { return policy_; }
  Network& value() { return value_; }

 private:
  // Columns [first, first + count) of every step: the policy's actions, the score
  // estimate, the rewards, the next states and both networks' forward passes.
  // Returns this share of the score gap. `worker` picks the thread's estimator.
  template <class Problem>
  double simulate(const Problem& problem, const EpisodeNoise& noise, Eigen::Index first, Eigen::Index count,
                  int worker) {
    const sde::TimeGrid& grid = problem.grid;
    const Eigen::Index batch = options_.batch, d = policy_.options().state_dim;
    const Eigen::Index steps = Eigen::Index(grid.steps());
    const int64_t* z = noise.z.defined() ? noise.z.template data_ptr<int64_t>() + first : nullptr;
    const Scalar* normals = noise.steps.template data_ptr<Scalar>();
    const double theta = options_.temperature;
    double score_gap = 0.0;
    for (Eigen::Index k = 0; k < steps; ++k) {
      const double t = grid[std::size_t(k)], t_next = grid[std::size_t(k) + 1], h = t_next - t;
      const double g2 = problem.squared_diffusion(t);
      const Eigen::Index at = k * batch + first;
      const auto y = states_.middleCols(at, count);
      auto input = input_.middleCols(at, count);
      policy_.fill_input(Scalar(t), y, z, input);
      auto mu = mu_.middleCols(at, count);
      policy_.forward(input, policy_a1_.middleCols(at, count), policy_a2_.middleCols(at, count), mu);
      value_.forward(input, value_a1_.middleCols(at, count), value_a2_.middleCols(at, count),
                     values_.middleCols(at, count));
      auto action = actions_.middleCols(at, count);
      action = mu + Scalar(std::sqrt(theta / (2.0 * g2))) * ConstMap(normals + (2 * k * batch + first) * d, d, count);
      auto estimate = estimate_.middleCols(first, count);
      score_estimate(problem, t, at, first, count, noise.z, z, worker);
      rewards_.segment(at, count) = Scalar(-g2) * (action - estimate).colwise().squaredNorm();
      score_gap += g2 * h * double((mu - estimate).colwise().squaredNorm().sum()) / double(batch);

      const AffineStep& step = affine_steps_[std::size_t(k)];
      auto next = states_.middleCols(at + batch, count);
      next = Scalar(step.keep) * y + Scalar(step.push) * action;
      if (step.noise_std > 0.0)
        next += Scalar(step.noise_std) * ConstMap(normals + ((2 * k + 1) * batch + first) * d, d, count);
    }
    return score_gap;
  }

  // Per-(step, sample) values [N B] (step k's B samples at k B) as [B, N] in double.
  Values steps_by_samples(const Scalar* data) const {
    return Eigen::Map<const Matrix>(data, options_.batch, Eigen::Index(policy_spreads_.size()))
        .array()
        .template cast<double>();
  }

  // Two threads when LibTorch is allowed two (`--threads`, configure_threads).
  bool two_threads() const { return options_.batch >= 2 && torch::get_num_threads() >= 2; }

  // Runs both tasks, the first on a second thread when two_threads(); rethrows.
  template <class First, class Second>
  void in_parallel(First&& first, Second&& second) {
    if (!two_threads()) {
      first();
      second();
      return;
    }
    std::exception_ptr failure;
    std::thread worker([&] {
      try {
        first();
      } catch (...) {
        failure = std::current_exception();
      }
    });
    try {
      second();
    } catch (...) {
      worker.join();
      throw;
    }
    worker.join();
    if (failure) std::rethrow_exception(failure);
  }

  // The estimate for columns [at, at + count) of the states into the same columns
  // of estimate_ (from `first`).
  template <class Problem>
  void score_estimate(const Problem& problem, double t, Eigen::Index at, Eigen::Index first, Eigen::Index count,
                      const torch::Tensor& z_tensor, const int64_t* z, int worker) {
    const Eigen::Index d = policy_.options().state_dim;
    const auto y = states_.middleCols(at, count);
    auto estimate = estimate_.middleCols(first, count);
    using Estimate = std::decay_t<decltype(problem.score_estimate)>;
    if constexpr (detail::IsRatioScore<Estimate>::value) {
      auto& fused = fused_estimates_[std::size_t(worker)];
      if (!fused) fused.emplace(problem.score_estimate);
      require(fused->dim() == d, "q-learning: the score estimate's data is ", fused->dim(), "-dimensional, the states ",
              d, "-dimensional");
      fused->score(problem.schedule, t, y, z, estimate);
    } else {
      torch::NoGradGuard no_grad;
      const auto dtype = torch::CppTypeToScalarType<Scalar>::value;
      const torch::Tensor states = torch::from_blob(states_.data() + at * d, {count, d}, torch::TensorOptions(dtype));
      const torch::Tensor zs = z_tensor.defined() ? z_tensor.narrow(0, first, count) : torch::Tensor{};
      const torch::Tensor value =
          problem.score_estimate.score(t, states, zs).detach().to(torch::kCPU, dtype).contiguous();
      require(value.numel() == count * d, "q-learning: the score estimate must give [", count, ", ", d, "], found ",
              value.sizes());
      estimate = ConstMap(value.template data_ptr<Scalar>(), d, count);
    }
  }

  void check_noise(const EpisodeNoise& noise, Eigen::Index steps, Eigen::Index batch, Eigen::Index d) const {
    const auto dtype = torch::CppTypeToScalarType<Scalar>::value;
    const auto fits = [&](const torch::Tensor& tensor, std::initializer_list<int64_t> shape) {
      return tensor.defined() && tensor.is_cpu() && tensor.scalar_type() == dtype && tensor.is_contiguous() &&
             tensor.sizes() == torch::IntArrayRef(shape);
    };
    require(fits(noise.prior, {batch, d}), "EigenBackend: the prior must be a contiguous CPU [", batch, ", ", d,
            "] tensor of ", dtype);
    require(fits(noise.steps, {steps, 2, batch, d}), "EigenBackend: the step noise must be a contiguous CPU [", steps,
            ", 2, ", batch, ", ", d, "] tensor of ", dtype);
    const int64_t classes = policy_.options().classes;
    require(noise.z.defined() == (classes > 0), classes > 0 ? "EigenBackend: the networks are conditional and need z"
                                                            : "EigenBackend: the networks are unconditional but got z");
    if (noise.z.defined())
      require(noise.z.is_cpu() && noise.z.scalar_type() == torch::kLong && noise.z.is_contiguous() &&
                  noise.z.dim() == 1 && noise.z.size(0) == batch,
              "EigenBackend: z must be a contiguous CPU int64 [", batch, "] tensor");
  }

  // The episode's buffers, sized on the first episode.
  void allocate(Eigen::Index steps, Eigen::Index batch) {
    const Eigen::Index columns = steps * batch, d = policy_.options().state_dim;
    if (input_.cols() == columns) return;
    const Eigen::Index hidden = options_.hidden;
    input_.resize(policy_.input_dim(), columns);
    states_.resize(d, columns + batch);
    for (Matrix* m : {&policy_a1_, &policy_a2_, &value_a1_, &value_a2_}) m->resize(hidden, columns);
    for (Matrix* m : {&policy_dz1_, &policy_dz2_, &value_dz1_, &value_dz2_})
      m->resize(hidden, std::min(columns, Network::kBlock));
    mu_.resize(d, columns);
    actions_.resize(d, columns);
    grad_mu_.resize(d, columns);
    estimate_.resize(d, batch);
    values_.resize(1, columns);
    grad_values_.resize(1, columns);
    rewards_.resize(columns);
  }

  QLearningOptions options_;
  Network policy_, value_;
  models::EigenAdamOptions adam_;
  std::array<std::optional<models::EigenRatioScore<Scalar>>, 2> fused_estimates_;  // one per thread
  std::vector<AffineStep> affine_steps_;  // the simulator's step on each interval of the grid
  Matrix input_;                          // [1 + d + classes, N B]: (t_k, Y_k, one-hot z) per column
  Matrix states_;                         // [d, (N + 1) B]: Y_0 .. Y_N
  Matrix policy_a1_, policy_a2_;          // [hidden, N B]
  Matrix value_a1_, value_a2_;            // [hidden, N B]
  Matrix policy_dz1_, policy_dz2_;        // [hidden, kBlock], the backward passes' scratch
  Matrix value_dz1_, value_dz2_;
  Matrix mu_, actions_, grad_mu_;       // [d, N B]
  Matrix estimate_;                     // [d, B], the current step's score estimates
  Matrix values_, grad_values_;         // [1, N B]
  Row rewards_;                         // [N B]
  std::vector<double> policy_spreads_;  // the policy's standard deviation at each step
};

}  // namespace diffctl::algorithms
