#pragma once
// Control policies nu: the impulse u = nu(t, x, z) applied at a control time t.
// A fine-tuning algorithm trains a policy's parameters, keeps a snapshot of it as
// the previous round's policy and stores it in checkpoints, so a policy type here
// offers control(), parameters(), snapshot() and add_to().
//
//   ZeroControl          no control (the pretrained sampler, and the greedy-drift baseline)
//   NetworkControl<Net>  u = net(t, x, z) for a module holder whose forward takes
//                        (t [B], x [B, ...], z [B] or undefined) and returns x's shape:
//                        models::TimeStateMlp for vectors, ImageControlNet for images.
//                        Its last layer starts at zero, so training starts from "no
//                        control", i.e. from the pretrained model.
//   Guided<Residual>     u = w G + residual(t, x, z): a learnable gain w > 0 times the
//                        guidance G that the fine-tuning algorithm computes from the
//                        reward model's gradient (ContinuousSeiko: at the Tweedie
//                        estimate x0_hat(x_t), over the control's span), plus a learned
//                        correction that starts at zero. Fine-tuning then corrects
//                        guidance instead of finding the reward's direction from nothing.
//   Held<Policy>         the same control, held: set at a control time t_k, u / D is
//                        added to the drift until the next measured time t_{k+1}
//                        (D = t_{k+1} - t_k), so that u is still the displacement it
//                        makes, at the output scale of an impulse, and it costs
//                        |u|^2 / (2 sigma^2 D) nats, where an impulse over a step of
//                        length h costs |u|^2 / (2 sigma^2 h), without bound as the
//                        grid refines.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/models/module_copy.hpp"
#include "diffctl/sde/schedules.hpp"

namespace diffctl::policy {

struct ZeroControl {
  torch::Tensor control(double, const torch::Tensor& x, const torch::Tensor&) const { return torch::zeros_like(x); }
  std::vector<torch::Tensor> parameters() const { return {}; }
  ZeroControl snapshot() const { return {}; }
  void add_to(io::Checkpoint&, const std::string&) {}
};

template <class Net>
class NetworkControl {
 public:
  // With zero_last_layer, the network's final weight and bias are set to zero.
  explicit NetworkControl(Net net, bool zero_last_layer = true) : net_(std::move(net)) {
    if (zero_last_layer) {
      torch::NoGradGuard no_grad;
      auto parameters = net_->parameters();
      require(parameters.size() >= 2, "NetworkControl: the network needs a final weight and bias");
      for (std::size_t i = parameters.size() - 2; i < parameters.size(); ++i) parameters[i].zero_();
    }
  }

  torch::Tensor control(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    return net_.ptr()->forward(torch::full({x.size(0)}, t, x.options()), x, z);
  }
  std::vector<torch::Tensor> parameters() const { return net_->parameters(); }
  // An independent copy with the current weights (the previous round's policy).
  NetworkControl snapshot() const { return NetworkControl(models::clone_module(net_), false); }
  void add_to(io::Checkpoint& checkpoint, const std::string& prefix) {
    checkpoint.modules.emplace_back(prefix + "policy", net_.ptr().get());
  }
  Net& network() { return net_; }

 private:
  Net net_;
};

struct GuidedOptions {
  double gain = 1.0;       // w at the start (1 / alpha: the guidance of the tilt exp(r / alpha))
  bool learn_gain = true;  // whether fine-tuning trains w
  // w = gain exp(gain_rate theta) with theta trained from 0: Adam moves theta by
  // about its learning rate per step, so gain_rate sets how fast w can change
  // (x e^1 per 1 / (gain_rate lr) steps), as class_image_scale does for images.
  double gain_rate = 10.0;
};

template <class Residual>
class Guided {
 public:
  // A gain fixed at 0 makes the policy the residual alone (and the guidance unused).
  Guided(Residual residual, GuidedOptions options = {})
      : residual_(std::move(residual)),
        options_(options),
        log_gain_(torch::zeros({}).requires_grad_(options.learn_gain)) {
    require(std::isfinite(options.gain) && options.gain >= 0.0 && std::isfinite(options.gain_rate) &&
                options.gain_rate > 0.0,
            "Guided: the gain must be finite and >= 0 and the gain rate > 0, found ", options.gain, " and ",
            options.gain_rate);
  }

  torch::Tensor control(double t, const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& guidance) const {
    if (!guided()) return residual_.control(t, x, z);
    require(guidance.sizes() == x.sizes(), "Guided: the guidance ", guidance.sizes(), " must have the state's shape ",
            x.sizes());
    return gain_tensor().to(x.device(), x.scalar_type()) * guidance + residual_.control(t, x, z);
  }
  bool guided() const { return options_.gain != 0.0; }
  std::vector<torch::Tensor> parameters() const {
    std::vector<torch::Tensor> all = residual_.parameters();
    if (options_.learn_gain && guided()) all.push_back(log_gain_);
    return all;
  }
  Guided snapshot() const {
    Guided copy(residual_.snapshot(), options_);
    copy.log_gain_ = log_gain_.detach().clone().requires_grad_(log_gain_.requires_grad());
    return copy;
  }
  void add_to(io::Checkpoint& checkpoint, const std::string& prefix) {
    residual_.add_to(checkpoint, prefix);
    checkpoint.tensors.emplace_back(prefix + "guidance_log_gain", &log_gain_);
  }
  // The current gain w.
  double gain() const { return gain_tensor().template item<double>(); }
  Residual& residual() { return residual_; }

 private:
  torch::Tensor gain_tensor() const { return options_.gain * (options_.gain_rate * log_gain_).exp(); }

  Residual residual_;
  GuidedOptions options_;
  torch::Tensor log_gain_;  // theta
};

// The control that turns one sampler into another: held for one step of length
// h, u = mean of the solver's step under the target model - mean under the base
// model (for Euler-Maruyama h g^2 (score_target - score_base)), so the controlled
// base sampler makes exactly the target's steps, and the path KL ContinuousSeiko
// measures is the KL between the two samplers. With base the pretrained
// unconditional model and target a class-conditional model of the same data, it is
// the optimal control of r = log p(z | x), alpha = 1 (g^2 grad log p_t(z | x_t), by
// Bayes' rule on the two scores) as exactly as the two models are: a reference
// for fine-tuning's reward and KL. Use it with a uniform grid of step h measured
// at every step (ContinuousSeiko's measure_every = 1); nothing to train.
template <NoiseSchedule Schedule, class Solver, DriftModel Target, DriftModel Base>
  requires SdeSolver<Solver, Schedule, Target> && SdeSolver<Solver, Schedule, Base>
class DriftDifference {
 public:
  static constexpr bool holds_control = true;

  DriftDifference(Schedule schedule, Solver solver, Target target, Base base, double step)
      : schedule_(std::move(schedule)),
        solver_(std::move(solver)),
        target_(std::move(target)),
        base_(std::move(base)),
        step_(step) {
    require(step > 0.0 && std::isfinite(step), "DriftDifference: the step must be > 0, found ", step);
  }
  torch::Tensor control(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    torch::NoGradGuard no_grad;
    const double t_next = std::min(t + step_, schedule_.horizon());
    return solver_.transition(schedule_, target_, t, t_next, x, z).mean -
           solver_.transition(schedule_, base_, t, t_next, x, z).mean;
  }
  std::vector<torch::Tensor> parameters() const { return {}; }
  DriftDifference snapshot() const { return *this; }
  void add_to(io::Checkpoint&, const std::string&) {}

 private:
  Schedule schedule_;
  Solver solver_;
  Target target_;
  Base base_;
  double step_;
};

template <class Policy>
class Held {
 public:
  static constexpr bool holds_control = true;

  explicit Held(Policy policy) : policy_(std::move(policy)) {}
  torch::Tensor control(double t, const torch::Tensor& x, const torch::Tensor& z) const requires ControlPolicy<Policy> {
    return policy_.control(t, x, z);
  }
  torch::Tensor control(double t, const torch::Tensor& x, const torch::Tensor& z,
                        const torch::Tensor& guidance) const requires GuidedControl<Policy> {
    return policy_.control(t, x, z, guidance);
  }
  bool guided() const requires GuidedControl<Policy> { return policy_.guided(); }
  std::vector<torch::Tensor> parameters() const { return policy_.parameters(); }
  Held snapshot() const { return Held(policy_.snapshot()); }
  void add_to(io::Checkpoint& checkpoint, const std::string& prefix) { policy_.add_to(checkpoint, prefix); }
  Policy& policy() { return policy_; }

 private:
  Policy policy_;
};

// A small convolutional control for images:
//   u(t, x, z) = conv3(silu(conv2(silu(conv1([x, t, e_z]))))) + A_z + t B_z,
// three 3x3 convolutions of the image, a time channel and a learned class
// embedding e_z (one channel), plus a per-class impulse image A_z + t B_z. The
// convolutions see only a 7x7 neighbourhood, so alone they cannot draw a class's
// global shape; the per-class image can, and as it enters the output directly its
// gradient is non-zero from the first step (the convolutions' output layer starts
// at zero, so theirs is not). A_z and B_z start at zero and are multiplied by
// class_image_scale: Adam moves a parameter by about its learning rate per step,
// and a whole image has to move much further than a convolution weight. Cheap
// next to the diffusion model, so that a control costs a fraction of a step.
struct ImageControlNetOptions {
  int64_t channels = 1;  // of the images
  int64_t classes = 0;   // 0: unconditional
  int64_t width = 32;
  int64_t image_size = 28;
  double class_image_scale = 20.0;  // of A_z and B_z (their learning-rate multiplier under Adam)
};

class ImageControlNetImpl : public torch::nn::Cloneable<ImageControlNetImpl> {
 public:
  explicit ImageControlNetImpl(ImageControlNetOptions options) : options_(options) {
    require(options.channels >= 1 && options.classes >= 0 && options.width >= 1 && options.image_size >= 1 &&
                options.class_image_scale >= 0.0,
            "ImageControlNet: expected channels, width, image_size >= 1, classes >= 0 and class_image_scale >= 0");
    reset();
  }

  void reset() override {
    const int64_t in = options_.channels + 1 + (options_.classes > 0 ? 1 : 0), w = options_.width;
    const auto conv = [](int64_t a, int64_t b) {
      return torch::nn::Conv2d(torch::nn::Conv2dOptions(a, b, 3).padding(1));
    };
    // The output layer is registered last: NetworkControl zeroes the last two parameters.
    const int64_t pixels = options_.image_size * options_.image_size;
    if (options_.classes > 0) {
      embedding_ = register_module("embedding", torch::nn::Embedding(options_.classes, pixels));
      class_image_ =
          register_module("class_image", torch::nn::Embedding(options_.classes, 2 * options_.channels * pixels));
      torch::NoGradGuard no_grad;
      class_image_->weight.zero_();
    }
    first_ = register_module("first", conv(in, w));
    second_ = register_module("second", conv(w, w));
    out_ = register_module("out", conv(w, options_.channels));
  }

  // t [B] generation times, x [B, C, H, W], z [B] classes or undefined.
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& z = {}) {
    require(x.dim() == 4 && x.size(1) == options_.channels && x.size(2) == options_.image_size &&
                x.size(3) == options_.image_size,
            "ImageControlNet: x must be [B, ", options_.channels, ", ", options_.image_size, ", ", options_.image_size,
            "], found ", x.sizes());
    require(z.defined() == (options_.classes > 0), options_.classes > 0
                                                       ? "ImageControlNet: needs the classes z"
                                                       : "ImageControlNet: is unconditional but got z");
    std::vector<torch::Tensor> inputs{x,
                                      t.to(x.dtype()).view({-1, 1, 1, 1}).expand({x.size(0), 1, x.size(2), x.size(3)})};
    if (z.defined()) inputs.push_back(embedding_(z).view({-1, 1, x.size(2), x.size(3)}));
    const torch::Tensor h = torch::silu(second_(torch::silu(first_(torch::cat(inputs, 1)))));
    if (!z.defined()) return out_(h);
    // A_z + t B_z, from one embedding row [2 C H W] per class.
    const torch::Tensor ab =
        (options_.class_image_scale * class_image_(z)).view({x.size(0), 2, x.size(1), x.size(2), x.size(3)});
    const torch::Tensor time = t.to(x.dtype()).view({-1, 1, 1, 1});
    return out_(h) + ab.select(1, 0) + time * ab.select(1, 1);
  }

 private:
  ImageControlNetOptions options_;
  torch::nn::Conv2d first_{nullptr}, second_{nullptr}, out_{nullptr};
  torch::nn::Embedding embedding_{nullptr}, class_image_{nullptr};
};
TORCH_MODULE(ImageControlNet);

}  // namespace diffctl::policy
