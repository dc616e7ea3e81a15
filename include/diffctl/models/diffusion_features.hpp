#pragma once
// A pretrained diffusion UNet as the backbone of a classifier or reward model.
// The denoiser has learned the data from unlabelled images; its activations at a
// low noise level, average-pooled to a small grid and standardised, are features
// that linear heads read far better than those of a classifier trained on a few
// labels (examples/RESULTS.md, "A reward model that reads the diffusion model":
// the 448-label ensemble's optimum rises from accuracy 0.50 to 0.80).
// reward::SharedBackboneHeads takes it as its Backbone.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/models/module_copy.hpp"
#include "diffctl/models/unet.hpp"

namespace diffctl::models {

struct DiffusionFeaturesOptions {
  // The network's time input for the (clean) images it reads: time_scale * s for
  // forward time s (100 is s = 0.1 for the time_scale 1000 this library trains with).
  double timestep = 100.0;
  // Indices into UNet::stage_outputs; empty: the middle block and the output block after it.
  std::vector<int64_t> stages{};
  int64_t pool = 3;    // each stage average-pooled to pool x pool
  int64_t label = -1;  // the label a conditional network reads (its null label); -1 for an unconditional one
};

class DiffusionFeaturesImpl : public torch::nn::Module {
 public:
  // `network` is copied, frozen and put in evaluation mode.
  DiffusionFeaturesImpl(const UNet& network, DiffusionFeaturesOptions options)
      : network_(register_module("network", clone_module(network))), options_(std::move(options)) {
    const auto& o = network_->options();
    // stage_outputs: levels * (blocks + 1) input stages, the middle block, as many output stages.
    const int64_t middle = static_cast<int64_t>(o.channel_mult.size()) * (o.blocks_per_level + 1);
    if (options_.stages.empty()) options_.stages = {middle, middle + 1};
    require(options_.pool >= 1, "DiffusionFeatures: pool must be >= 1, found ", options_.pool);
    require((o.num_classes == 0) == (options_.label < 0) && options_.label < o.num_classes, "DiffusionFeatures: label ",
            options_.label, " for a network of ", o.num_classes,
            " classes (a conditional network needs its null label, an unconditional one -1)");
    network_->eval();  // before the shape probe below: dropout would draw from the global generator
    for (auto& p : network_->parameters()) p.requires_grad_(false);
    const std::vector<int64_t> channels = stage_channels();
    for (int64_t stage : options_.stages) {
      require(stage >= 0 && stage < static_cast<int64_t>(channels.size()), "DiffusionFeatures: stage ", stage,
              " out of range: the network has ", channels.size(), " stages");
      dim_ += channels[static_cast<std::size_t>(stage)] * options_.pool * options_.pool;
      last_stage_ = std::max(last_stage_, stage);
    }
    const auto device = network_->parameters().front().device();
    mean_ = register_buffer("mean", torch::zeros({dim_}, torch::TensorOptions(device)));
    scale_ = register_buffer("scale", torch::ones({dim_}, torch::TensorOptions(device)));
  }

  // Images [B, C, H, W] in the network's data range -> features [B, feature_dim()].
  torch::Tensor features(const torch::Tensor& x) {
    const auto stages = network_->stage_outputs(x, torch::full({x.size(0)}, options_.timestep, x.options()), labels(x),
                                                last_stage_ + 1);
    std::vector<torch::Tensor> pooled;
    for (int64_t stage : options_.stages)
      pooled.push_back(
          torch::adaptive_avg_pool2d(stages[static_cast<std::size_t>(stage)], {options_.pool, options_.pool})
              .flatten(1));
    return (torch::cat(pooled, 1) - mean_) / scale_;
  }

  // Sets the standardisation (per feature: minus the mean, over the standard
  // deviation) from unlabelled images [N, C, H, W], N >= 2, read in chunks.
  void standardize(const torch::Tensor& images, int64_t chunk = 256) {
    require(images.dim() == 4 && images.size(0) >= 2, "DiffusionFeatures: standardize needs images [N >= 2, C, H, W],",
            " found ", images.sizes());
    torch::NoGradGuard no_grad;
    mean_.zero_();
    scale_.fill_(1.0);
    std::vector<torch::Tensor> parts;
    for (int64_t begin = 0; begin < images.size(0); begin += chunk)
      parts.push_back(features(images.narrow(0, begin, std::min(chunk, images.size(0) - begin)).to(mean_.device())));
    const torch::Tensor all = torch::cat(parts);
    mean_.copy_(all.mean(0));
    scale_.copy_(all.std(0).clamp_min(1e-6));
  }

  // The network stays in evaluation mode (no dropout): features are a fixed function.
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    network_->eval();
  }

  int64_t feature_dim() const { return dim_; }
  const DiffusionFeaturesOptions& options() const { return options_; }

  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    auto copy = std::make_shared<DiffusionFeaturesImpl>(network_, options_);
    copy->to(device.value_or(mean_.device()));
    copy_weights(*this, *copy);
    copy->train(is_training());
    return copy;
  }

 private:
  // Each stage's channel count, from a forward pass of one small image.
  std::vector<int64_t> stage_channels() {
    torch::NoGradGuard no_grad;
    const auto& o = network_->options();
    const auto device = network_->parameters().front().device();
    const torch::Tensor x = torch::zeros({1, o.in_channels, o.image_size, o.image_size}, torch::TensorOptions(device));
    std::vector<int64_t> channels;
    for (const auto& out : network_->stage_outputs(x, torch::zeros({1}, x.options()), labels(x)))
      channels.push_back(out.size(1));
    return channels;
  }

  torch::Tensor labels(const torch::Tensor& x) const {
    return options_.label < 0 ? torch::Tensor{}
                              : torch::full({x.size(0)}, options_.label, torch::TensorOptions(torch::kLong));
  }

  UNet network_;
  DiffusionFeaturesOptions options_;
  int64_t dim_ = 0, last_stage_ = 0;
  torch::Tensor mean_, scale_;
};
TORCH_MODULE(DiffusionFeatures);

}  // namespace diffctl::models
