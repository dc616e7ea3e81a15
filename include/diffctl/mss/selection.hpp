#pragma once
// Measurement selection strategies mu: from a hallucinated trajectory's recorded
// generation times [R] and the reward model's uncertainty at each of them [R, B]
// (evaluated on the Tweedie estimates x0_hat(x_t)), a bool mask [R, B] of the
// (time, sample) pairs that receive a control.
//
//   EveryStep     every recorded time (discrete-time SEIKO's control at every step)
//   Uniform{n}    n evenly spaced recorded times, the same for every sample
//   TopK{k}       each sample's k most uncertain times
//   Threshold{g}  every time where the uncertainty exceeds g
//   AdaptiveGap{max_gap, reference}
//                 t_{k+1} = mu(x(t_k), t_k): from the first time, the next control
//                 comes after max_gap * reference / (reference + g(t_k)) recorded
//                 times (at least one): where the model is unsure, controls come
//                 sooner

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::mss {

namespace detail {
inline void check(std::span<const double> times, const torch::Tensor& uncertainty) {
  require(uncertainty.dim() == 2 && uncertainty.size(0) == static_cast<int64_t>(times.size()),
          "measurement selection: expected uncertainty [", times.size(), ", B], found ", uncertainty.sizes());
}
}  // namespace detail

struct EveryStep {
  torch::Tensor select(std::span<const double> times, const torch::Tensor& uncertainty) const {
    detail::check(times, uncertainty);
    return torch::ones(uncertainty.sizes(), uncertainty.options().dtype(torch::kBool));
  }
};

struct Uniform {
  int64_t count = 4;
  torch::Tensor select(std::span<const double> times, const torch::Tensor& uncertainty) const {
    detail::check(times, uncertainty);
    require(count >= 1, "uniform selection: count must be >= 1, found ", count);
    const int64_t recorded = uncertainty.size(0);
    torch::Tensor rows = torch::zeros({recorded}, torch::kBool);
    const int64_t n = std::min(count, recorded);
    for (int64_t i = 0; i < n; ++i) rows[(i * recorded) / n] = true;
    return rows.to(uncertainty.device()).unsqueeze(1).expand(uncertainty.sizes()).contiguous();
  }
};

struct TopK {
  int64_t k = 2;
  torch::Tensor select(std::span<const double> times, const torch::Tensor& uncertainty) const {
    detail::check(times, uncertainty);
    require(k >= 1, "top-k selection: k must be >= 1, found ", k);
    const auto chosen = std::get<1>(uncertainty.topk(std::min(k, uncertainty.size(0)), 0));
    return torch::zeros(uncertainty.sizes(), uncertainty.options().dtype(torch::kBool)).scatter_(0, chosen, true);
  }
};

struct Threshold {
  double level = 0.0;
  torch::Tensor select(std::span<const double> times, const torch::Tensor& uncertainty) const {
    detail::check(times, uncertainty);
    return uncertainty.gt(level);
  }
};

struct AdaptiveGap {
  int64_t max_gap = 4;
  double reference = 0.05;
  torch::Tensor select(std::span<const double> times, const torch::Tensor& uncertainty) const {
    detail::check(times, uncertainty);
    require(max_gap >= 1 && reference > 0.0, "adaptive selection: needs max_gap >= 1 and reference > 0");
    const torch::Tensor g = uncertainty.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const int64_t recorded = g.size(0), batch = g.size(1);
    torch::Tensor mask = torch::zeros({recorded, batch}, torch::kBool);
    const auto* values = g.data_ptr<double>();
    auto* out = mask.data_ptr<bool>();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = 0; r < recorded;) {
        out[r * batch + b] = true;
        const double gap = double(max_gap) * reference / (reference + values[r * batch + b]);
        r += std::clamp<int64_t>(std::llround(gap), 1, max_gap);
      }
    return mask.to(uncertainty.device());
  }
};

}  // namespace diffctl::mss
