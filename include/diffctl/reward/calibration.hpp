#pragma once
// How well a reward model's uncertainty describes its error, on held-out samples
// with known rewards: the coverage of |r_hat - r| <= k g_hat for k = 1, 2, 3 (for
// Gaussian errors with g_hat the true standard deviation: 0.683, 0.954, 0.997), and
// the correlation of g_hat with |r_hat - r| (does the model know where it is wrong?).

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/reward/optimism.hpp"

namespace diffctl::reward {

struct CalibrationReport {
  int64_t samples = 0;
  std::array<double, 3> coverage{};  // k = 1, 2, 3
  double error_correlation = 0.0;    // Pearson, g_hat vs |r_hat - r|; NaN if either is constant
  double mean_abs_error = 0.0;
  double mean_uncertainty = 0.0;
};

// From the model's mean [B] and uncertainty [B] and the true rewards [B].
inline CalibrationReport calibration_report(const torch::Tensor& mean, const torch::Tensor& uncertainty,
                                            const torch::Tensor& truth) {
  require(mean.dim() == 1 && mean.size(0) >= 1 && uncertainty.sizes() == mean.sizes() && truth.sizes() == mean.sizes(),
          "calibration: mean, uncertainty and truth must be equal non-empty [B], found ", mean.sizes(), ", ",
          uncertainty.sizes(), ", ", truth.sizes());
  const torch::Tensor m = mean.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor g = uncertainty.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor error = (m - truth.detach().to(torch::kCPU, torch::kDouble)).abs();
  require(torch::isfinite(m).all().item<bool>() && torch::isfinite(g).all().item<bool>() &&
              torch::isfinite(error).all().item<bool>(),
          "calibration: mean, uncertainty and truth must be finite");
  CalibrationReport report;
  report.samples = m.size(0);
  for (int k = 1; k <= 3; ++k)
    report.coverage[static_cast<std::size_t>(k - 1)] = error.le(k * g).to(torch::kDouble).mean().item<double>();
  const torch::Tensor dg = g - g.mean(), de = error - error.mean();
  const double denominator = std::sqrt(dg.square().sum().item<double>() * de.square().sum().item<double>());
  report.error_correlation =
      denominator > 0.0 ? (dg * de).sum().item<double>() / denominator : std::numeric_limits<double>::quiet_NaN();
  report.mean_abs_error = error.mean().item<double>();
  report.mean_uncertainty = g.mean().item<double>();
  return report;
}

// Evaluates a reward model (an ensemble, or any type with mean(x, z) and
// uncertainty(x, z)) on held-out x [N, ...]
// with conditions z [N] (or undefined) and true rewards [N], in batches.
template <class Reward>
CalibrationReport calibrate(const Reward& reward, const torch::Tensor& x, const torch::Tensor& z,
                            const torch::Tensor& truth, int64_t batch = 256) {
  require(x.dim() >= 1 && truth.dim() == 1 && truth.size(0) == x.size(0) && (!z.defined() || z.size(0) == x.size(0)),
          "calibration: x, z and truth must have the same number of samples");
  require(batch >= 1, "calibration: batch must be >= 1, found ", batch);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> means, stds;
  for (int64_t start = 0; start < x.size(0); start += batch) {
    const int64_t n = std::min(batch, x.size(0) - start);
    const torch::Tensor xb = x.narrow(0, start, n), zb = z.defined() ? z.narrow(0, start, n) : torch::Tensor{};
    if constexpr (requires { reward.predictions(xb, zb); }) {  // an ensemble: one pass for both
      const torch::Tensor p = reward.predictions(xb, zb);
      means.push_back(member_mean(p));
      stds.push_back(member_std(p));
    } else {
      means.push_back(reward.mean(xb, zb));
      stds.push_back(reward.uncertainty(xb, zb));
    }
  }
  return calibration_report(torch::cat(means), torch::cat(stds), truth);
}

}  // namespace diffctl::reward
