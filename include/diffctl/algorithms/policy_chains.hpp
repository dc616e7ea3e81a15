#pragma once
// The chains that DDPO and DPOK (policy_gradient.hpp) learn from, on either
// backend: a batch sampled from the fine-tuned model and scored by the terminal
// reward, the log-densities log p_theta(Y_{k+1} | Y_k) of its Gaussian steps and
// their KL to the pretrained steps, a value baseline V(t_k, Y_k, z), and the
// gradients that flow from weights on those terms back into the networks. The
// algorithms are written once against this; the two backends differ only here.
//
// A chain Y_0 .. Y_N of the solver on a uniform grid is a product of Gaussian
// transitions N(mean_theta(t_k, Y_k), s_k^2 I), each the solver's own Transition
// at (t_k, Y_k) with the model's score in it (Euler-Maruyama on the reverse SDE,
// DDPM, DDIM with eta > 0), as the reference implementations take it from their
// scheduler's step.
//
// Both backends give per-(step, sample) terms as a Values array whose memory
// holds step k's B samples one after the other:
// - TorchPolicyChains (any drift and solver, any device, data parallel): Values is
//   a tensor [count, B]. A TimeBatchedDrift with a solver whose steps are affine in
//   the state and the score (Euler-Maruyama, DDPM, DDIM without clipping: their
//   coefficients read off the solver once) takes every step of the batch in one
//   pass; any other drift (the image UNet) one step per pass with one backward
//   pass each, so that memory stays that of one step, as DDPO's reference
//   implementation does. Gradients come from autograd: the terms are recorded and
//   backward() differentiates sum(w log p) + c sum(KL) + sum(g V).
// - EigenPolicyChains (PolicyScore with Euler-Maruyama, one CPU thread): Values is
//   an Eigen array [B, N] in double, the networks are EigenMlp and the gradients
//   are written out: with mean_k = keep_k Y_k + push_k mu(t_k, Y_k),
//     d log p / d mean_k = (Y_{k+1} - mean_k) / s_k^2,
//     d KL_k / d mean_k = (mean_k - mean_k^pre) / s_k^2,  d mean_k / d mu = push_k.
//   One pass covers every step; the policy runs forward once per weight update
//   (the activations of the simulation serve the first pass).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <Eigen/Dense>
#include <torch/torch.h>

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/algorithms/qlearning_eigen.hpp"
#include "diffctl/algorithms/values.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/eigen_mlp.hpp"
#include "diffctl/models/time_state_mlp.hpp"
#include "diffctl/objective/path_kl.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/transition.hpp"

namespace diffctl::algorithms {

// What a chain carries: one sample's shape ({d}, or {1, 28, 28} for an image) and
// the number of classes its conditions are drawn from (0: unconditional).
struct ChainShape {
  std::vector<int64_t> sample;
  int64_t classes = 0;
};

// The shape of the chains of a q-learning policy network.
inline ChainShape chain_shape(const models::TimeStateMlp& policy) {
  return {{policy->options().state_dim}, policy->options().classes};
}

// A batch of chains Y_0 .. Y_N [N+1, B, ...] and their conditions z [B] (or undefined).
struct Chains {
  torch::Tensor states;
  torch::Tensor z;
};

// What the chains are built with: the grid step, the batch (over all processes),
// the Adam learning rate of every network, the width of a value baseline (0:
// none) and the processes that share each batch (TorchPolicyChains).
struct ChainOptions {
  double dt = 0.25;
  int64_t batch = 300;
  double learning_rate = 1e-4;
  int64_t value_hidden = 0;
  distributed::Group group{};
};

// A value baseline V(t, Y, z): an MLP on the flattened state.
inline models::TimeStateMlpOptions value_network_options(const ChainShape& shape, int64_t hidden) {
  int64_t dim = 1;
  for (const int64_t size : shape.sample) dim *= size;
  return {.state_dim = dim, .out_dim = 1, .classes = shape.classes, .hidden = hidden};
}

namespace detail {

// Whether a pass records its terms for backward().
enum class Track { no, yes };

// The chains of TorchBackend: any fine-tunable drift, any solver with Gaussian
// steps, any device, a batch sharded over the options' group (every rank draws
// the classes, prior and step noise of the whole batch and integrates its shard;
// totals and gradients are summed over ranks).
template <NoiseSchedule Schedule, TunableDrift Drift, RewardFunction Reward, class Solver>
  requires SdeSolver<Solver, Schedule, Drift>
class TorchPolicyChains {
 public:
  using Values = torch::Tensor;  // [count, B]
  using Total = torch::Tensor;   // a scalar on the networks' device

  // n samples [n, ...] of the fine-tuned model, integrated over the training grid
  // by `solver` (by default the one it is trained with).
  torch::Tensor sample(int64_t n, const torch::Tensor& z, at::Generator& generator) const {
    return sample(n, z, generator, solver_);
  }
  template <class OtherSolver>
    requires SdeSolver<OtherSolver, Schedule, Drift> torch::Tensor sample(int64_t n, const torch::Tensor& z,
                                                                          at::Generator& generator,
                                                                          const OtherSolver& solver)
  const {
    torch::NoGradGuard no_grad;
    sde::IntegrateOptions options;
    options.generator = generator;
    options.record_x0 = false;
    return sde::integrate(schedule_, policy_, solver, grid_,
                          sde::sample_prior(schedule_, batch_shape(n), generator, tensor_options()), z, options)
        .final_state;
  }
  // The fine-tuned model (its network: policy().network()).
  Drift& policy() { return policy_; }
  const sde::TimeGrid& grid() const { return grid_; }
  void set_learning_rate(double learning_rate) { algorithms::set_learning_rate(optimizer_, learning_rate); }

 protected:
  TorchPolicyChains(Schedule schedule, const Drift& pretrained, Reward reward, ChainShape shape,
                    const ChainOptions& options, Solver solver)
      : schedule_(std::move(schedule)),
        reward_(std::move(reward)),
        solver_(std::move(solver)),
        shape_(std::move(shape)),
        grid_(grid_with_step(schedule_, options.dt)),
        batch_(options.batch),
        pretrained_(pretrained.snapshot()),
        policy_(pretrained.snapshot()),
        group_(options.group),
        value_(options.value_hidden > 0 ? models::TimeStateMlp(value_network_options(shape_, options.value_hidden))
                                        : models::TimeStateMlp(nullptr)),
        optimizer_(trained_parameters(), torch::optim::AdamOptions(options.learning_rate)) {
    require(batch_ >= 2, "fine-tuning: batch must be >= 2, found ", batch_);
    require(batch_ >= group_.size(), "fine-tuning: a batch of ", batch_, " chains cannot be split over ", group_.size(),
            " processes");
    require(!shape_.sample.empty() && shape_.classes >= 0, "fine-tuning: expected a sample shape and classes >= 0");
    require(options.value_hidden >= 0, "fine-tuning: value_hidden must be >= 0, found ", options.value_hidden);
    for (torch::Tensor& p : pretrained_.network().ptr()->parameters()) p.requires_grad_(false);
    group_.broadcast_values(trained_parameters());  // every rank starts from rank 0's networks
    if constexpr (TimeBatchedDrift<Drift>) {
      std::vector<double> keep, push, noise;
      for (std::size_t k = 0; k < grid_.steps(); ++k) {
        const auto step = try_affine_step(schedule_, solver_, grid_[k], grid_[k + 1]);
        if (!step) return;  // not affine: step by step
        keep.push_back(step->keep);
        push.push_back(step->push);
        noise.push_back(step->noise_std);
      }
      check_noise(noise, 0);
      const auto tensor = tensor_options();
      affine_ = {torch::tensor(keep, tensor), torch::tensor(push, tensor), torch::tensor(noise, tensor)};
    }
  }

  models::TimeStateMlp& value() { return value_; }
  int64_t steps() const { return int64_t(grid_.steps()); }
  double whole_batch() const { return double(batch_); }
  Total zero() const { return torch::zeros({}, tensor_options()); }

  // A batch of chains from the current model and their terminal rewards. The
  // randomness comes in a fixed order, drawn for the whole batch: the classes,
  // the prior, each step's noise.
  void draw_chains(at::Generator& generator) {
    torch::NoGradGuard no_grad;
    const auto options = tensor_options();
    torch::Tensor z;
    if (shape_.classes > 0) z = torch::randint(shape_.classes, {batch_}, generator, torch::kLong).to(options.device());
    z = group_.local_rows(z);
    const torch::Tensor prior =
        group_.local_rows(sde::sample_prior(schedule_, batch_shape(batch_), generator, options));
    sde::IntegrateOptions integrate;
    integrate.generator = generator;
    integrate.record_x0 = false;
    integrate.record_times.assign(grid_.times().begin(), grid_.times().end());
    sde::draw_noise_of_batch(integrate, batch_, group_);
    const sde::Trajectory trajectory = sde::integrate(schedule_, policy_, solver_, grid_, prior, z, integrate);
    rewards_ = torch::Tensor(reward_(trajectory.final_state, z)).to(options);
    require(rewards_.dim() == 1 && rewards_.size(0) == prior.size(0), "fine-tuning: the reward must give [",
            prior.size(0), "] values, found ", rewards_.sizes());
    chains_ = Chains{torch::stack(trajectory.states), z};
  }

  const Chains& chains() const { return chains_; }
  // The terminal rewards [B] of this rank's chains, and of the whole batch.
  const Values& rewards() const { return rewards_; }
  Values all_rewards() const { return group_.all_gather_rows(rewards_); }
  // Per-sample values [B] laid over the steps of a pass.
  Values per_sample(const Values& v, int64_t) const { return v.unsqueeze(0); }

  // Calls pass(first, count) over consecutive ranges of steps that cover the grid:
  // all of them at once for a TimeBatchedDrift with affine steps, else one at a time.
  template <class Pass>
  void for_each_pass(Pass&& pass) const {
    const int64_t per_pass = affine_.keep.defined() ? steps() : 1;
    for (int64_t first = 0; first < steps(); first += per_pass) pass(first, std::min(per_pass, steps() - first));
  }

  // log p(Y_{k+1} | Y_k) of the current model and, if asked, its KL to the
  // pretrained step, on steps [first, first + count) [count, B] each (kl
  // undefined if not asked); recorded for backward() when tracked.
  struct Terms {
    Values log_probs, kl;
  };
  Terms pass(int64_t first, int64_t count, Track track, bool with_kl) {
    std::optional<torch::NoGradGuard> no_grad;
    if (track == Track::no) no_grad.emplace();
    const StepStack tuned = transitions(policy_, first, count);
    Terms terms{log_prob(tuned, chains_.states.narrow(0, first + 1, count)), {}};
    if (with_kl) {
      torch::Tensor reference;
      {
        torch::NoGradGuard reference_only;
        reference = transitions(pretrained_, first, count).means;
      }
      terms.kl = objective::transition_kl(tuned, reference);
    }
    if (track == Track::yes) tracked_ = terms;
    return {terms.log_probs.detach(), terms.kl.defined() ? terms.kl.detach() : terms.kl};
  }

  // The value baseline V(t_k, Y_k, z) on steps [first, first + count) [count, B], recorded.
  Values baseline(int64_t first, int64_t count) {
    const int64_t batch = chains_.states.size(1);
    const torch::Tensor before = chains_.states.narrow(0, first, count);
    tracked_baseline_ = value_
                            ->forward(times(first, count).repeat_interleave(batch), before.reshape({count * batch, -1}),
                                      chains_.z.defined() ? chains_.z.repeat({count}) : torch::Tensor{})
                            .view({count, batch});
    return tracked_baseline_.detach();
  }

  // Adds to the gradients those of sum(w log p) + kl_scale sum(KL) over the last
  // tracked pass, and of sum(g V) over the last baseline (if g is defined).
  void backward(const Values& log_prob_weights, double kl_scale, const Values& baseline_weights = {}) {
    require(tracked_.log_probs.defined() && (kl_scale == 0.0 || tracked_.kl.defined()) &&
                (!baseline_weights.defined() || tracked_baseline_.defined()),
            "fine-tuning: backward() needs a tracked pass (with its KL, and a baseline, if weighted) before it");
    torch::Tensor objective = (log_prob_weights * tracked_.log_probs).sum();
    if (kl_scale != 0.0) objective = objective + kl_scale * tracked_.kl.sum();
    if (baseline_weights.defined()) objective = objective + (baseline_weights * tracked_baseline_).sum();
    objective.backward();
    tracked_ = Terms{};
    tracked_baseline_ = torch::Tensor();
  }
  void zero_grad() { optimizer_.zero_grad(); }
  // An Adam step on the gradients summed over ranks.
  void step() {
    group_.all_reduce_gradients(trained_parameters());
    optimizer_.step();
  }
  // The totals summed over ranks, as numbers.
  std::vector<double> totals(const std::vector<Total>& parts) const {
    const torch::Tensor sums = group_.all_reduce_scalars(parts).cpu();
    return std::vector<double>(sums.data_ptr<double>(), sums.data_ptr<double>() + sums.numel());
  }

  // The transitions of `drift` on steps [first, first + count) of the chains: the
  // solver's step at each (t_k, Y_k), stacked.
  StepStack transitions(const Drift& drift, int64_t first, int64_t count) const {
    if constexpr (TimeBatchedDrift<Drift>) {
      if (affine_.keep.defined()) {
        const int64_t batch = chains_.states.size(1);
        const torch::Tensor before = chains_.states.narrow(0, first, count);
        const torch::Tensor scores = drift
                                         .score_at(times(first, count).repeat_interleave(batch), before.flatten(0, 1),
                                                   chains_.z.defined() ? chains_.z.repeat({count}) : torch::Tensor{})
                                         .view(before.sizes());
        std::vector<int64_t> column(std::size_t(before.dim()), 1);
        column[0] = count;
        return {before * affine_.keep.narrow(0, first, count).view(column) +
                    scores * affine_.push.narrow(0, first, count).view(column),
                affine_.noise_std.narrow(0, first, count)};
      }
    }
    std::vector<torch::Tensor> means;
    std::vector<double> noise_std;
    for (int64_t k = first; k < first + count; ++k) {
      Transition step = solver_.transition(schedule_, drift, grid_[std::size_t(k)], grid_[std::size_t(k) + 1],
                                           chains_.states[k], chains_.z);
      means.push_back(std::move(step.mean));
      noise_std.push_back(step.noise_std);
    }
    check_noise(noise_std, first);
    return {torch::stack(means), torch::tensor(noise_std, tensor_options())};
  }

 private:
  std::vector<torch::Tensor> trained_parameters() {
    std::vector<torch::Tensor> all = policy_.network().ptr()->parameters();
    if (!value_.is_empty()) {
      const torch::Tensor weight = all.front();
      value_->to(weight.device(), weight.scalar_type());
      for (const torch::Tensor& p : value_->parameters()) all.push_back(p);
    }
    return all;
  }
  torch::TensorOptions tensor_options() const {
    const torch::Tensor weight = policy_.network().ptr()->parameters().front();
    return torch::TensorOptions(weight.dtype()).device(weight.device());
  }
  std::vector<int64_t> batch_shape(int64_t n) const {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), shape_.sample.begin(), shape_.sample.end());
    return shape;
  }

  // Refuses a step without noise (steps first, first + 1, ...): it has no density.
  void check_noise(const std::vector<double>& noise_std, int64_t first) const {
    for (std::size_t i = 0; i < noise_std.size(); ++i)
      require(noise_std[i] > 0.0, "fine-tuning: the solver's step from t = ", grid_[std::size_t(first) + i],
              " is deterministic; DDPO and DPOK need noise in every step (Euler-Maruyama, DDPM, DDIM with eta > 0)");
  }

  // The generation times t_k of steps [first, first + count), as a tensor.
  torch::Tensor times(int64_t first, int64_t count) const {
    const auto all = grid_.times();
    return torch::tensor(std::vector<double>(all.begin() + first, all.begin() + first + count), tensor_options());
  }

  Schedule schedule_;
  Reward reward_;
  Solver solver_;
  ChainShape shape_;
  sde::TimeGrid grid_;
  int64_t batch_;
  Drift pretrained_;
  Drift policy_;
  distributed::Group group_;
  models::TimeStateMlp value_;  // empty without a baseline
  torch::optim::Adam optimizer_;
  Chains chains_;
  Values rewards_;
  Terms tracked_;
  torch::Tensor tracked_baseline_;
  // With a TimeBatchedDrift and affine steps: each step's keep, push and noise_std
  // [N], Y_{k+1} = keep_k Y_k + push_k score(t_k, Y_k) + noise_std_k xi.
  struct {
    torch::Tensor keep, push, noise_std;
  } affine_;
};

// The chains of EigenBackend<Scalar>: the MLP policy with Euler-Maruyama, on one
// CPU thread, the same function of the same noise as TorchPolicyChains.
template <NoiseSchedule Schedule, RewardFunction Reward, class Scalar>
class EigenPolicyChains {
 public:
  using Values = values::Array;  // [B, count]
  using Total = double;
  using Network = models::EigenMlp<Scalar>;

  template <class Solver = sde::EulerMaruyama>
  torch::Tensor sample(int64_t n, const torch::Tensor& z, at::Generator& generator,
                       const Solver& solver = Solver()) const {
    return sample_policy(schedule_, policy_.to_torch(), grid_, n, z, generator, solver);
  }
  Network& policy() { return policy_; }
  const sde::TimeGrid& grid() const { return grid_; }
  void set_learning_rate(double learning_rate) {
    check_learning_rate(learning_rate);
    adam_.learning_rate = learning_rate;
  }

 protected:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

  EigenPolicyChains(Schedule schedule, const PolicyScore& pretrained, Reward reward, const ChainShape& shape,
                    const ChainOptions& options, sde::EulerMaruyama)
      : schedule_(std::move(schedule)),
        reward_(std::move(reward)),
        grid_(grid_with_step(schedule_, options.dt)),
        batch_(options.batch),
        pretrained_(Network::from(pretrained.network())),
        policy_(Network::from(pretrained.network())) {
    require(batch_ >= 2, "fine-tuning: batch must be >= 2, found ", batch_);
    require(options.group.alone(), "fine-tuning: the Eigen backend runs in one process; a run of ",
            options.group.size(), " processes needs the LibTorch backend");
    const ChainShape expected = chain_shape(pretrained.network());
    require(shape.sample == expected.sample && shape.classes == expected.classes,
            "fine-tuning: the chain shape does not match the policy network's (state_dim ", expected.sample.front(),
            ", classes ", expected.classes, ")");
    require(options.value_hidden >= 0, "fine-tuning: value_hidden must be >= 0, found ", options.value_hidden);
    for (std::size_t k = 0; k < grid_.steps(); ++k)
      steps_.push_back(affine_step(schedule_, sde::EulerMaruyama{}, grid_[k], grid_[k + 1]));
    adam_.learning_rate = options.learning_rate;
    const Eigen::Index n = columns(), d = dim(), h = policy_.options().hidden;
    input_.resize(policy_.input_dim(), n);
    states_.resize(d, n + batch_);
    for (Matrix* m : {&a1_, &a2_, &reference_a1_, &reference_a2_}) m->resize(h, n);
    for (Matrix* m : {&mu_, &means_, &reference_means_, &grad_means_}) m->resize(d, n);
    Eigen::Index widest = h;
    if (options.value_hidden > 0) {
      value_.emplace(Network::from(models::TimeStateMlp(value_network_options(shape, options.value_hidden))));
      for (Matrix* m : {&value_a1_, &value_a2_}) m->resize(options.value_hidden, n);
      baseline_.resize(1, n);
      widest = std::max<Eigen::Index>(widest, options.value_hidden);
    }
    for (Matrix* m : {&dz1_, &dz2_}) m->resize(widest, std::min(n, Network::kBlock));
  }

  Network& value() { return *value_; }
  int64_t steps() const { return int64_t(steps_.size()); }
  double whole_batch() const { return double(batch_); }
  Total zero() const { return 0.0; }

  // A batch of chains from the current policy (states_, input_ and the policy's
  // activations and outputs a1_, a2_, mu_ for every column) and its terminal
  // rewards, from `generator` in the LibTorch backend's order: the classes, the
  // prior, each step's noise.
  void draw_chains(at::Generator& generator) {
    const auto options = torch::TensorOptions(torch::CppTypeToScalarType<Scalar>::value);
    const Eigen::Index d = dim(), batch = batch_;
    const int64_t classes = policy_.options().classes;
    z_ = classes > 0 ? torch::randint(classes, {batch}, generator, torch::kLong) : torch::Tensor{};
    const int64_t* z = z_.defined() ? z_.template data_ptr<int64_t>() : nullptr;
    const torch::Tensor prior = sde::sample_prior(schedule_, {batch, d}, generator, options);
    states_.leftCols(batch) = Eigen::Map<const Matrix>(prior.template data_ptr<Scalar>(), d, batch);
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const torch::Tensor normals = standard_normal({batch, d}, generator, options);
      const Eigen::Index at = Eigen::Index(k) * batch;
      auto input = input_.middleCols(at, batch);
      policy_.fill_input(Scalar(grid_[k]), states_.middleCols(at, batch), z, input);
      auto mu = mu_.middleCols(at, batch);
      policy_.forward(input, a1_.middleCols(at, batch), a2_.middleCols(at, batch), mu);
      states_.middleCols(at + batch, batch) =
          Scalar(steps_[k].keep) * states_.middleCols(at, batch) + Scalar(steps_[k].push) * mu +
          Scalar(steps_[k].noise_std) * Eigen::Map<const Matrix>(normals.template data_ptr<Scalar>(), d, batch);
    }
    policy_fresh_ = true;
    reference_fresh_ = false;
    const torch::Tensor final_states = torch::from_blob(states_.data() + columns() * d, {batch, d}, options);
    const torch::Tensor reward = torch::Tensor(reward_(final_states, z_)).detach().to(torch::kDouble).contiguous();
    require(reward.numel() == batch, "fine-tuning: the reward must give [", batch, "] values, found ", reward.sizes());
    rewards_ = Eigen::Map<const Values>(reward.template data_ptr<double>(), batch, 1);
  }

  const Values& rewards() const { return rewards_; }
  const Values& all_rewards() const { return rewards_; }
  Values per_sample(const Values& v, int64_t count) const { return v.replicate(1, count); }

  template <class Pass>
  void for_each_pass(Pass&& pass) const {
    pass(int64_t(0), steps());
  }

  struct Terms {
    Values log_probs, kl;
  };
  // The whole grid's terms [B, N] (first = 0, count = N): the policy runs forward
  // only if its weights changed since it last did.
  Terms pass(int64_t, int64_t, Track, bool with_kl) {
    if (!policy_fresh_) policy_.forward(input_, a1_, a2_, mu_);
    policy_fresh_ = true;
    means_of(mu_, means_);
    Terms terms{Values(batch_, steps()), {}};
    for (std::size_t k = 0; k < steps_.size(); ++k)
      terms.log_probs.col(Eigen::Index(k)) =
          gaussian_step_log_prob(squared_norms(residual(k)), steps_[k].noise_std, double(dim()));
    if (with_kl) {
      if (!reference_fresh_) {
        pretrained_.forward(input_, reference_a1_, reference_a2_, reference_means_);
        means_of(reference_means_, reference_means_);
        reference_fresh_ = true;
      }
      terms.kl.resize(batch_, steps());
      for (std::size_t k = 0; k < steps_.size(); ++k) {
        const Eigen::Index at = Eigen::Index(k) * batch_;
        terms.kl.col(Eigen::Index(k)) =
            gaussian_step_kl(squared_norms(means_.middleCols(at, batch_) - reference_means_.middleCols(at, batch_)),
                             steps_[k].noise_std);
      }
    }
    return terms;
  }

  Values baseline(int64_t, int64_t) {
    value_->forward(input_, value_a1_, value_a2_, baseline_);
    return Eigen::Map<const Matrix>(baseline_.data(), batch_, steps()).array().template cast<double>();
  }

  // The gradients of sum(w log p) + kl_scale sum(KL) over the pass, and of
  // sum(g V) over the baseline (if g is not empty). Each call replaces the
  // gradients: the one pass covers every step.
  void backward(const Values& log_prob_weights, double kl_scale, const Values& baseline_weights = {}) {
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const Eigen::Index at = Eigen::Index(k) * batch_;
      const double precision = 1.0 / (steps_[k].noise_std * steps_[k].noise_std);
      const Row weights = (precision * log_prob_weights.col(Eigen::Index(k))).transpose().template cast<Scalar>();
      auto grad = grad_means_.middleCols(at, batch_);
      grad = (residual(k).array().rowwise() * weights.array()).matrix();
      if (kl_scale != 0.0)
        grad +=
            Scalar(kl_scale * precision) * (means_.middleCols(at, batch_) - reference_means_.middleCols(at, batch_));
      grad *= Scalar(steps_[k].push);
    }
    policy_.backward(input_, a1_, a2_, grad_means_, dz2_.topRows(a1_.rows()), dz1_.topRows(a1_.rows()));
    if (baseline_weights.size() > 0) {
      const Matrix grad_baseline =
          Eigen::Map<const Values>(baseline_weights.data(), 1, baseline_weights.size()).template cast<Scalar>();
      value_->backward(input_, value_a1_, value_a2_, grad_baseline, dz2_.topRows(value_a1_.rows()),
                       dz1_.topRows(value_a1_.rows()));
      value_stepped_ = true;
    }
  }
  void zero_grad() {}
  void step() {
    if (value_stepped_) value_->adam_step(adam_);
    value_stepped_ = false;
    policy_.adam_step(adam_);
    policy_fresh_ = false;
  }
  std::vector<double> totals(const std::vector<Total>& parts) const { return parts; }

 private:
  Eigen::Index dim() const { return policy_.options().state_dim; }
  Eigen::Index columns() const { return Eigen::Index(steps_.size()) * batch_; }

  // out = keep Y + push mu per step (out may be mu).
  void means_of(const Matrix& mu, Matrix& out) const {
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const Eigen::Index at = Eigen::Index(k) * batch_;
      out.middleCols(at, batch_) =
          Scalar(steps_[k].keep) * states_.middleCols(at, batch_) + Scalar(steps_[k].push) * mu.middleCols(at, batch_);
    }
  }

  // The squared norm of each column of x [d, B], as a column [B] in double.
  template <class Columns>
  static Values squared_norms(const Columns& x) {
    return x.colwise().squaredNorm().transpose().array().template cast<double>();
  }

  // Y_{k+1} - mean_k for step k [d, B].
  auto residual(std::size_t k) const {
    const Eigen::Index at = Eigen::Index(k) * batch_;
    return states_.middleCols(at + batch_, batch_) - means_.middleCols(at, batch_);
  }

  Schedule schedule_;
  Reward reward_;
  sde::TimeGrid grid_;
  std::vector<AffineStep> steps_;
  int64_t batch_;
  Network pretrained_, policy_;
  std::optional<Network> value_;
  models::EigenAdamOptions adam_;
  bool policy_fresh_ = false, reference_fresh_ = false, value_stepped_ = false;
  torch::Tensor z_;                                   // the current batch's classes (or undefined)
  Matrix input_;                                      // [1 + d + classes, N B]: (t_k, Y_k, one-hot z)
  Matrix states_;                                     // [d, (N + 1) B]: Y_0 .. Y_N
  Matrix a1_, a2_, reference_a1_, reference_a2_;      // [hidden, N B]
  Matrix value_a1_, value_a2_, baseline_;             // [value hidden, N B], [1, N B]
  Matrix dz1_, dz2_;                                  // backward scratch
  Matrix mu_, means_, reference_means_, grad_means_;  // [d, N B]
  Values rewards_;                                    // [B, 1]: the batch's terminal rewards
};

// The chains of a backend. EigenBackend runs the MLP policy with Euler-Maruyama.
template <class Schedule, class Drift, class Reward, class Solver, class Backend>
struct PolicyChainsOf {
  static_assert(std::same_as<Backend, TorchBackend>,
                "DDPO and DPOK: EigenBackend runs PolicyScore with sde::EulerMaruyama; any other drift or solver "
                "needs TorchBackend");
  using type = TorchPolicyChains<Schedule, Drift, Reward, Solver>;
};
template <class Schedule, class Reward, class Scalar>
struct PolicyChainsOf<Schedule, PolicyScore, Reward, sde::EulerMaruyama, EigenBackend<Scalar>> {
  using type = EigenPolicyChains<Schedule, Reward, Scalar>;
};

}  // namespace detail
}  // namespace diffctl::algorithms
