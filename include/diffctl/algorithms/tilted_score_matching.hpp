#pragma once
// Fine-tuning toward the objective's own optimum by weighted denoising score
// matching, instead of by backpropagation through the sampler.
//
// Over all distributions p, E_p[r] - alpha KL(p || p_pre) - beta KL(p || p_prev)
// is maximised by
//   p*(x) ∝ p_pre(x)^(alpha / (alpha + beta)) p_prev(x)^(beta / (alpha + beta)) exp(r(x) / (alpha + beta)).
// Keep a pool of samples x_i ~ p_pre (free: the pretrained sampler, no oracle).
// When the previous round's model is itself a reweighting of the pool, p_prev ∝
// p_pre w_prev, so is p*:
//   log w_i = beta / (alpha + beta) log w_prev_i + r(x_i) / (alpha + beta) + const,
// so each round's optimum is known in closed form on the pool (retilt(); with
// beta = 0 it is metrics::tilted_optimum's tilt). Denoising score matching on
// pool draws i ~ w, from the pretrained weights on, then distils it into the
// network: the minimiser of the loss is the score of p*'s forward marginals (of the
// pool's weighted empirical p*), whose drift differs from the pretrained one by
// g^2 grad_x log E_pre[exp(r / alpha) | x_t = x], the optimal control, with no
// gradient through the sampler and no reward gradient at all (the reward model
// is only evaluated at the pool's samples).
//
// An unconditional pool serves every prompt: r is [N, classes], one column per
// prompt z, and a step draws z uniformly, then i ~ w(., z).
//
// In practice (examples/RESULTS.md): the pool must be clean samples (a last
// sampler step without noise; residual noise is what denoising at small noise
// levels then learns), and a class embedding new to the pretrained network needs
// a larger learning rate than the body (DenoisingOptions::learning_rate_factors):
// how often each prompt's modes occur is the slowest part of a score to learn.
//
//   algorithms::TiltedScoreMatching<Schedule, models::UNet> tuner(schedule, model, ema, pool, classes,
//                                                                 {.alpha = 1.0, .beta = 0.1});
//   rows = tuner.draw_queries(z, generator);  // pool rows to label for prompts z: the optimum's samples
//   tuner.retilt(rewards);                    // [N, classes], after each refit of the reward model
//   for (...) tuner.step(generator);          // then sample from tuner.trainer().score()

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/denoising_pretraining.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/metrics/tilted_optimum.hpp"

namespace diffctl::algorithms {

struct TiltedScoreMatchingOptions {
  double alpha = 1.0;  // weight of KL(p || p_pre), nats per unit of reward
  double beta = 0.0;   // weight of KL(p || p_prev), the previous round's model
  int64_t batch = 64;  // pool draws per step
  // A fine-tuning's learning rate, and a short moving average: its steps are few.
  DenoisingOptions denoising{.learning_rate = 1e-4, .ema_decay = 0.99};
};

// Per prompt, the round's optimum on the pool.
struct PoolTilt {
  double kl = 0.0;                 // KL(p* || p_pre) estimated on the pool, nats (at most log N)
  double effective_samples = 0.0;  // 1 / sum_i w_i^2
};

template <NoiseSchedule Schedule, EpsilonNetwork Net>
class TiltedScoreMatching {
 public:
  // pool: [N, ...] samples of the pretrained model, in the network's range;
  // classes >= 1 prompts; model starts at the pretrained weights (a conditional
  // network whose prompts it has not yet learned: say a class embedding at zero),
  // ema a second instance.
  TiltedScoreMatching(Schedule schedule, Net model, Net ema, torch::Tensor pool, int64_t classes,
                      TiltedScoreMatchingOptions options = {})
      : trainer_(std::move(schedule), std::move(model), std::move(ema), options.denoising),
        pool_(std::move(pool)),
        classes_(classes),
        options_(options) {
    require(pool_.defined() && pool_.dim() >= 2 && pool_.size(0) >= 1,
            "tilted score matching: expected a pool [N, ...] of N >= 1 samples, found ",
            pool_.defined() ? pool_.sizes() : torch::IntArrayRef{});
    require(classes >= 1, "tilted score matching: needs >= 1 prompt class, found ", classes);
    require(std::isfinite(options.alpha) && options.alpha > 0.0 && std::isfinite(options.beta) && options.beta >= 0.0,
            "tilted score matching: alpha must be > 0 and beta >= 0, found ", options.alpha, " and ", options.beta);
    require(options.batch >= 1, "tilted score matching: batch must be >= 1, found ", options.batch);
    // Before any reward: the pretrained model itself, uniform weights.
    log_weights_ = torch::full({pool_.size(0), classes}, -std::log(double(pool_.size(0))), torch::kDouble);
    asked_ = torch::zeros({pool_.size(0), classes}, torch::kBool);
  }

  // The round's optimum after the reward model changed: rewards [N, classes] are
  // r(x_i, z) at the pool's samples (the optimistic reward, for SEIKO). The
  // previous weights stand for p_prev (beta's trust region). Returns each prompt's
  // KL to the pretrained model and effective samples.
  std::vector<PoolTilt> retilt(const torch::Tensor& rewards) {
    require(rewards.defined() && rewards.dim() == 2 && rewards.size(0) == pool_.size(0) && rewards.size(1) == classes_,
            "tilted score matching: expected rewards [", pool_.size(0), ", ", classes_, "], found ",
            rewards.defined() ? rewards.sizes() : torch::IntArrayRef{});
    const torch::Tensor r = rewards.detach().to(torch::kCPU, torch::kDouble);
    require(torch::isfinite(r).all().item<bool>(), "tilted score matching: the rewards must be finite");
    const double total = options_.alpha + options_.beta;
    // tilted_optimum(s, 1) normalises exp(s): s = beta/(alpha+beta) log w_prev + r/(alpha+beta).
    const torch::Tensor exponent = (options_.beta / total) * log_weights_ + r / total;
    std::vector<PoolTilt> tilts;
    std::vector<torch::Tensor> columns;
    for (int64_t c = 0; c < classes_; ++c) {
      const metrics::TiltedOptimum tilt = metrics::tilted_optimum(exponent.select(1, c), 1.0);
      columns.push_back(tilt.log_weights);
      tilts.push_back({tilt.kl, tilt.effective_samples});
    }
    log_weights_ = torch::stack(columns, 1);
    return tilts;
  }

  // One denoising step on a batch of pool draws: prompts z uniform, i ~ w(., z).
  DenoisingStats step(at::Generator& generator) {
    const torch::Tensor z = torch::randint(classes_, {options_.batch}, generator, torch::kLong);
    const torch::Tensor probabilities = log_weights_.t().index_select(0, z).exp();
    const torch::Tensor rows = torch::multinomial(probabilities, 1, /*replacement=*/true, generator).squeeze(1);
    const torch::Tensor x0 = pool_.index_select(0, rows.to(pool_.device()));
    return trainer_.step(x0, z.to(pool_.device()), generator);
  }

  // Pool rows to label, one for each prompt of z [n]: draws from that prompt's
  // current optimum (uniform before the first retilt: the pretrained model),
  // without replacement, and never a (row, prompt) pair drawn by an earlier call.
  // These are samples of the model the objective asks for, exactly; the network
  // distilled from it lags behind it (it learns rare modes last), and labels
  // asked of the network's samples would lag with it. Each prompt's rows are in
  // the order drawn; z's order is kept.
  torch::Tensor draw_queries(const torch::Tensor& z, at::Generator& generator) {
    require(z.defined() && z.dim() == 1 && z.scalar_type() == torch::kLong,
            "tilted score matching: expected prompts z [n] of int64, found ",
            z.defined() ? z.sizes() : torch::IntArrayRef{});
    const torch::Tensor prompts = z.to(torch::kCPU);
    require(prompts.numel() == 0 || (prompts.min().item<int64_t>() >= 0 && prompts.max().item<int64_t>() < classes_),
            "tilted score matching: prompts must lie in [0, ", classes_, ")");
    torch::Tensor rows = torch::empty({prompts.size(0)}, torch::kLong);
    for (int64_t c = 0; c < classes_; ++c) {
      const torch::Tensor at = prompts.eq(c).nonzero().squeeze(1);
      const int64_t count = at.size(0);
      if (count == 0) continue;
      const torch::Tensor open = asked_.select(1, c).logical_not();
      const int64_t left = open.sum().item<int64_t>();
      require(count <= left, "tilted score matching: prompt ", c, " asks for ", count, " rows, but only ", left,
              " of the pool's ", pool_.size(0), " are not labelled yet for it");
      // Gumbel top-k on the log weights: successive draws without replacement, and
      // rows whose weight underflows to 0 (a sharp tilt) still come, last.
      const torch::Tensor uniform = torch::rand({pool_.size(0)}, generator, torch::kDouble);
      const torch::Tensor keys =
          torch::where(open, log_weights_.select(1, c) - (-uniform.clamp_min(1e-300).log()).log(),
                       -std::numeric_limits<double>::infinity());
      const torch::Tensor picked = std::get<1>(keys.topk(count));
      rows.index_put_({at}, picked);
      asked_.select(1, c).index_fill_(0, picked, true);
    }
    return rows;
  }

  // [N, classes]: which (row, prompt) pairs draw_queries has handed out.
  const torch::Tensor& asked() const { return asked_; }

  // The network, its moving average, the optimiser's state, the tilt and the pairs
  // asked, for a round's checkpoint (the pool is the caller's: it is written once).
  void add_to(io::Checkpoint& checkpoint) {
    checkpoint.modules.emplace_back("model", trainer_.model().ptr().get());
    checkpoint.modules.emplace_back("ema", trainer_.ema().ptr().get());
    checkpoint.optimizers.emplace_back("adamw", &trainer_.optimizer());
    checkpoint.tensors.emplace_back("log_weights", &log_weights_);
    checkpoint.tensors.emplace_back("asked", &asked_);
  }

  // [N, classes] log w, each column normalised (logsumexp 0), in double on the CPU.
  const torch::Tensor& log_weights() const { return log_weights_; }
  const torch::Tensor& pool() const { return pool_; }
  DenoisingTrainer<Schedule, Net>& trainer() { return trainer_; }

 private:
  DenoisingTrainer<Schedule, Net> trainer_;
  torch::Tensor pool_;
  int64_t classes_;
  TiltedScoreMatchingOptions options_;
  torch::Tensor log_weights_;
  torch::Tensor asked_;
};

}  // namespace diffctl::algorithms
