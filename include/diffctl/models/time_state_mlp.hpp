#pragma once
// The small network of the low-dimensional experiments: (t, y[, class]) -> R^out,
// Linear(hidden) + Tanh, Linear(hidden) + ReLU, Linear(out). The class, when the
// model is conditional, enters as a one-hot vector beside t and y.

#include <cstdint>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::models {

struct TimeStateMlpOptions {
  int64_t state_dim = 1;
  int64_t out_dim = 1;
  int64_t classes = 0;  // 0: unconditional
  int64_t hidden = 64;
};

class TimeStateMlpImpl : public torch::nn::Cloneable<TimeStateMlpImpl> {
 public:
  explicit TimeStateMlpImpl(TimeStateMlpOptions options) : options_(options) {
    require(options.state_dim >= 1 && options.out_dim >= 1 && options.hidden >= 1 && options.classes >= 0,
            "TimeStateMlp: expected positive state_dim, out_dim, hidden and classes >= 0, found ", options.state_dim,
            ", ", options.out_dim, ", ", options.hidden, ", ", options.classes);
    reset();
  }

  // (Re)creates the layers; clone() relies on it.
  void reset() override {
    const int64_t in = 1 + options_.state_dim + options_.classes;
    first_ = register_module("first", torch::nn::Linear(in, options_.hidden));
    second_ = register_module("second", torch::nn::Linear(options_.hidden, options_.hidden));
    out_ = register_module("out", torch::nn::Linear(options_.hidden, options_.out_dim));
  }

  // t [B] (generation time), y [B, state_dim], z [B] int64 class indices or undefined.
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& y, const torch::Tensor& z = {}) {
    require(y.dim() == 2 && y.size(1) == options_.state_dim, "TimeStateMlp: y must be [B, ", options_.state_dim,
            "], found ", y.sizes());
    require(t.dim() == 1 && t.size(0) == y.size(0), "TimeStateMlp: t must be [", y.size(0), "], found ", t.sizes());
    require(z.defined() == (options_.classes > 0), options_.classes > 0
                                                       ? "TimeStateMlp: this model is conditional and needs z"
                                                       : "TimeStateMlp: this model is unconditional but got z");
    torch::Tensor input = torch::cat({t.unsqueeze(1).to(y.dtype()), y}, 1);
    if (z.defined()) input = torch::cat({input, torch::one_hot(z, options_.classes).to(y.dtype())}, 1);
    return out_(torch::relu(second_(torch::tanh(first_(input)))));
  }

  const TimeStateMlpOptions& options() const { return options_; }

 private:
  TimeStateMlpOptions options_;
  torch::nn::Linear first_{nullptr}, second_{nullptr}, out_{nullptr};
};
TORCH_MODULE(TimeStateMlp);

}  // namespace diffctl::models
