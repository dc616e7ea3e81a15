#pragma once
// One-step solvers of the reverse process. A step goes from generation time t to
// t_next > t, i.e. from forward time s = T - t down to s' = T - t_next, with
// h = t_next - t. Each returns the step as a Gaussian Transition; the integrator
// draws the noise. All work on any device and floating dtype the state has.

#include <algorithm>
#include <cmath>
#include <optional>
#include <string_view>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/sde/transition.hpp"

namespace diffctl::sde {

namespace detail {
template <NoiseSchedule Schedule>
void check_step(std::string_view solver, const Schedule& schedule, double t, double t_next) {
  const double horizon = schedule.horizon();
  require(std::isfinite(t) && std::isfinite(t_next) && t >= 0.0 && t_next <= horizon && t < t_next, solver,
          ": expected 0 <= t < t_next <= T = ", horizon, ", found t = ", t, ", t_next = ", t_next);
}
}  // namespace detail

namespace detail {
// An Euler step of dx/dt = -f x + weight g^2 score, f and g at the step's start,
// with noise_std g sqrt(h) when the step is stochastic.
template <NoiseSchedule Schedule, DriftModel Model>
Transition euler_step(std::string_view solver, const Schedule& schedule, const Model& model, double t, double t_next,
                      const torch::Tensor& x, const torch::Tensor& z, double score_weight, bool stochastic) {
  check_step(solver, schedule, t, t_next);
  const double s = schedule.horizon() - t, h = t_next - t;
  const double f = schedule.drift_coef(s), g = schedule.diffusion(s);
  torch::Tensor score = model.score(t, x, z);
  torch::Tensor mean = x * (1.0 - h * f) + score * (score_weight * h * g * g);
  return {std::move(mean), stochastic ? g * std::sqrt(h) : 0.0, std::move(score)};
}
}  // namespace detail

// Euler-Maruyama on the reverse SDE dx = [-f x + g^2 score] dt + g dB, with f and
// g taken at the step's start. First order weakly.
struct EulerMaruyama {
  static constexpr std::string_view name = "euler-maruyama";

  template <NoiseSchedule Schedule, DriftModel Model>
  Transition transition(const Schedule& schedule, const Model& model, double t, double t_next, const torch::Tensor& x,
                        const torch::Tensor& z) const {
    return detail::euler_step(name, schedule, model, t, t_next, x, z, 1.0, true);
  }
};

// Euler on the probability-flow ODE dx/dt = -f x + g^2 score / 2. First order.
struct ProbabilityFlowEuler {
  static constexpr std::string_view name = "pf-euler";

  template <NoiseSchedule Schedule, DriftModel Model>
  Transition transition(const Schedule& schedule, const Model& model, double t, double t_next, const torch::Tensor& x,
                        const torch::Tensor& z) const {
    return detail::euler_step(name, schedule, model, t, t_next, x, z, 0.5, false);
  }
};

// Heun's method (explicit trapezoid) on the probability-flow ODE, as in Karras et
// al. 2022: an Euler predictor, then the average of the slopes at both ends.
// Second order. As there, a step that ends where sigma = 0 keeps the Euler
// predictor, since a score network is not defined on noise-free data.
struct Heun {
  static constexpr std::string_view name = "heun";

  template <NoiseSchedule Schedule, DriftModel Model>
  Transition transition(const Schedule& schedule, const Model& model, double t, double t_next, const torch::Tensor& x,
                        const torch::Tensor& z) const {
    detail::check_step(name, schedule, t, t_next);
    const double horizon = schedule.horizon();
    const double s = horizon - t, s_next = horizon - t_next, h = t_next - t;
    torch::Tensor score = model.score(t, x, z);
    const auto slope = [&](double s_at, const torch::Tensor& x_at, const torch::Tensor& score_at) {
      const double g = schedule.diffusion(s_at);
      return x_at * (-schedule.drift_coef(s_at)) + score_at * (0.5 * g * g);
    };
    const torch::Tensor d_start = slope(s, x, score);
    torch::Tensor predictor = x + h * d_start;
    if (schedule.sigma(s_next) == 0.0) return {std::move(predictor), 0.0, std::move(score)};
    const torch::Tensor d_end = slope(s_next, predictor, model.score(t_next, predictor, z));
    return {x + (0.5 * h) * (d_start + d_end), 0.0, std::move(score)};
  }
};

namespace detail {
// The forward kernel between the step's two noise levels: x_s = a x_{s'} + b xi,
// with a = alpha(s) / alpha(s') and b^2 = sigma(s)^2 - a^2 sigma(s')^2.
struct KernelBetween {
  double alpha, sigma, alpha_next, sigma_next, a, b2;
};

template <NoiseSchedule Schedule>
KernelBetween kernel_between(const Schedule& schedule, double t, double t_next) {
  const double horizon = schedule.horizon();
  const double s = horizon - t, s_next = horizon - t_next;
  KernelBetween k{schedule.alpha(s), schedule.sigma(s), schedule.alpha(s_next), schedule.sigma(s_next), 0.0, 0.0};
  k.a = k.alpha / k.alpha_next;
  k.b2 = std::max(0.0, k.sigma * k.sigma - k.a * k.a * k.sigma_next * k.sigma_next);
  return k;
}
}  // namespace detail

// DDIM (Song, Meng & Ermon 2021) on a continuous schedule: predict x0 and eps from
// the score, then step to s' keeping eps's share of the variance. eta in [0, 1]
// scales the fresh noise: eta = 0 is deterministic, eta = 1 uses the exact posterior
// variance of q(x_{s'} | x_s, x0).
struct DdimOptions {
  double eta = 0.0;
  // For data known to lie in [-c, c] (images: c = 1), clamp the x0 prediction to
  // it and take eps consistent with the clamped x0, as image samplers do. The first
  // steps divide by alpha(s), about 0.008 at the horizon of a cosine schedule, so
  // without it a network's small error in eps there grows a hundredfold.
  std::optional<double> clip_x0 = std::nullopt;
};

class Ddim {
 public:
  static constexpr std::string_view name = "ddim";

  explicit Ddim(DdimOptions options = {}) : eta_(options.eta), clip_x0_(options.clip_x0) {
    require(eta_ >= 0.0 && eta_ <= 1.0, name, ": eta must lie in [0, 1], found ", eta_);
    require(!clip_x0_ || *clip_x0_ > 0.0, name, ": clip_x0 must be > 0, found ", clip_x0_.value_or(0.0));
  }
  double eta() const { return eta_; }

  template <NoiseSchedule Schedule, DriftModel Model>
  Transition transition(const Schedule& schedule, const Model& model, double t, double t_next, const torch::Tensor& x,
                        const torch::Tensor& z) const {
    detail::check_step(name, schedule, t, t_next);
    const auto k = detail::kernel_between(schedule, t, t_next);
    require(k.sigma > 0.0, name, ": the schedule's sigma is 0 at t = ", t, ", where epsilon is undefined");
    torch::Tensor score = model.score(t, x, z);
    torch::Tensor eps = score * (-k.sigma);
    torch::Tensor x0 = (x + score * (k.sigma * k.sigma)) / k.alpha;
    if (clip_x0_) {
      x0 = x0.clamp(-*clip_x0_, *clip_x0_);
      eps = (x - x0 * k.alpha) / k.sigma;
    }
    const double noise_std = eta_ * k.sigma_next * std::sqrt(k.b2) / k.sigma;
    const double eps_share = std::sqrt(std::max(0.0, k.sigma_next * k.sigma_next - noise_std * noise_std));
    return {x0 * k.alpha_next + eps * eps_share, noise_std, std::move(score)};
  }

 private:
  double eta_;
  std::optional<double> clip_x0_;
};

// DDPM ancestral sampling (Ho et al. 2020) on a continuous schedule, in its epsilon
// form: mean = (x - b^2 / sigma(s) eps) / a. The variance is the posterior's,
// sigma(s')^2 b^2 / sigma(s)^2 (Ho's beta-tilde), or the forward kernel's b^2 (beta).
enum class DdpmVariance { posterior, forward };

struct DdpmOptions {
  DdpmVariance variance = DdpmVariance::posterior;
  // As DdimOptions::clip_x0: clamp the x0 prediction to [-c, c] and take the
  // posterior mean of q(x_{s'} | x_s, x0) at the clamped x0.
  std::optional<double> clip_x0 = std::nullopt;
};

class Ddpm {
 public:
  static constexpr std::string_view name = "ddpm";

  explicit Ddpm(DdpmOptions options = {}) : variance_(options.variance), clip_x0_(options.clip_x0) {
    require(!clip_x0_ || *clip_x0_ > 0.0, name, ": clip_x0 must be > 0, found ", clip_x0_.value_or(0.0));
  }

  template <NoiseSchedule Schedule, DriftModel Model>
  Transition transition(const Schedule& schedule, const Model& model, double t, double t_next, const torch::Tensor& x,
                        const torch::Tensor& z) const {
    detail::check_step(name, schedule, t, t_next);
    const auto k = detail::kernel_between(schedule, t, t_next);
    require(k.sigma > 0.0, name, ": the schedule's sigma is 0 at t = ", t, ", where epsilon is undefined");
    torch::Tensor score = model.score(t, x, z);
    // -b^2/sigma * eps with eps = -sigma * score is + b^2 * score. The same mean in
    // x0 form is (alpha' b^2 x0 + a sigma'^2 x) / sigma^2.
    torch::Tensor mean;
    if (clip_x0_) {
      const torch::Tensor x0 = ((x + score * (k.sigma * k.sigma)) / k.alpha).clamp(-*clip_x0_, *clip_x0_);
      mean = (x0 * (k.alpha_next * k.b2) + x * (k.a * k.sigma_next * k.sigma_next)) / (k.sigma * k.sigma);
    } else {
      mean = (x + score * k.b2) / k.a;
    }
    const double variance =
        variance_ == DdpmVariance::posterior ? k.sigma_next * k.sigma_next * k.b2 / (k.sigma * k.sigma) : k.b2;
    return {std::move(mean), std::sqrt(variance), std::move(score)};
  }

 private:
  DdpmVariance variance_;
  std::optional<double> clip_x0_;
};

}  // namespace diffctl::sde
