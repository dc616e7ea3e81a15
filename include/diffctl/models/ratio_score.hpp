#pragma once
// The ratio estimator of the score from data samples x_1..x_n alone:
//
//   score(s, y) ~ sum_j grad_y p(y | x_j) / max( sum_j p(y | x_j), eps ),
//   p(y | x) = N(y; alpha(s) x, sigma(s)^2 I),
//
// i.e. the exact score of the noised empirical distribution, except where the
// data's total density at y falls below eps: there the floor damps the estimate
// instead of letting a far-away y be pulled hard towards its nearest data point.
// Computed in log space, so neither tiny densities nor large d underflow.

#include <cmath>
#include <limits>
#include <numbers>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/sde/schedules.hpp"

namespace diffctl::models {

struct RatioScoreOptions {
  double density_floor = 1e-8;  // eps, the lower bound of the denominator
};

template <NoiseSchedule Schedule>
class RatioScore {
 public:
  // data [n, d]; labels [n] int64 (for conditional scores) or undefined.
  RatioScore(Schedule schedule, torch::Tensor data, torch::Tensor labels = {}, RatioScoreOptions options = {})
      : schedule_(std::move(schedule)),
        data_(std::move(data)),
        labels_(std::move(labels)),
        options_(options),
        log_floor_(std::log(options.density_floor)) {
    require(data_.defined() && data_.dim() == 2 && data_.size(0) > 0,
            "RatioScore: data must be a non-empty [n, d] tensor, found ",
            data_.defined() ? data_.sizes() : torch::IntArrayRef{});
    require(torch::isfinite(data_).all().item<bool>(), "RatioScore: data holds NaN or Inf");
    require(options.density_floor > 0.0, "RatioScore: density_floor must be > 0, found ", options.density_floor);
    if (labels_.defined())
      require(labels_.dim() == 1 && labels_.size(0) == data_.size(0) && labels_.scalar_type() == torch::kLong,
              "RatioScore: labels must be int64 [", data_.size(0), "], found ", labels_.sizes(), " of ",
              labels_.scalar_type());
  }

  const Schedule& schedule() const { return schedule_; }
  const torch::Tensor& data() const { return data_; }
  const torch::Tensor& labels() const { return labels_; }
  const RatioScoreOptions& options() const { return options_; }

  // The estimate at generation time t for y [B, d]; with z [B], over the data of
  // sample b's class only.
  torch::Tensor score(double t, const torch::Tensor& y, const torch::Tensor& z) const {
    require(y.dim() == 2 && y.size(1) == data_.size(1), "RatioScore: y must be [B, ", data_.size(1), "], found ",
            y.sizes());
    const double s = sde::forward_time(schedule_, t);
    const double alpha = schedule_.alpha(s), sigma = schedule_.sigma(s);
    require(sigma > 0.0, "RatioScore: sigma(s) is 0 at t = ", t, ", where the estimate is undefined");
    const torch::Tensor centers = alpha * data_.to(y.options());  // [n, d]
    const double variance = sigma * sigma;
    const auto dim = static_cast<double>(y.size(1));
    const torch::Tensor log_density =  // [B, n]
        torch::cdist(y, centers).square() * (-0.5 / variance) - 0.5 * dim * std::log(2.0 * std::numbers::pi * variance);
    torch::Tensor masked = log_density;
    if (z.defined()) {
      require(labels_.defined(), "RatioScore: conditions z given, but the data has no labels");
      require(z.dim() == 1 && z.size(0) == y.size(0), "RatioScore: z must be [", y.size(0), "], found ", z.sizes());
      const torch::Tensor same = z.unsqueeze(1) == labels_.to(z.device()).unsqueeze(0);
      masked = log_density.masked_fill(~same, -std::numeric_limits<double>::infinity());
    }
    const torch::Tensor log_total = torch::logsumexp(masked, 1, true);  // [B, 1]
    const torch::Tensor weights = (masked - log_total.clamp_min(log_floor_)).exp();
    // sum_j w_j * (-(y - alpha x_j) / sigma^2)
    return (weights.mm(centers) - weights.sum(1, true) * y) / variance;
  }

 private:
  Schedule schedule_;
  torch::Tensor data_;
  torch::Tensor labels_;
  RatioScoreOptions options_;
  double log_floor_;
};

}  // namespace diffctl::models
