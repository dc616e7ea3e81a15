#pragma once
// ResNet18, CIFAR variant: a 3x3 stride-1 stem convolution and no max-pool, then
// torchvision's four stages of two BasicBlocks, global average pooling and a linear
// head. Names follow torchvision (conv1, bn1, layer1.0.conv1, layer1.0.bn1, ...,
// layer2.0.downsample.0 (1x1 conv) / .1 (BatchNorm), fc), so its checkpoints map
// name for name (apart from the stem's kernel size). Width 1 on 3-channel images
// with 10 classes has 11,173,962 parameters.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/models/module_copy.hpp"

namespace diffctl::models {

struct ResNet18Options {
  int64_t in_channels = 3;
  int64_t num_classes = 10;
  // Channel multiplier: the stages have round(64 * width) * {1, 2, 4, 8} channels
  // (at least 1 * {1, 2, 4, 8}); width 0.25 gives 16, 32, 64, 128.
  double width = 1.0;
};

namespace detail {

inline torch::nn::Conv2d resnet_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

// torchvision's BasicBlock: two 3x3 convs with BatchNorm, and a 1x1 conv + BatchNorm
// shortcut (`downsample`) where the stride or the channel count changes.
class ResNetBasicBlockImpl : public torch::nn::Module {
 public:
  ResNetBasicBlockImpl(int64_t in, int64_t out, int64_t stride) {
    conv1_ = register_module("conv1", resnet_conv(in, out, 3, stride));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(out));
    conv2_ = register_module("conv2", resnet_conv(out, out, 3, 1));
    bn2_ = register_module("bn2", torch::nn::BatchNorm2d(out));
    if (stride != 1 || in != out)
      downsample_ = register_module(
          "downsample", torch::nn::Sequential(resnet_conv(in, out, 1, stride), torch::nn::BatchNorm2d(out)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::relu(bn1_(conv1_(x)));
    h = bn2_(conv2_(h));
    return torch::relu(h + (downsample_ ? downsample_->forward(x) : x));
  }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};

}  // namespace detail

class ResNet18Impl : public torch::nn::Module {
 public:
  explicit ResNet18Impl(ResNet18Options options) : options_(options) {
    require(options.in_channels >= 1 && options.num_classes >= 1,
            "ResNet18: in_channels and num_classes must be >= 1, found ", options.in_channels, ", ",
            options.num_classes);
    require(std::isfinite(options.width) && options.width > 0.0, "ResNet18: width must be > 0, found ", options.width);
    base_ = std::max<int64_t>(1, std::llround(64.0 * options.width));
    conv1_ = register_module("conv1", detail::resnet_conv(options.in_channels, base_, 3, 1));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(base_));
    int64_t in = base_;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t out = base_ << stage;
      auto list = register_module("layer" + std::to_string(stage + 1), torch::nn::ModuleList());
      for (int block = 0; block < 2; ++block) {
        auto layer = std::make_shared<detail::ResNetBasicBlockImpl>(in, out, stage > 0 && block == 0 ? 2 : 1);
        list->push_back(layer);
        blocks_.push_back(std::move(layer));
        in = out;
      }
    }
    fc_ = register_module("fc", torch::nn::Linear(feature_dim(), options.num_classes));
    // torchvision's initialisation: He-normal (fan-out) convs, BatchNorm at (1, 0).
    torch::NoGradGuard no_grad;
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* conv = module->as<torch::nn::Conv2d>())
        torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    }
  }

  // x [B, in_channels, H, W] -> logits [B, num_classes].
  torch::Tensor forward(const torch::Tensor& x) { return fc_(features(x)); }

  // The penultimate layer: globally average-pooled features [B, feature_dim()].
  torch::Tensor features(const torch::Tensor& x) {
    require(x.defined() && x.dim() == 4 && x.size(1) == options_.in_channels, "ResNet18: x must be [B, ",
            options_.in_channels, ", H, W], found ", x.defined() ? x.sizes() : torch::IntArrayRef{});
    torch::Tensor h = torch::relu(bn1_(conv1_(x)));
    for (auto& block : blocks_) h = block->forward(h);
    return h.mean({2, 3});
  }

  int64_t feature_dim() const { return 8 * base_; }
  // The final linear layer (features -> logits).
  torch::nn::Linear& head() { return fc_; }
  const ResNet18Options& options() const { return options_; }

  // A deep copy (same parameters, BatchNorm statistics, device, dtype and mode).
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override {
    return deep_copy(*this, options_, device);
  }

 private:
  ResNet18Options options_;
  int64_t base_ = 64;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<std::shared_ptr<detail::ResNetBasicBlockImpl>> blocks_;
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(ResNet18);

}  // namespace diffctl::models
