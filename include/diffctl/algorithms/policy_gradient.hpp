#pragma once
// The discrete-time fine-tuning baselines, DDPO (Black et al. 2024) and DPOK (Fan
// et al. 2023), on the same problem and network as q-learning.
//
// Discrete-time view: an Euler-Maruyama step of the reverse SDE with the policy
// mean mu_theta as the score is the Gaussian transition
//
//   p_theta(Y_{k+1} | Y_k) = N( Y_k + (-f Y_k + g^2 mu_theta(t_k, Y_k)) dt, g^2 dt I ),
//
// f, g taken at s_k = T - t_k. Both methods sample chains from the current model,
// score them with the terminal reward and follow the policy gradient of
// sum_k log p_theta(Y_{k+1} | Y_k). DDPO clips the importance ratio as PPO does and
// has no KL term. DPOK adds, per step, the closed-form KL between the fine-tuned
// and the pretrained transitions (same covariance, so |mean gap|^2 / (2 g^2 dt)),
// a learned value baseline and a weight on the reward.

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/time_state_mlp.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"

namespace diffctl::algorithms {

// A batch of chains Y_0 .. Y_N [N+1, B, d] and their conditions z [B] (or undefined).
struct Chains {
  torch::Tensor states;
  torch::Tensor z;
};

// The randomness of a batch of chains, drawn in one fixed order (classes, prior,
// all the steps' normals in one call), so that every backend consumes the same
// numbers for the same seed.
struct ChainNoise {
  torch::Tensor z;      // [B] int64 classes, or undefined (unconditional)
  torch::Tensor prior;  // [B, d]: Y_0
  torch::Tensor steps;  // [N, B, d]: each step's standard normals
};

template <NoiseSchedule Schedule>
ChainNoise draw_chain_noise(const Schedule& schedule, const sde::TimeGrid& grid, int64_t batch, int64_t dim,
                            int64_t classes, at::Generator& generator, const torch::TensorOptions& options) {
  ChainNoise noise;
  if (classes > 0) noise.z = torch::randint(classes, {batch}, generator, torch::kLong).to(options.device());
  noise.prior = sde::sample_prior(schedule, {batch, dim}, generator, options);
  noise.steps = standard_normal({int64_t(grid.steps()), batch, dim}, generator, options);
  return noise;
}

// The steps of the Euler-Maruyama chain on `grid`, Y_{k+1} = keep Y_k + push mu(t_k, Y_k)
// + noise_std N(0, I): keep = 1 - f dt, push = g^2 dt, noise_std = g sqrt(dt).
template <NoiseSchedule Schedule>
std::vector<AffineStep> euler_steps(const Schedule& schedule, const sde::TimeGrid& grid) {
  std::vector<AffineStep> steps;
  for (std::size_t k = 0; k < grid.steps(); ++k)
    steps.push_back(affine_step(schedule, sde::EulerMaruyama{}, grid[k], grid[k + 1]));
  return steps;
}

// The Euler-Maruyama chains of the model whose score is `policy`, driven by `noise`;
// steps: euler_steps(schedule, grid), computed once by a caller that samples often.
inline Chains sample_chains(const models::TimeStateMlp& policy, const sde::TimeGrid& grid,
                            const std::vector<AffineStep>& steps, const ChainNoise& noise) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> states{noise.prior};
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const torch::Tensor& y = states.back();
    const torch::Tensor mu = policy.ptr()->forward(torch::full({y.size(0)}, grid[k], y.options()), y, noise.z);
    states.push_back(steps[k].keep * y + steps[k].push * mu + steps[k].noise_std * noise.steps[int64_t(k)]);
  }
  return {torch::stack(states), noise.z};
}

// The same with fresh noise from `generator`, in the policy's dtype and device.
template <NoiseSchedule Schedule>
Chains sample_chains(const Schedule& schedule, const models::TimeStateMlp& policy, const sde::TimeGrid& grid,
                     const std::vector<AffineStep>& steps, int64_t batch, int64_t classes, at::Generator& generator) {
  const torch::Tensor weight = policy->parameters().front();
  return sample_chains(policy, grid, steps,
                       draw_chain_noise(schedule, grid, batch, policy->options().state_dim, classes, generator,
                                        torch::TensorOptions(weight.dtype()).device(weight.device())));
}

// The per-step transition means [N, B, d] of the chain under `policy`, from all
// (t_k, Y_k) in one pass, and the steps' standard deviations g sqrt(dt) [N];
// affine_steps: euler_steps(schedule, grid).
inline std::pair<torch::Tensor, torch::Tensor> transition_means(models::TimeStateMlp& policy,
                                                                const sde::TimeGrid& grid,
                                                                const std::vector<AffineStep>& affine_steps,
                                                                const Chains& chains) {
  const int64_t steps = static_cast<int64_t>(grid.steps());
  const int64_t batch = chains.states.size(1), dim = chains.states.size(2);
  const auto opts = chains.states.options();
  std::vector<double> times, keep, push, stds;
  for (std::size_t k = 0; k < grid.steps(); ++k) times.push_back(grid[k]);
  for (const AffineStep& step : affine_steps) {
    keep.push_back(step.keep);
    push.push_back(step.push);
    stds.push_back(step.noise_std);
  }
  const auto column = [&](const std::vector<double>& v) {
    return torch::tensor(v, opts).view({steps, 1, 1});
  };
  const torch::Tensor before = chains.states.narrow(0, 0, steps);
  const torch::Tensor mu =
      policy->forward(torch::tensor(times, opts).repeat_interleave(batch), before.reshape({-1, dim}),
                      chains.z.defined() ? chains.z.repeat({steps}) : torch::Tensor{})
          .view({steps, batch, dim});
  return {before * column(keep) + mu * column(push), torch::tensor(stds, opts)};
}

// log p_theta(Y_{k+1} | Y_k) [N, B].
inline torch::Tensor transition_log_probs(const torch::Tensor& means, const torch::Tensor& stds,
                                          const Chains& chains) {
  const int64_t steps = means.size(0), dim = means.size(2);
  const torch::Tensor after = chains.states.narrow(0, 1, steps);
  const torch::Tensor sd = stds.view({steps, 1});
  return -0.5 * (after - means).square().sum(2) / sd.square() -
         double(dim) * (sd.log() + 0.5 * std::log(2.0 * std::numbers::pi));
}

struct FineTuneStats {
  double reward;  // mean terminal reward of the iteration's batch
  double kl;      // mean summed per-step KL to the pretrained transitions
  double loss;
  // DDPO: the fraction of (step, sample, inner epoch) terms where the clipped
  // ratio was the smaller term, so the clip took their gradient away (PPO's
  // "clip fraction"); 0 for DPOK.
  double clip_fraction = 0.0;
};


namespace detail {
// What DDPO and DPOK share: the pretrained network, the copy they fine-tune, the
// grid, and the sampling of chains and of the fine-tuned model.
template <NoiseSchedule Schedule, TerminalReward Reward>
class PolicyFineTuning {
 public:
  template <class Solver = sde::EulerMaruyama>
  torch::Tensor sample(int64_t n, const torch::Tensor& z, at::Generator& generator,
                       const Solver& solver = Solver()) const {
    return sample_policy(schedule_, policy_, grid_, n, z, generator, solver);
  }
  models::TimeStateMlp& policy() { return policy_; }

 protected:
  PolicyFineTuning(Schedule schedule, const models::TimeStateMlp& pretrained, Reward reward,
                   double dt, int64_t batch)
      : schedule_(std::move(schedule)),
        reward_(std::move(reward)),
        grid_(grid_with_step(schedule_, dt)),
        steps_(euler_steps(schedule_, grid_)),
        batch_(batch),
        pretrained_(std::dynamic_pointer_cast<models::TimeStateMlpImpl>(pretrained->clone())),
        policy_(std::dynamic_pointer_cast<models::TimeStateMlpImpl>(pretrained->clone())) {
    require(batch >= 2, "fine-tuning: batch must be >= 2, found ", batch);
  }

  // A batch of chains from the current model and their terminal rewards [B].
  std::pair<Chains, torch::Tensor> sample_scored_chains(at::Generator& generator) const {
    Chains chains =
        sample_chains(schedule_, policy_, grid_, steps_, batch_, policy_->options().classes, generator);
    torch::Tensor reward = torch::Tensor(reward_(chains.states[-1], chains.z)).to(chains.states.dtype());
    return {std::move(chains), std::move(reward)};
  }

  // Per-step KL [N, B] of transitions with these means to the pretrained ones.
  torch::Tensor kl_to_pretrained(const Chains& chains, const torch::Tensor& means,
                                 const torch::Tensor& stds) {
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = transition_means(pretrained_, grid_, steps_, chains).first;
    }
    return (means - reference).square().sum(2) / (2.0 * stds.square().view({-1, 1}));
  }

  Schedule schedule_;
  Reward reward_;
  sde::TimeGrid grid_;
  std::vector<AffineStep> steps_;  // the Euler-Maruyama steps on grid_, read off the solver once
  int64_t batch_;
  models::TimeStateMlp pretrained_;
  models::TimeStateMlp policy_;
};
}  // namespace detail

struct DdpoOptions {
  double dt = 0.25;
  int64_t batch = 300;
  double learning_rate = 1e-4;
  double clip = 0.2;           // PPO's epsilon: the ratio is clipped to [1 - clip, 1 + clip]
  int64_t inner_epochs = 4;    // gradient steps per sampled batch
};

inline void check_ddpo_options(const DdpoOptions& options) {
  require(options.clip > 0.0, "ddpo: clip must be > 0, found ", options.clip);
  require(options.inner_epochs >= 1, "ddpo: inner_epochs must be >= 1, found ", options.inner_epochs);
}

// Backend: TorchBackend (LibTorch, any device, the default) or EigenBackend<Scalar>
// (CPU; policy_gradient_eigen.hpp), as for QLearning.
template <NoiseSchedule Schedule, TerminalReward Reward, class Backend = TorchBackend>
class Ddpo : public detail::PolicyFineTuning<Schedule, Reward> {
  static_assert(std::same_as<Backend, TorchBackend>,
                "Ddpo: for EigenBackend include diffctl/algorithms/policy_gradient_eigen.hpp");
  using Base = detail::PolicyFineTuning<Schedule, Reward>;

 public:
  // Fine-tunes a copy of `pretrained` (the policy network of a q-learning model).
  Ddpo(Schedule schedule, const models::TimeStateMlp& pretrained, Reward reward, DdpoOptions options = {})
      : Base(std::move(schedule), pretrained, std::move(reward), options.dt, options.batch),
        options_(options),
        optimizer_(this->policy_->parameters(), torch::optim::AdamOptions(options.learning_rate)) {
    check_ddpo_options(options);
  }

  FineTuneStats train_iteration(at::Generator& generator) {
    const auto [chains, reward] = this->sample_scored_chains(generator);
    const torch::Tensor advantage = ((reward - reward.mean()) / (reward.std() + 1e-8)).unsqueeze(0);
    torch::Tensor old_log_probs;
    {
      torch::NoGradGuard no_grad;
      const auto [means, stds] = transition_means(this->policy_, this->grid_, this->steps_, chains);
      old_log_probs = transition_log_probs(means, stds, chains);
    }
    double loss_value = 0.0, kl = 0.0;
    torch::Tensor clipped_terms = torch::zeros({}, torch::TensorOptions(torch::kLong).device(reward.device()));
    for (int64_t epoch = 0; epoch < options_.inner_epochs; ++epoch) {
      const auto [means, stds] = transition_means(this->policy_, this->grid_, this->steps_, chains);
      if (epoch == 0)
        kl = this->kl_to_pretrained(chains, means.detach(), stds).sum(0).mean().template item<double>();
      const torch::Tensor ratio = (transition_log_probs(means, stds, chains) - old_log_probs).exp();
      const torch::Tensor clipped = ratio.clamp(1.0 - options_.clip, 1.0 + options_.clip);
      const torch::Tensor loss = -torch::min(ratio * advantage, clipped * advantage).mean(1).sum(0);
      clipped_terms += (clipped * advantage < ratio * advantage).sum();
      optimizer_.zero_grad();
      loss.backward();
      optimizer_.step();
      loss_value = loss.template item<double>();
    }
    const double terms = double(old_log_probs.numel() * options_.inner_epochs);
    return {reward.mean().template item<double>(), kl, loss_value,
            double(clipped_terms.template item<int64_t>()) / terms};
  }

  void set_learning_rate(double learning_rate) { algorithms::set_learning_rate(optimizer_, learning_rate); }

 private:
  DdpoOptions options_;
  torch::optim::Adam optimizer_;
};

struct DpokOptions {
  double dt = 0.25;
  int64_t batch = 300;
  double learning_rate = 1e-4;   // policy and value baseline
  double reward_weight = 10.0;   // alpha: weight of the reward against the KL
  double kl_weight = 0.01;       // beta: weight of the summed per-step KL
};

inline void check_dpok_options(const DpokOptions& options) {
  require(options.reward_weight > 0.0 && options.kl_weight >= 0.0,
          "dpok: expected reward_weight > 0 and kl_weight >= 0, found ", options.reward_weight, " and ",
          options.kl_weight);
}

// DPOK's value baseline: the policy's shape with one output.
inline models::TimeStateMlpOptions value_network_options(const models::TimeStateMlp& policy) {
  models::TimeStateMlpOptions options = policy->options();
  options.out_dim = 1;
  return options;
}

template <NoiseSchedule Schedule, TerminalReward Reward, class Backend = TorchBackend>
class Dpok : public detail::PolicyFineTuning<Schedule, Reward> {
  static_assert(std::same_as<Backend, TorchBackend>,
                "Dpok: for EigenBackend include diffctl/algorithms/policy_gradient_eigen.hpp");
  using Base = detail::PolicyFineTuning<Schedule, Reward>;

 public:
  Dpok(Schedule schedule, const models::TimeStateMlp& pretrained, Reward reward, DpokOptions options = {})
      : Base(std::move(schedule), pretrained, std::move(reward), options.dt, options.batch),
        options_(options),
        value_(value_network_options(pretrained)),
        optimizer_(parameters_of({this->policy_, value_}), torch::optim::AdamOptions(options.learning_rate)) {
    const torch::Tensor weight = pretrained->parameters().front();
    value_->to(weight.device(), weight.scalar_type());
    check_dpok_options(options);
  }

  models::TimeStateMlp& value() { return value_; }

  FineTuneStats train_iteration(at::Generator& generator) {
    const auto [chains, reward] = this->sample_scored_chains(generator);
    const torch::Tensor target = options_.reward_weight * reward.unsqueeze(0);  // [1, B]
    const int64_t steps = chains.states.size(0) - 1, batch = reward.size(0);
    const auto times = this->grid_.times();
    const torch::Tensor baseline =
        value_->forward(torch::tensor(std::vector<double>(times.begin(), times.end() - 1),
                                      chains.states.options()).repeat_interleave(batch),
                        chains.states.narrow(0, 0, steps).reshape({steps * batch, -1}),
                        chains.z.defined() ? chains.z.repeat({steps}) : torch::Tensor{})
            .view({steps, batch});
    const auto [means, stds] = transition_means(this->policy_, this->grid_, this->steps_, chains);
    const torch::Tensor log_probs = transition_log_probs(means, stds, chains);
    const torch::Tensor kl = this->kl_to_pretrained(chains, means, stds);
    const torch::Tensor policy_loss = -((target - baseline).detach() * log_probs).mean(1).sum(0) +
                                      options_.kl_weight * kl.mean(1).sum(0);
    const torch::Tensor value_loss = (baseline - target).square().mean();
    optimizer_.zero_grad();
    (policy_loss + value_loss).backward();
    optimizer_.step();
    return {reward.mean().template item<double>(), kl.sum(0).mean().template item<double>(),
            policy_loss.template item<double>()};
  }

  void set_learning_rate(double learning_rate) { algorithms::set_learning_rate(optimizer_, learning_rate); }

 private:
  DpokOptions options_;
  models::TimeStateMlp value_;
  torch::optim::Adam optimizer_;
};

}  // namespace diffctl::algorithms
