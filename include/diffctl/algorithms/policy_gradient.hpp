#pragma once
// The discrete-time fine-tuning baselines, DDPO (Black et al. 2024) and DPOK (Fan
// et al. 2023), for any fine-tunable drift model and any solver with Gaussian steps,
// written once over the chains of either backend (policy_chains.hpp).
//
// Both methods sample chains from the current model, score them with the terminal
// reward and follow the policy gradient of sum_k log p_theta(Y_{k+1} | Y_k). DDPO
// clips the importance ratio as PPO does and has no KL term. DPOK adds, per step,
// the closed-form KL between the fine-tuned and the pretrained transitions, a
// learned value baseline and a weight on the reward. Each states its loss through
// the weights of its terms: the gradient of PPO's clipped objective
// -mean_b min(r A, clip(r) A), r = exp(log p - log p_old), is that of
// sum(w log p) with w = -r A / B where the unclipped term is the smaller (or they
// agree) and 0 where the clip is; DPOK's is that of sum(w log p) + beta sum(KL) / B
// with w = -(alpha h - V) / B, and its value loss mean (V - alpha h)^2 that of
// sum(g V) with g = 2 (V - alpha h) / (N B).
//
//   Ddpo<Schedule, models::EpsilonScore<Schedule, models::UNet>, Reward, sde::Ddpm> ddpo(
//       schedule, pretrained, reward, {.sample = {1, 28, 28}, .classes = 10}, options);
//   Ddpo<Schedule, PolicyScore, Reward, sde::EulerMaruyama, EigenBackend<float>> fast(
//       schedule, PolicyScore(pretrained_network), reward, chain_shape(pretrained_network), options);
//
// Backend: TorchBackend (any drift and solver, any device, data parallel over the
// options' distributed::Group) or, for the MLP policy with Euler-Maruyama,
// EigenBackend<Scalar> (one CPU thread, the gradients written out).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/policy_chains.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"

namespace diffctl::algorithms {

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
class Ddpo : public detail::PolicyChainsOf<Schedule, Drift, Reward, Solver, Backend>::type {
  using Base = typename detail::PolicyChainsOf<Schedule, Drift, Reward, Solver, Backend>::type;
  using Values = typename Base::Values;

 public:
  // Fine-tunes a copy of `pretrained`, whose chains have the given shape.
  Ddpo(Schedule schedule, const Drift& pretrained, Reward reward, ChainShape shape, DdpoOptions options = {},
       Solver solver = Solver())
      : Base(std::move(schedule), pretrained, std::move(reward), std::move(shape),
             {.dt = options.dt, .batch = options.batch, .learning_rate = options.learning_rate, .group = options.group},
             std::move(solver)),
        options_((check_ddpo_options(options), options)) {}

  FineTuneStats train_iteration(at::Generator& generator) {
    namespace values = detail::values;
    this->draw_chains(generator);
    const double whole = this->whole_batch();
    // Advantages normalised over the whole batch's rewards.
    const Values rewards = this->all_rewards();
    const auto mean = values::sum(rewards) / whole;
    const auto spread = values::sqrt(values::sum((rewards - mean).square()) / (whole - 1.0));
    const Values advantage = (this->rewards() - mean) / (spread + 1e-8);
    // The sampling model's log-densities, and its KL to the pretrained model.
    std::vector<Values> old_log_probs;
    auto kl = this->zero();
    this->for_each_pass([&](int64_t first, int64_t count) {
      auto terms = this->pass(first, count, detail::Track::no, true);
      kl = kl + values::sum(terms.kl);
      old_log_probs.push_back(std::move(terms.log_probs));
    });
    auto loss = this->zero(), clipped_terms = this->zero();
    for (int64_t epoch = 0; epoch < options_.inner_epochs; ++epoch) {
      this->zero_grad();
      loss = this->zero();
      std::size_t pass = 0;
      this->for_each_pass([&](int64_t first, int64_t count) {
        const Values log_probs = this->pass(first, count, detail::Track::yes, false).log_probs;
        const Values gain = this->per_sample(advantage, count);
        const Values ratio = (log_probs - old_log_probs[pass++]).exp();
        const Values unclipped = ratio * gain;
        const Values clipped = values::clamp(ratio, 1.0 - options_.clip, 1.0 + options_.clip) * gain;
        const auto clip_active = values::less(clipped, unclipped);
        clipped_terms = clipped_terms + values::count(clip_active);
        loss = loss - values::sum(values::minimum(unclipped, clipped)) / whole;
        this->backward(values::zero_where(clip_active, unclipped * (-1.0 / whole)), 0.0);
      });
      this->step();
    }
    const std::vector<double> totals =
        this->totals({values::sum(this->rewards()) / whole, kl / whole, loss, clipped_terms});
    const double terms = double(this->steps()) * whole * double(options_.inner_epochs);
    return {totals[0], totals[1], totals[2], totals[3] / terms};
  }

 private:
  DdpoOptions options_;
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

template <NoiseSchedule Schedule, TunableDrift Drift, RewardFunction Reward, class Solver = sde::EulerMaruyama,
          class Backend = TorchBackend>
  requires SdeSolver<Solver, Schedule, Drift>
class Dpok : public detail::PolicyChainsOf<Schedule, Drift, Reward, Solver, Backend>::type {
  using Base = typename detail::PolicyChainsOf<Schedule, Drift, Reward, Solver, Backend>::type;
  using Values = typename Base::Values;

 public:
  Dpok(Schedule schedule, const Drift& pretrained, Reward reward, ChainShape shape, DpokOptions options = {},
       Solver solver = Solver())
      : Base(std::move(schedule), pretrained, std::move(reward), std::move(shape),
             {.dt = options.dt,
              .batch = options.batch,
              .learning_rate = options.learning_rate,
              .value_hidden = (check_dpok_options(options), options.value_hidden),
              .group = options.group},
             std::move(solver)),
        options_(options) {}

  // The value baseline's network.
  using Base::value;

  FineTuneStats train_iteration(at::Generator& generator) {
    namespace values = detail::values;
    this->draw_chains(generator);
    const double whole = this->whole_batch(), terms = double(this->steps()) * whole;
    auto policy_loss = this->zero(), kl = this->zero();
    this->zero_grad();
    this->for_each_pass([&](int64_t first, int64_t count) {
      const Values baseline = this->baseline(first, count);
      const Values target = this->per_sample(this->rewards(), count) * options_.reward_weight;
      const auto step = this->pass(first, count, detail::Track::yes, true);
      const Values gap = target - baseline;
      // The shard's share of the batch means.
      const auto step_kl = values::sum(step.kl) / whole;
      policy_loss = policy_loss - values::sum(gap * step.log_probs) / whole + options_.kl_weight * step_kl;
      kl = kl + step_kl;
      this->backward(gap * (-1.0 / whole), options_.kl_weight / whole, (baseline - target) * (2.0 / terms));
    });
    this->step();
    const std::vector<double> totals = this->totals({values::sum(this->rewards()) / whole, kl, policy_loss});
    return {totals[0], totals[1], totals[2]};
  }

 private:
  DpokOptions options_;
};

}  // namespace diffctl::algorithms
