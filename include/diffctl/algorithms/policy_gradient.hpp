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
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"

namespace diffctl::algorithms {

// A batch of chains Y_0 .. Y_N [N+1, B, d] and their conditions z [B] (or undefined).
struct Chains {
  torch::Tensor states;
  torch::Tensor z;
};

// The Euler-Maruyama chain of the model whose score is `policy`, as its states.
template <NoiseSchedule Schedule>
Chains sample_chains(const Schedule& schedule, const models::TimeStateMlp& policy,
                     const sde::TimeGrid& grid, int64_t batch, int64_t classes,
                     at::Generator& generator) {
  torch::NoGradGuard no_grad;
  const auto device = policy->parameters().front().device();
  const auto opts = torch::TensorOptions(torch::kFloat).device(device);
  const torch::Tensor z = classes > 0
                              ? torch::randint(classes, {batch}, generator, torch::kLong).to(device)
                              : torch::Tensor{};
  sde::IntegrateOptions options;
  options.generator = generator;
  options.record_times.assign(grid.times().begin(), grid.times().end());
  options.record_x0 = false;
  const auto trajectory =
      sde::integrate(schedule, PolicyScore(policy), sde::EulerMaruyama{}, grid,
                     sde::sample_prior(schedule, {batch, policy->options().state_dim}, generator, opts),
                     z, options);
  return {torch::stack(trajectory.states), z};
}

// The per-step transition means [N, B, d] of the chain under `policy`, from all
// (t_k, Y_k) in one pass, and the steps' standard deviations g sqrt(dt) [N].
template <NoiseSchedule Schedule>
std::pair<torch::Tensor, torch::Tensor> transition_means(const Schedule& schedule,
                                                         models::TimeStateMlp& policy,
                                                         const sde::TimeGrid& grid,
                                                         const Chains& chains) {
  const int64_t steps = static_cast<int64_t>(grid.steps());
  const int64_t batch = chains.states.size(1), dim = chains.states.size(2);
  const auto opts = chains.states.options();
  std::vector<double> times, keep, push, stds;
  for (std::size_t k = 0; k < grid.steps(); ++k) {
    const double t = grid[k], dt = grid[k + 1] - t, s = schedule.horizon() - t;
    const double g = schedule.diffusion(s);
    times.push_back(t);
    keep.push_back(1.0 - dt * schedule.drift_coef(s));
    push.push_back(dt * g * g);
    stds.push_back(g * std::sqrt(dt));
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
        batch_(batch),
        pretrained_(std::dynamic_pointer_cast<models::TimeStateMlpImpl>(pretrained->clone())),
        policy_(std::dynamic_pointer_cast<models::TimeStateMlpImpl>(pretrained->clone())) {
    require(batch >= 2, "fine-tuning: batch must be >= 2, found ", batch);
  }

  // A batch of chains from the current model and their terminal rewards [B].
  std::pair<Chains, torch::Tensor> sample_scored_chains(at::Generator& generator) const {
    Chains chains =
        sample_chains(schedule_, policy_, grid_, batch_, policy_->options().classes, generator);
    torch::Tensor reward = torch::Tensor(reward_(chains.states[-1], chains.z)).to(torch::kFloat);
    return {std::move(chains), std::move(reward)};
  }

  // Per-step KL [N, B] of transitions with these means to the pretrained ones.
  torch::Tensor kl_to_pretrained(const Chains& chains, const torch::Tensor& means,
                                 const torch::Tensor& stds) {
    torch::Tensor reference;
    {
      torch::NoGradGuard no_grad;
      reference = transition_means(schedule_, pretrained_, grid_, chains).first;
    }
    return (means - reference).square().sum(2) / (2.0 * stds.square().view({-1, 1}));
  }

  Schedule schedule_;
  Reward reward_;
  sde::TimeGrid grid_;
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

template <NoiseSchedule Schedule, TerminalReward Reward>
class Ddpo : public detail::PolicyFineTuning<Schedule, Reward> {
  using Base = detail::PolicyFineTuning<Schedule, Reward>;

 public:
  // Fine-tunes a copy of `pretrained` (the policy network of a q-learning model).
  Ddpo(Schedule schedule, const models::TimeStateMlp& pretrained, Reward reward, DdpoOptions options = {})
      : Base(std::move(schedule), pretrained, std::move(reward), options.dt, options.batch),
        options_(options),
        optimizer_(this->policy_->parameters(), torch::optim::AdamOptions(options.learning_rate)) {
    require(options.clip > 0.0, "ddpo: clip must be > 0, found ", options.clip);
    require(options.inner_epochs >= 1, "ddpo: inner_epochs must be >= 1, found ", options.inner_epochs);
  }

  FineTuneStats train_iteration(at::Generator& generator) {
    const auto [chains, reward] = this->sample_scored_chains(generator);
    const torch::Tensor advantage = ((reward - reward.mean()) / (reward.std() + 1e-8)).unsqueeze(0);
    torch::Tensor old_log_probs;
    {
      torch::NoGradGuard no_grad;
      const auto [means, stds] = transition_means(this->schedule_, this->policy_, this->grid_, chains);
      old_log_probs = transition_log_probs(means, stds, chains);
    }
    double loss_value = 0.0, kl = 0.0;
    for (int64_t epoch = 0; epoch < options_.inner_epochs; ++epoch) {
      const auto [means, stds] = transition_means(this->schedule_, this->policy_, this->grid_, chains);
      if (epoch == 0)
        kl = this->kl_to_pretrained(chains, means.detach(), stds).sum(0).mean().template item<double>();
      const torch::Tensor ratio = (transition_log_probs(means, stds, chains) - old_log_probs).exp();
      const torch::Tensor clipped = ratio.clamp(1.0 - options_.clip, 1.0 + options_.clip);
      const torch::Tensor loss = -torch::min(ratio * advantage, clipped * advantage).mean(1).sum(0);
      optimizer_.zero_grad();
      loss.backward();
      optimizer_.step();
      loss_value = loss.template item<double>();
    }
    return {reward.mean().template item<double>(), kl, loss_value};
  }

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

template <NoiseSchedule Schedule, TerminalReward Reward>
class Dpok : public detail::PolicyFineTuning<Schedule, Reward> {
  using Base = detail::PolicyFineTuning<Schedule, Reward>;

 public:
  Dpok(Schedule schedule, const models::TimeStateMlp& pretrained, Reward reward, DpokOptions options = {})
      : Base(std::move(schedule), pretrained, std::move(reward), options.dt, options.batch),
        options_(options),
        value_(models::TimeStateMlpOptions{pretrained->options().state_dim, 1,
                                           pretrained->options().classes, pretrained->options().hidden}),
        optimizer_(parameters_of({this->policy_, value_}), torch::optim::AdamOptions(options.learning_rate)) {
    value_->to(pretrained->parameters().front().device());
    require(options.reward_weight > 0.0 && options.kl_weight >= 0.0,
            "dpok: expected reward_weight > 0 and kl_weight >= 0, found ", options.reward_weight,
            " and ", options.kl_weight);
  }

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
    const auto [means, stds] = transition_means(this->schedule_, this->policy_, this->grid_, chains);
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

 private:
  DpokOptions options_;
  models::TimeStateMlp value_;
  torch::optim::Adam optimizer_;
};

}  // namespace diffctl::algorithms
