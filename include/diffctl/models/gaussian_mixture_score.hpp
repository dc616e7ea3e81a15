#pragma once
// The exact score of a noised mixture of isotropic Gaussians. Under the forward
// process every component stays Gaussian, N(alpha m_k, (alpha^2 s_k^2 + sigma^2) I),
// so the score of each marginal is known in closed form: the reference model for
// testing solvers, and a data source with known moments for examples.

#include <cmath>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/sde/schedules.hpp"

namespace diffctl::models {

template <NoiseSchedule Schedule>
class GaussianMixtureScore {
 public:
  // means [K, ...sample shape], stds [K] (> 0 or 0 for a point mass), weights [K]
  // (> 0, normalised here). Computation happens in the dtype and on the device of
  // the state the model is asked about.
  GaussianMixtureScore(Schedule schedule, torch::Tensor means, torch::Tensor stds, torch::Tensor weights)
      : schedule_(std::move(schedule)), means_(std::move(means)), stds_(std::move(stds)), weights_(std::move(weights)) {
    require(means_.defined() && means_.dim() >= 2, "GaussianMixtureScore: means must be [K, ...sample shape], found ",
            means_.defined() ? means_.sizes() : torch::IntArrayRef{});
    const auto k = means_.size(0);
    require(stds_.dim() == 1 && stds_.size(0) == k, "GaussianMixtureScore: stds must be [", k, "], found ",
            stds_.sizes());
    require(weights_.dim() == 1 && weights_.size(0) == k, "GaussianMixtureScore: weights must be [", k, "], found ",
            weights_.sizes());
    require((stds_ >= 0).all().item<bool>(), "GaussianMixtureScore: stds must be >= 0");
    require((weights_ > 0).all().item<bool>(), "GaussianMixtureScore: weights must be > 0");
    means_ = means_.to(torch::kDouble);
    stds_ = stds_.to(torch::kDouble);
    weights_ = weights_.to(torch::kDouble) / weights_.to(torch::kDouble).sum();
    single_std_ = stds_[0].item<double>();
  }

  // A single Gaussian N(mean, std^2 I).
  static GaussianMixtureScore gaussian(Schedule schedule, const torch::Tensor& mean, double std) {
    return GaussianMixtureScore(std::move(schedule), mean.unsqueeze(0), torch::full({1}, std, torch::kDouble),
                                torch::ones({1}, torch::kDouble));
  }

  const Schedule& schedule() const { return schedule_; }
  int64_t components() const { return means_.size(0); }
  torch::IntArrayRef sample_shape() const { return means_.sizes().slice(1); }

  // grad_x log p_t(x | z). With z, component z[b] alone is sample b's density
  // (the mixture's components are its classes).
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    require(x.dim() >= 1 && x.sizes().slice(1) == sample_shape(), "GaussianMixtureScore: x must be [B, ",
            sample_shape(), "], found ", x.sizes());
    const double s = sde::forward_time(schedule_, t);
    const double alpha = schedule_.alpha(s), sigma = schedule_.sigma(s);
    const auto opts = x.options();
    const auto batch = x.size(0);
    if (components() == 1 && !z.defined()) {  // one Gaussian: no responsibilities needed
      const double variance = alpha * alpha * single_std_ * single_std_ + sigma * sigma;
      return (x - alpha * means_[0].to(opts)) * (-1.0 / variance);
    }
    const torch::Tensor flat = x.reshape({batch, 1, -1});                                    // [B, 1, D]
    const torch::Tensor centers = (alpha * means_.to(opts)).flatten(1).unsqueeze(0);         // [1, K, D]
    const torch::Tensor variance = alpha * alpha * stds_.to(opts).square() + sigma * sigma;  // [K]
    const torch::Tensor diff = flat - centers;                                               // [B, K, D]
    const auto dim = static_cast<double>(flat.size(2));
    torch::Tensor logits =
        weights_.to(opts).log() - 0.5 * dim * variance.log() - 0.5 * diff.square().sum(2) / variance;  // [B, K]
    if (z.defined()) {
      require(z.dim() == 1 && z.size(0) == batch, "GaussianMixtureScore: z must be [", batch, "], found ", z.sizes());
      const torch::Tensor own =
          torch::zeros_like(logits, torch::kBool).scatter_(1, z.to(x.device()).unsqueeze(1), true);
      logits = logits.masked_fill(~own, -std::numeric_limits<double>::infinity());
    }
    const torch::Tensor responsibility = torch::softmax(logits, 1);  // [B, K]
    return -(responsibility.unsqueeze(2) * diff / variance.view({1, -1, 1})).sum(1).reshape(x.sizes());
  }

  // n draws from the marginal at generation time t (t = T: the data itself), with
  // their component indices.
  std::pair<torch::Tensor, torch::Tensor> sample(double t, int64_t n,
                                                 c10::optional<at::Generator> generator = c10::nullopt,
                                                 torch::TensorOptions options = torch::kFloat) const {
    const double s = sde::forward_time(schedule_, t);
    const double alpha = schedule_.alpha(s), sigma = schedule_.sigma(s);
    const torch::Tensor component = torch::multinomial(weights_, n, true, generator);
    const torch::Tensor std = (alpha * alpha * stds_.index_select(0, component).square() + sigma * sigma).sqrt();
    std::vector<int64_t> shape{n};
    for (const auto d : sample_shape()) shape.push_back(d);
    const torch::Tensor noise = torch::randn(shape, generator, torch::kDouble);
    std::vector<int64_t> per_sample(shape.size(), 1);
    per_sample[0] = n;
    const torch::Tensor x = alpha * means_.index_select(0, component) + std.view(per_sample) * noise;
    return {x.to(options), component.to(options.device())};
  }

 private:
  Schedule schedule_;
  torch::Tensor means_;    // [K, ...], double, CPU
  torch::Tensor stds_;     // [K]
  torch::Tensor weights_;  // [K], sums to 1
  double single_std_;      // stds_[0], read once: the one-Gaussian path needs no tensor read
};

}  // namespace diffctl::models
