#pragma once
// The discrete-time fine-tuning baselines, DDPO (Black et al. 2024) and DPOK (Fan
// et al. 2023), for any fine-tunable drift model and any solver with Gaussian steps.
//
// A chain Y_0 .. Y_N of the solver on a uniform grid is a product of Gaussian
// transitions p_theta(Y_{k+1} | Y_k) = N(mean_theta(t_k, Y_k), s_k^2 I), each the
// solver's own Transition at (t_k, Y_k) with the model's score in it (Euler-Maruyama
// on the reverse SDE, DDPM, DDIM with eta > 0), as the reference implementations
// take it from their scheduler's step. Both methods sample chains from the current
// model, score them with the terminal reward and follow the policy gradient of
// sum_k log p_theta(Y_{k+1} | Y_k). DDPO clips the importance ratio as PPO does and
// has no KL term. DPOK adds, per step, the closed-form KL between the fine-tuned
// and the pretrained transitions (objective::transition_kl), a learned value
// baseline and a weight on the reward.
//
// A drift that takes one time per sample (TimeBatchedDrift: the small MLPs), with
// a solver whose steps are affine in the state and the score (Euler-Maruyama,
// DDPM, DDIM without clipping: their coefficients read off the solver once), sends
// every step of the batch through its network and the step in one pass. Any other
// (the image UNet) goes step by step with one backward pass per step, so that
// memory stays that of one step, as DDPO's reference implementation does.
//
//   Ddpo<Schedule, models::EpsilonScore<Schedule, models::UNet>, Reward, sde::Ddpm> ddpo(
//       schedule, pretrained, reward, {.sample = {1, 28, 28}, .classes = 10}, options);
//
// Backend: TorchBackend (any drift and solver, any device) or, for the MLP policy
// with Euler-Maruyama, EigenBackend<Scalar> (policy_gradient_eigen.hpp).
//
// Data parallel over the options' distributed::Group (TorchBackend): every rank
// draws the iteration's classes, prior and step noise for the whole batch and
// samples its shard of the chains; rewards are gathered for DDPO's advantages,
// losses are the shard's share of the batch means, and gradients are summed over
// ranks before each optimiser step.

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
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

struct FineTuneStats {
  double reward;  // mean terminal reward of the iteration's batch
  double kl;      // mean summed per-step KL to the pretrained transitions
  double loss;
  // DDPO: the fraction of (step, sample, inner epoch) terms where the clipped
  // ratio was the smaller term, so the clip took their gradient away (PPO's
  // "clip fraction"); 0 for DPOK.
  double clip_fraction = 0.0;
  // By name, for progress lines and logs (callbacks.hpp).
  std::vector<std::pair<std::string, double>> fields() const {
    return {{"reward", reward}, {"kl", kl}, {"loss", loss}, {"clip_fraction", clip_fraction}};
  }
};

namespace detail {
// What DDPO and DPOK share: the pretrained model, the copy they fine-tune, the
// grid and solver, sampling scored chains, and the transitions along them.
template <NoiseSchedule Schedule, TunableDrift Drift, RewardFunction Reward, class Solver>
  requires SdeSolver<Solver, Schedule, Drift>
class PolicyFineTuning {
 public:
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

 protected:
  PolicyFineTuning(Schedule schedule, const Drift& pretrained, Reward reward, ChainShape shape, double dt,
                   int64_t batch, Solver solver, distributed::Group group)
      : schedule_(std::move(schedule)),
        reward_(std::move(reward)),
        solver_(std::move(solver)),
        shape_(std::move(shape)),
        grid_(grid_with_step(schedule_, dt)),
        batch_(batch),
        pretrained_(pretrained.snapshot()),
        policy_(pretrained.snapshot()),
        group_(std::move(group)) {
    require(batch >= 2, "fine-tuning: batch must be >= 2, found ", batch);
    require(batch >= group_.size(), "fine-tuning: a batch of ", batch, " chains cannot be split over ", group_.size(),
            " processes");
    require(!shape_.sample.empty() && shape_.classes >= 0, "fine-tuning: expected a sample shape and classes >= 0");
    for (torch::Tensor& p : pretrained_.network().ptr()->parameters()) p.requires_grad_(false);
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
      const auto options = tensor_options();
      affine_ = {torch::tensor(keep, options), torch::tensor(push, options), torch::tensor(noise, options)};
    }
  }

  std::vector<torch::Tensor> parameters() const { return policy_.network().ptr()->parameters(); }
  torch::TensorOptions tensor_options() const {
    const torch::Tensor weight = parameters().front();
    return torch::TensorOptions(weight.dtype()).device(weight.device());
  }
  std::vector<int64_t> batch_shape(int64_t n) const {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), shape_.sample.begin(), shape_.sample.end());
    return shape;
  }
  int64_t steps() const { return int64_t(grid_.steps()); }

  // This rank's chains of a batch from the current model and their terminal
  // rewards [B]. The randomness comes in a fixed order, drawn for the whole batch:
  // the classes, the prior, each step's noise.
  std::pair<Chains, torch::Tensor> sample_scored_chains(at::Generator& generator) const {
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
    torch::Tensor reward = torch::Tensor(reward_(trajectory.final_state, z)).to(options);
    require(reward.dim() == 1 && reward.size(0) == prior.size(0), "fine-tuning: the reward must give [", prior.size(0),
            "] values, found ", reward.sizes());
    return {Chains{torch::stack(trajectory.states), z}, std::move(reward)};
  }

  // Calls pass(first, count) over consecutive ranges of steps that cover the grid:
  // all of them at once for a TimeBatchedDrift with affine steps, else one at a time.
  void for_each_pass(const std::function<void(int64_t, int64_t)>& pass) const {
    const int64_t per_pass = affine_.keep.defined() ? steps() : 1;
    for (int64_t first = 0; first < steps(); first += per_pass) pass(first, std::min(per_pass, steps() - first));
  }

  // The transitions of `drift` on steps [first, first + count) of the chains: the
  // solver's step at each (t_k, Y_k), stacked.
  StepStack transitions(const Drift& drift, const Chains& chains, int64_t first, int64_t count) const {
    if constexpr (TimeBatchedDrift<Drift>) {
      if (affine_.keep.defined()) {
        const int64_t batch = chains.states.size(1);
        const torch::Tensor before = chains.states.narrow(0, first, count);
        const torch::Tensor scores = drift
                                         .score_at(times(first, count).repeat_interleave(batch), before.flatten(0, 1),
                                                   chains.z.defined() ? chains.z.repeat({count}) : torch::Tensor{})
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
                                           chains.states[k], chains.z);
      means.push_back(std::move(step.mean));
      noise_std.push_back(step.noise_std);
    }
    check_noise(noise_std, first);
    return {torch::stack(means), torch::tensor(noise_std, tensor_options())};
  }

  // Refuses a step without noise (steps first, first + 1, ...): it has no density.
  void check_noise(const std::vector<double>& noise_std, int64_t first) const {
    for (std::size_t i = 0; i < noise_std.size(); ++i)
      require(noise_std[i] > 0.0, "fine-tuning: the solver's step from t = ", grid_[std::size_t(first) + i],
              " is deterministic; DDPO and DPOK need noise in every step (Euler-Maruyama, DDPM, DDIM with eta > 0)");
  }

  // log p(Y_{k+1} | Y_k) [count, B] of those transitions.
  torch::Tensor log_probs(const StepStack& steps, const Chains& chains, int64_t first) const {
    return log_prob(steps, chains.states.narrow(0, first + 1, steps.means.size(0)));
  }

  // Per-step KL [count, B] of those transitions to the pretrained model's.
  torch::Tensor kl_to_pretrained(const StepStack& tuned, const Chains& chains, int64_t first) const {
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = transitions(pretrained_, chains, first, tuned.means.size(0)).means;
    }
    return objective::transition_kl(tuned, reference);
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
  // With a TimeBatchedDrift and affine steps: each step's keep, push and noise_std
  // [N], Y_{k+1} = keep_k Y_k + push_k score(t_k, Y_k) + noise_std_k xi.
  struct {
    torch::Tensor keep, push, noise_std;
  } affine_;
};
}  // namespace detail

struct DdpoOptions {
  double dt = 0.25;
  int64_t batch = 300;
  double learning_rate = 1e-4;
  double clip = 0.2;           // PPO's epsilon: the ratio is clipped to [1 - clip, 1 + clip]
  int64_t inner_epochs = 4;    // gradient steps per sampled batch
  distributed::Group group{};  // the processes that share each batch (TorchBackend)
};

inline void check_ddpo_options(const DdpoOptions& options) {
  require(options.clip > 0.0, "ddpo: clip must be > 0, found ", options.clip);
  require(options.inner_epochs >= 1, "ddpo: inner_epochs must be >= 1, found ", options.inner_epochs);
}

template <NoiseSchedule Schedule, TunableDrift Drift, RewardFunction Reward, class Solver = sde::EulerMaruyama,
          class Backend = TorchBackend>
  requires SdeSolver<Solver, Schedule, Drift>
class Ddpo : public detail::PolicyFineTuning<Schedule, Drift, Reward, Solver> {
  static_assert(std::same_as<Backend, TorchBackend>,
                "Ddpo: EigenBackend runs PolicyScore with Euler-Maruyama; include "
                "diffctl/algorithms/policy_gradient_eigen.hpp");
  using Base = detail::PolicyFineTuning<Schedule, Drift, Reward, Solver>;

 public:
  // Fine-tunes a copy of `pretrained`, whose chains have the given shape.
  Ddpo(Schedule schedule, const Drift& pretrained, Reward reward, ChainShape shape, DdpoOptions options = {},
       Solver solver = Solver())
      : Base(std::move(schedule), pretrained, std::move(reward), std::move(shape), options.dt, options.batch,
             std::move(solver), options.group),
        options_(options),
        optimizer_(this->parameters(), torch::optim::AdamOptions(options.learning_rate)) {
    check_ddpo_options(options);
    this->group_.broadcast_values(this->parameters());  // every rank starts from rank 0's copy
  }

  FineTuneStats train_iteration(at::Generator& generator) {
    const auto [chains, reward] = this->sample_scored_chains(generator);
    const distributed::Group& group = this->group_;
    const double whole = double(this->batch_);
    // Advantages normalised over the whole batch's rewards.
    const torch::Tensor rewards = group.all_gather_rows(reward);
    const torch::Tensor advantage = group.local_rows((rewards - rewards.mean()) / (rewards.std() + 1e-8)).unsqueeze(0);
    // The sampling model's log-densities, and its KL to the pretrained model.
    torch::Tensor old_log_probs, kl;
    {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> log_probs, kls;
      this->for_each_pass([&](int64_t first, int64_t count) {
        const auto tuned = this->transitions(this->policy_, chains, first, count);
        log_probs.push_back(this->log_probs(tuned, chains, first));
        kls.push_back(this->kl_to_pretrained(tuned, chains, first));
      });
      old_log_probs = torch::cat(log_probs);
      kl = torch::cat(kls);
    }
    const auto counter = torch::TensorOptions(torch::kLong).device(reward.device());
    torch::Tensor clipped_terms = torch::zeros({}, counter), loss = torch::zeros({}, reward.options());
    for (int64_t epoch = 0; epoch < options_.inner_epochs; ++epoch) {
      optimizer_.zero_grad();
      loss = torch::zeros({}, reward.options());
      this->for_each_pass([&](int64_t first, int64_t count) {
        const auto tuned = this->transitions(this->policy_, chains, first, count);
        const torch::Tensor ratio =
            (this->log_probs(tuned, chains, first) - old_log_probs.narrow(0, first, count)).exp();
        const torch::Tensor clipped = ratio.clamp(1.0 - options_.clip, 1.0 + options_.clip);
        const torch::Tensor pass_loss = -torch::min(ratio * advantage, clipped * advantage).sum() / whole;
        clipped_terms += (clipped * advantage < ratio * advantage).sum();
        pass_loss.backward();
        loss += pass_loss.detach();
      });
      group.all_reduce_gradients(this->parameters());
      optimizer_.step();
    }
    const torch::Tensor sums =
        group.all_reduce_scalars({reward.sum() / whole, kl.sum() / whole, loss, clipped_terms}).cpu();
    const double terms = double(this->steps()) * whole * double(options_.inner_epochs);
    return {sums[0].template item<double>(), sums[1].template item<double>(), sums[2].template item<double>(),
            sums[3].template item<double>() / terms};
  }

  void set_learning_rate(double learning_rate) { algorithms::set_learning_rate(optimizer_, learning_rate); }

 private:
  DdpoOptions options_;
  torch::optim::Adam optimizer_;
};

struct DpokOptions {
  double dt = 0.25;
  int64_t batch = 300;
  double learning_rate = 1e-4;  // policy and value baseline
  double reward_weight = 10.0;  // alpha: weight of the reward against the KL
  double kl_weight = 0.01;      // beta: weight of the summed per-step KL
  int64_t value_hidden = 64;    // width of the value baseline's MLP
  distributed::Group group{};   // the processes that share each batch (TorchBackend)
};

inline void check_dpok_options(const DpokOptions& options) {
  require(options.reward_weight > 0.0 && options.kl_weight >= 0.0,
          "dpok: expected reward_weight > 0 and kl_weight >= 0, found ", options.reward_weight, " and ",
          options.kl_weight);
  require(options.value_hidden >= 1, "dpok: value_hidden must be >= 1, found ", options.value_hidden);
}

// DPOK's value baseline V(t, Y, z): an MLP on the flattened state.
inline models::TimeStateMlpOptions value_network_options(const ChainShape& shape, int64_t hidden) {
  int64_t dim = 1;
  for (const int64_t size : shape.sample) dim *= size;
  return {.state_dim = dim, .out_dim = 1, .classes = shape.classes, .hidden = hidden};
}

template <NoiseSchedule Schedule, TunableDrift Drift, RewardFunction Reward, class Solver = sde::EulerMaruyama,
          class Backend = TorchBackend>
  requires SdeSolver<Solver, Schedule, Drift>
class Dpok : public detail::PolicyFineTuning<Schedule, Drift, Reward, Solver> {
  static_assert(std::same_as<Backend, TorchBackend>,
                "Dpok: EigenBackend runs PolicyScore with Euler-Maruyama; include "
                "diffctl/algorithms/policy_gradient_eigen.hpp");
  using Base = detail::PolicyFineTuning<Schedule, Drift, Reward, Solver>;

 public:
  Dpok(Schedule schedule, const Drift& pretrained, Reward reward, ChainShape shape, DpokOptions options = {},
       Solver solver = Solver())
      : Base(std::move(schedule), pretrained, std::move(reward), std::move(shape), options.dt, options.batch,
             std::move(solver), options.group),
        options_((check_dpok_options(options), options)),
        value_(value_network_options(this->shape_, options.value_hidden)),
        optimizer_(all_parameters(), torch::optim::AdamOptions(options.learning_rate)) {
    this->group_.broadcast_values(all_parameters());  // every rank starts from rank 0's networks
  }

  models::TimeStateMlp& value() { return value_; }

  FineTuneStats train_iteration(at::Generator& generator) {
    const auto [chains, reward] = this->sample_scored_chains(generator);
    const torch::Tensor target = options_.reward_weight * reward.unsqueeze(0);  // [1, B]
    const int64_t batch = reward.size(0);                                       // this rank's chains
    const double whole = double(this->batch_), terms = double(this->steps()) * whole;
    torch::Tensor policy_loss = torch::zeros({}, reward.options()), kl = torch::zeros({}, reward.options());
    optimizer_.zero_grad();
    this->for_each_pass([&](int64_t first, int64_t count) {
      const torch::Tensor before = chains.states.narrow(0, first, count);
      const torch::Tensor baseline =
          value_
              ->forward(this->times(first, count).repeat_interleave(batch), before.reshape({count * batch, -1}),
                        chains.z.defined() ? chains.z.repeat({count}) : torch::Tensor{})
              .view({count, batch});
      const auto tuned = this->transitions(this->policy_, chains, first, count);
      const torch::Tensor step_kl = this->kl_to_pretrained(tuned, chains, first);
      // The shard's share of the batch means.
      const torch::Tensor pass_policy_loss =
          -((target - baseline).detach() * this->log_probs(tuned, chains, first)).sum() / whole +
          options_.kl_weight * step_kl.sum() / whole;
      const torch::Tensor value_loss = (baseline - target).square().sum() / terms;
      (pass_policy_loss + value_loss).backward();
      policy_loss += pass_policy_loss.detach();
      kl += step_kl.detach().sum() / whole;
    });
    this->group_.all_reduce_gradients(all_parameters());
    optimizer_.step();
    const torch::Tensor sums = this->group_.all_reduce_scalars({reward.sum() / whole, kl, policy_loss}).cpu();
    return {sums[0].template item<double>(), sums[1].template item<double>(), sums[2].template item<double>()};
  }

  void set_learning_rate(double learning_rate) { algorithms::set_learning_rate(optimizer_, learning_rate); }

 private:
  std::vector<torch::Tensor> all_parameters() {
    const auto options = this->tensor_options();
    value_->to(options.device(), options.dtype().toScalarType());
    std::vector<torch::Tensor> all = this->parameters();
    for (const torch::Tensor& p : value_->parameters()) all.push_back(p);
    return all;
  }

  DpokOptions options_;
  models::TimeStateMlp value_;
  torch::optim::Adam optimizer_;
};

}  // namespace diffctl::algorithms
