#pragma once
// Supervised training of an image classifier (the ResNet18 reward models): cross
// entropy, SGD with Nesterov momentum or AdamW, a cosine learning-rate schedule with
// a short linear warm-up, and flip/crop augmentation. The same routine trains the
// strong classifier (the oracle) and the deliberately weak one (the initial reward
// model: few examples, few steps), on clean images or, noise-aware, on draws of a
// diffusion model's forward process.
//
// Data parallel over a distributed::Group as DenoisingTrainer is (the global batch
// on every rank, augmented alike, each rank training on its shard). BatchNorm
// normalises each shard by its own statistics, as PyTorch's DDP does without
// SyncBatchNorm, so N processes match one only up to that; the running statistics
// are rank 0's on every rank after each step.

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numbers>

#include <torch/torch.h>

#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"

namespace diffctl::algorithms {

enum class ClassifierOptimizer { sgd, adamw };

struct ClassifierTrainingOptions {
  int64_t steps = 1000;  // length of the cosine schedule
  ClassifierOptimizer optimizer = ClassifierOptimizer::sgd;
  double learning_rate = 0.05;  // peak; SGD wants ~0.05-0.1, AdamW ~1e-3
  double momentum = 0.9;        // SGD only (Nesterov)
  double weight_decay = 5e-4;
  int64_t warmup_steps = 50;
  // Augmentation: random horizontal flips, and random crops after padding each
  // side by crop_padding pixels of the background value (-1 in [-1, 1] images).
  bool flip = true;
  int64_t crop_padding = 2;
  double background = -1.0;
  // Noise-aware training, for a classifier of the noisy state x_s (the reward model
  // that classifier guidance and a noise-aware SEIKO ensemble read): when set, each
  // augmented batch is replaced by forward_noise(batch, generator), a draw of the
  // diffusion model's forward process (sde::forward_noise(schedule)).
  std::function<torch::Tensor(const torch::Tensor&, const c10::optional<at::Generator>&)> forward_noise{};
};

// Random flips and translations, per sample, drawn from `generator`.
inline torch::Tensor augment_images(const torch::Tensor& images, bool flip, int64_t padding, double background,
                                    c10::optional<at::Generator> generator) {
  torch::Tensor x = images;
  const int64_t batch = x.size(0);
  if (flip) {
    const torch::Tensor mask =
        torch::rand({batch}, generator, torch::kDouble).lt(0.5).to(x.device()).view({batch, 1, 1, 1});
    x = torch::where(mask, x.flip({3}), x);
  }
  if (padding > 0) {
    const int64_t h = x.size(2), w = x.size(3);
    const torch::Tensor padded = torch::constant_pad_nd(x, {padding, padding, padding, padding}, background);
    const torch::Tensor offsets = torch::randint(0, 2 * padding + 1, {batch, 2}, generator, torch::kLong);
    const auto* o = offsets.data_ptr<int64_t>();
    std::vector<torch::Tensor> crops;
    crops.reserve(static_cast<std::size_t>(batch));
    for (int64_t i = 0; i < batch; ++i) crops.push_back(padded[i].narrow(1, o[2 * i], h).narrow(2, o[2 * i + 1], w));
    x = torch::stack(crops);
  }
  return x;
}

// loss and accuracy are 0-dim tensors on the model's device: reading them waits
// for the step, so a training loop reads them only when it logs.
struct ClassifierStats {
  torch::Tensor loss;
  torch::Tensor accuracy;  // on the (augmented) training batch
  double learning_rate;
};

// Trains a module holder whose module maps images [B, C, H, W] to logits [B, K].
template <class Net>
class ClassifierTrainer {
 public:
  ClassifierTrainer(Net model, ClassifierTrainingOptions options, distributed::Group group = {})
      : model_(std::move(model)), options_(options), group_(std::move(group)) {
    require(options_.steps >= 1, "classifier training: steps must be >= 1, found ", options_.steps);
    require(options_.learning_rate > 0.0, "classifier training: learning_rate must be > 0, found ",
            options_.learning_rate);
    require(options_.warmup_steps >= 0 && options_.crop_padding >= 0,
            "classifier training: warmup_steps and crop_padding must be >= 0");
    if (options_.optimizer == ClassifierOptimizer::sgd)
      optimizer_ =
          std::make_unique<torch::optim::SGD>(model_->parameters(), torch::optim::SGDOptions(options_.learning_rate)
                                                                        .momentum(options_.momentum)
                                                                        .nesterov(options_.momentum > 0.0)
                                                                        .weight_decay(options_.weight_decay));
    else
      optimizer_ = std::make_unique<torch::optim::AdamW>(
          model_->parameters(), torch::optim::AdamWOptions(options_.learning_rate).weight_decay(options_.weight_decay));
    group_.broadcast_module(*model_);
  }

  // The learning rate at `step`: linear warm-up, then cosine decay to zero at `steps`.
  double learning_rate(int64_t step) const {
    if (step < options_.warmup_steps) return options_.learning_rate * double(step + 1) / double(options_.warmup_steps);
    const double progress = std::min(1.0, double(step - options_.warmup_steps) /
                                              double(std::max<int64_t>(1, options_.steps - options_.warmup_steps)));
    return 0.5 * options_.learning_rate * (1.0 + std::cos(std::numbers::pi * progress));
  }

  // One step on images [B, C, H, W] in [-1, 1] with labels [B]; in a group of
  // processes, the global batch, the same on every rank.
  ClassifierStats step(const torch::Tensor& images, const torch::Tensor& labels,
                       c10::optional<at::Generator> generator = c10::nullopt) {
    require(images.dim() == 4 && labels.dim() == 1 && labels.size(0) == images.size(0),
            "classifier training: expected images [B, C, H, W] and labels [B], found ", images.sizes(), " and ",
            labels.sizes());
    const int64_t batch = images.size(0);
    const double rate = learning_rate(steps_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(rate);
    model_->train();
    torch::Tensor x = augment_images(images, options_.flip, options_.crop_padding, options_.background, generator);
    if (options_.forward_noise) x = options_.forward_noise(x, generator);
    const torch::Tensor shard_labels = group_.local_rows(labels);
    const torch::Tensor logits = model_->forward(group_.local_rows(x));
    // Sums over the shard divided by the global batch: summed over ranks, the mean.
    const torch::Tensor shard_loss =
        torch::nn::functional::cross_entropy(logits, shard_labels,
                                             torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
        double(batch);
    optimizer_->zero_grad();
    shard_loss.backward();
    group_.all_reduce_gradients(model_->parameters());
    optimizer_->step();
    group_.broadcast_buffers(*model_);
    ++steps_;
    const torch::Tensor correct = logits.detach().argmax(1).eq(shard_labels).to(torch::kFloat).sum() / double(batch);
    const torch::Tensor sums = group_.all_reduce_scalars({shard_loss, correct});
    return {sums[0], sums[1], rate};
  }

  Net& model() { return model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  int64_t steps() const { return steps_; }
  void set_steps(int64_t steps) { steps_ = steps; }  // when resuming from a checkpoint

 private:
  Net model_;
  ClassifierTrainingOptions options_;
  distributed::Group group_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t steps_ = 0;
};

}  // namespace diffctl::algorithms
