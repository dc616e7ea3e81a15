#pragma once
// Denoising score matching: the pretraining of an image diffusion model. For data
// x0 and forward time s ~ U(0, T), x_s = alpha(s) x0 + sigma(s) eps and the network
// learns eps from (x_s, s, label) by mean squared error (Ho et al. 2020's "simple"
// loss). Minimising it gives E[eps | x_s] = -sigma(s) * score, so the trained
// network is a score model for every solver (models::EpsilonScore). An exponential
// moving average of the weights is what one samples from: it averages out the last
// steps' noise, the usual practice since DDPM.
//
// Data parallel over a distributed::Group: every rank is given the same global
// batch, draws the whole batch's noise and times, and trains on its shard; the
// gradients are summed over ranks before the step, so N processes take the step
// one process takes on the global batch.

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/gradient_clipping.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/epsilon_score.hpp"
#include "diffctl/models/module_copy.hpp"
#include "diffctl/runtime.hpp"

namespace diffctl::algorithms {

struct DenoisingOptions {
  double learning_rate = 2e-4;
  double weight_decay = 0.0;  // AdamW's decoupled decay
  double ema_decay = 0.999;
  // Gradient clipping by global norm; <= 0 disables it.
  double grad_clip = 1.0;
  // Classifier-free guidance training: each label is replaced by null_label with
  // this probability, so one network learns the conditional and the unconditional
  // model (the network needs num_classes + 1 label embeddings).
  double label_dropout = 0.0;
  int64_t null_label = -1;
  double time_scale = 1000.0;  // as in models::EpsilonScoreOptions
  // Parameters whose name starts with a prefix learn at learning_rate times its
  // factor, e.g. {{"label_emb", 30}} for a class embedding new to a pretrained
  // network: Adam moves a parameter by about its learning rate per step, so an
  // embedding that starts at zero needs a larger rate to matter within a
  // fine-tuning's few hundred steps, where the rest must stay near its weights.
  std::vector<std::pair<std::string, double>> learning_rate_factors{};
  // > 0: each sample's loss weighted by min(SNR, gamma) / SNR (Min-SNR-gamma),
  // SNR = alpha(s)^2 / sigma(s)^2: the low-noise steps, whose epsilon error
  // weighs little in x0, give up their share of the gradient.
  double min_snr_gamma = 0.0;
};

// ema <- decay * ema + (1 - decay) * model for parameters; buffers (BatchNorm
// statistics, if any) are copied, as averaging them has no meaning.
inline void update_ema(const torch::nn::Module& model, torch::nn::Module& ema, double decay) {
  torch::NoGradGuard no_grad;
  const auto params = model.parameters();
  auto averaged = ema.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) averaged[i].lerp_(params[i], 1.0 - decay);
  const auto buffers = model.buffers();
  auto ema_buffers = ema.buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) ema_buffers[i].copy_(buffers[i]);
}

// 0-dim tensors on the model's device: reading them waits for the step, so a
// training loop reads them only when it logs.
struct DenoisingStats {
  torch::Tensor loss;       // mean squared error of the noise prediction
  torch::Tensor grad_norm;  // before clipping
  // By name, for progress lines and logs (reading them waits for the step).
  std::vector<std::pair<std::string, double>> fields() const {
    return {{"loss", loss.item<double>()}, {"grad_norm", grad_norm.item<double>()}};
  }
};

// Trains `model` (an EpsilonNetwork) and keeps `ema`, a second instance of the same
// architecture, as its moving average. Both stay on the device they were given.
template <NoiseSchedule Schedule, EpsilonNetwork Net>
class DenoisingTrainer {
 public:
  DenoisingTrainer(Schedule schedule, Net model, Net ema, DenoisingOptions options = {}, distributed::Group group = {})
      : schedule_(std::move(schedule)),
        model_(std::move(model)),
        ema_(std::move(ema)),
        options_(options),
        group_(std::move(group)),
        optimizer_(parameter_groups(*model_, options),
                   torch::optim::AdamWOptions(options.learning_rate).weight_decay(options.weight_decay)) {
    require(options_.learning_rate > 0.0, "denoising pretraining: learning_rate must be > 0, found ",
            options_.learning_rate);
    require(options_.ema_decay >= 0.0 && options_.ema_decay < 1.0,
            "denoising pretraining: ema_decay must lie in [0, 1), found ", options_.ema_decay);
    require(options_.label_dropout >= 0.0 && options_.label_dropout < 1.0,
            "denoising pretraining: label_dropout must lie in [0, 1), found ", options_.label_dropout);
    require(std::isfinite(options_.min_snr_gamma) && options_.min_snr_gamma >= 0.0,
            "denoising pretraining: min_snr_gamma must be >= 0 (0: no weights), found ", options_.min_snr_gamma);
    require(options_.label_dropout == 0.0 || options_.null_label >= 0,
            "denoising pretraining: label_dropout needs a null_label (an extra class index)");
    group_.broadcast_module(*model_);  // every rank starts from rank 0's weights
    models::copy_weights(*model_, *ema_);
    ema_->eval();
  }

  // One AdamW step on a batch of data x0 [B, ...] in the network's range (images in
  // [-1, 1]) with labels [B] (undefined for an unconditional model). In a group of
  // processes, the global batch, the same on every rank.
  DenoisingStats step(const torch::Tensor& x0, const torch::Tensor& labels,
                      c10::optional<at::Generator> generator = c10::nullopt) {
    require(x0.dim() >= 2 && x0.size(0) > 0, "denoising pretraining: expected a batch [B, ...], found ", x0.sizes());
    model_->train();
    const int64_t batch = x0.size(0);
    const auto options = x0.options();
    const sde::ForwardDraw draw = sde::forward_draw(schedule_, x0, generator);
    const torch::Tensor& x = draw.x;
    const torch::Tensor& eps = draw.eps;
    const torch::Tensor time = torch::tensor(draw.s, torch::kDouble).mul(options_.time_scale).to(options);

    torch::Tensor y = labels;
    if (labels.defined() && options_.label_dropout > 0.0) {
      const torch::Tensor drop =
          torch::rand({batch}, generator, torch::kDouble).lt(options_.label_dropout).to(labels.device());
      y = torch::where(drop, torch::full_like(labels, options_.null_label), labels);
    }

    // The shard's share of the global batch's mean: summed over ranks, the loss and
    // its gradient are the one-process ones.
    const torch::Tensor prediction =
        model_->forward(group_.local_rows(x), group_.local_rows(time), group_.local_rows(y));
    torch::Tensor shard_loss;
    if (options_.min_snr_gamma > 0.0) {
      std::vector<double> weights(draw.s.size());
      // min(SNR, gamma) / SNR, written so that SNR = 0 (pure noise) weighs 1, not 0/0.
      for (std::size_t i = 0; i < weights.size(); ++i) {
        const double snr = std::pow(schedule_.alpha(draw.s[i]) / schedule_.sigma(draw.s[i]), 2);
        weights[i] = std::min(1.0, options_.min_snr_gamma / snr);
      }
      const torch::Tensor weight = group_.local_rows(torch::tensor(weights, torch::kDouble).to(options));
      shard_loss =
          (weight * (prediction - group_.local_rows(eps)).square().flatten(1).sum(1)).sum() / double(eps.numel());
    } else {
      shard_loss = torch::mse_loss(prediction, group_.local_rows(eps), torch::Reduction::Sum) / double(eps.numel());
    }
    optimizer_.zero_grad();
    shard_loss.backward();
    group_.all_reduce_gradients(model_->parameters());
    const torch::Tensor loss = group_.all_reduce_sum(shard_loss.detach());
    // Without clipping the norm is only measured: an infinite bound never scales.
    const torch::Tensor norm =
        clip_grad_norm(model_->parameters(), options_.grad_clip > 0.0 ? options_.grad_clip : INFINITY);
    optimizer_.step();
    update_ema(*model_, *ema_, options_.ema_decay);
    ++steps_;
    return {loss.detach(), norm};
  }

  // The score of the moving average (what to sample from), or of the raw model.
  models::EpsilonScore<Schedule, Net> score(bool use_ema = true, models::EpsilonScoreOptions options = {}) const {
    options.time_scale = options_.time_scale;
    return models::EpsilonScore<Schedule, Net>(schedule_, use_ema ? ema_ : model_, options);
  }

  Net& model() { return model_; }
  Net& ema() { return ema_; }
  torch::optim::AdamW& optimizer() { return optimizer_; }
  int64_t steps() const { return steps_; }
  void set_steps(int64_t steps) { steps_ = steps; }  // when resuming from a checkpoint
  const Schedule& schedule() const { return schedule_; }
  const distributed::Group& group() const { return group_; }

 private:
  // One group at the base rate, then one per factor (a parameter joins the first
  // prefix it starts with).
  static std::vector<torch::optim::OptimizerParamGroup> parameter_groups(const torch::nn::Module& model,
                                                                         const DenoisingOptions& options) {
    std::vector<std::vector<torch::Tensor>> members(options.learning_rate_factors.size() + 1);
    for (const auto& item : model.named_parameters()) {
      std::size_t group = 0;
      for (std::size_t i = 0; i < options.learning_rate_factors.size() && group == 0; ++i)
        if (item.key().rfind(options.learning_rate_factors[i].first, 0) == 0) group = i + 1;
      members[group].push_back(item.value());
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(members[0]);
    for (std::size_t i = 0; i < options.learning_rate_factors.size(); ++i) {
      const double factor = options.learning_rate_factors[i].second;
      require(std::isfinite(factor) && factor > 0.0, "denoising: the learning-rate factor of ",
              options.learning_rate_factors[i].first, " must be > 0, found ", factor);
      require(!members[i + 1].empty(), "denoising: no parameter's name starts with ",
              options.learning_rate_factors[i].first);
      groups.emplace_back(
          members[i + 1],
          std::make_unique<torch::optim::AdamWOptions>(
              torch::optim::AdamWOptions(options.learning_rate * factor).weight_decay(options.weight_decay)));
    }
    return groups;
  }

  Schedule schedule_;
  Net model_, ema_;
  DenoisingOptions options_;
  distributed::Group group_;
  torch::optim::AdamW optimizer_;
  int64_t steps_ = 0;
};

}  // namespace diffctl::algorithms
