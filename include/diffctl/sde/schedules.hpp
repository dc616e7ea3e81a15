#pragma once
// Noise schedules of the forward process dx = f(s) x ds + g(s) dW, s in [0, T], and
// the conversions between score, epsilon and x0 predictions they define.
// See NoiseSchedule in concepts.hpp for the meaning and units of each member.

#include <cmath>
#include <numbers>
#include <string_view>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/runtime.hpp"

namespace diffctl::sde {

namespace detail {
inline void check_forward_time(std::string_view schedule, double s, double horizon) {
  require(std::isfinite(s) && s >= 0.0 && s <= horizon, schedule, ": forward time s must lie in [0, ", horizon,
          "], found ", s);
}
}  // namespace detail

// Variance-preserving schedule whose beta rises linearly from beta_min at s = 0 to
// beta_max at s = horizon (Song et al. 2021 use horizon 1): f = -beta/2, g^2 = beta,
// sigma^2 = 1 - alpha^2.
struct VpLinearOptions {
  double beta_min = 0.1;
  double beta_max = 20.0;
  double horizon = 1.0;
};

class VpLinear {
 public:
  static constexpr std::string_view name = "vp-linear";

  explicit VpLinear(VpLinearOptions options = {}) : o_(options) {
    require(o_.beta_min > 0.0 && o_.beta_max >= o_.beta_min, name,
            ": expected 0 < beta_min <= beta_max, found beta_min=", o_.beta_min, " beta_max=", o_.beta_max);
    require(o_.horizon > 0.0 && std::isfinite(o_.horizon), name, ": horizon must be positive, found ", o_.horizon);
  }

  double horizon() const { return o_.horizon; }
  double beta(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return o_.beta_min + s / o_.horizon * (o_.beta_max - o_.beta_min);
  }
  double log_alpha(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return -0.5 * s * (o_.beta_min + 0.5 * s / o_.horizon * (o_.beta_max - o_.beta_min));
  }
  double alpha(double s) const { return std::exp(log_alpha(s)); }
  double sigma(double s) const { return std::sqrt(-std::expm1(2.0 * log_alpha(s))); }
  double drift_coef(double s) const { return -0.5 * beta(s); }
  double diffusion(double s) const { return std::sqrt(beta(s)); }

 private:
  VpLinearOptions o_;
};

// Variance-preserving cosine schedule (Nichol & Dhariwal 2021):
// alpha(s)^2 = cos^2(phi(s)) / cos^2(phi(0)), phi(s) = (s + offset)/(1 + offset) * pi/2.
// f = d log(alpha)/ds blows up as s -> 1, so the horizon stops short of it
// (0.9946, as is customary, keeps alpha(T) near 0.008).
struct VpCosineOptions {
  double offset = 0.008;
  double horizon = 0.9946;
};

class VpCosine {
 public:
  static constexpr std::string_view name = "vp-cosine";

  explicit VpCosine(VpCosineOptions options = {}) : o_(options) {
    require(o_.offset >= 0.0 && std::isfinite(o_.offset), name, ": offset must be >= 0, found ", o_.offset);
    require(o_.horizon > 0.0 && o_.horizon < 1.0, name, ": horizon must lie in (0, 1), found ", o_.horizon);
  }

  double horizon() const { return o_.horizon; }
  double alpha(double s) const { return std::cos(phi(s)) / std::cos(phi0()); }
  double sigma(double s) const {
    const double a = alpha(s);
    return std::sqrt(std::max(0.0, (1.0 - a) * (1.0 + a)));
  }
  double drift_coef(double s) const { return -std::numbers::pi / (2.0 * (1.0 + o_.offset)) * std::tan(phi(s)); }
  double diffusion(double s) const { return std::sqrt(-2.0 * drift_coef(s)); }

 private:
  double phi(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return (s + o_.offset) / (1.0 + o_.offset) * std::numbers::pi / 2.0;
  }
  double phi0() const { return o_.offset / (1.0 + o_.offset) * std::numbers::pi / 2.0; }

  VpCosineOptions o_;
};

// Variance-exploding schedule sigma(s) = sigma_min (sigma_max / sigma_min)^s, alpha = 1,
// f = 0, g^2 = d(sigma^2)/ds. As in Song et al., the marginal at s = 0 is the data
// convolved with N(0, sigma_min^2): reverse-time samples end with that much noise.
struct VeOptions {
  double sigma_min = 0.01;
  double sigma_max = 50.0;
  double horizon = 1.0;
};

class Ve {
 public:
  static constexpr std::string_view name = "ve";

  explicit Ve(VeOptions options = {}) : o_(options) {
    require(o_.sigma_min > 0.0 && o_.sigma_max > o_.sigma_min, name,
            ": expected 0 < sigma_min < sigma_max, found sigma_min=", o_.sigma_min, " sigma_max=", o_.sigma_max);
    require(o_.horizon > 0.0 && std::isfinite(o_.horizon), name, ": horizon must be positive, found ", o_.horizon);
  }

  double horizon() const { return o_.horizon; }
  double alpha(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return 1.0;
  }
  double sigma(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return o_.sigma_min * std::pow(o_.sigma_max / o_.sigma_min, s / o_.horizon);
  }
  double drift_coef(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return 0.0;
  }
  double diffusion(double s) const {
    return sigma(s) * std::sqrt(2.0 * std::log(o_.sigma_max / o_.sigma_min) / o_.horizon);
  }

 private:
  VeOptions o_;
};

// Ornstein-Uhlenbeck process dx = -theta x ds + g dW (the q-learning paper uses
// theta = 1, g^2 = 2): alpha = exp(-theta s), sigma^2 = g^2 (1 - exp(-2 theta s)) / (2 theta).
struct OrnsteinUhlenbeckOptions {
  double theta = 1.0;
  double g = std::numbers::sqrt2;
  double horizon = 1.0;
};

class OrnsteinUhlenbeck {
 public:
  static constexpr std::string_view name = "ou";

  explicit OrnsteinUhlenbeck(OrnsteinUhlenbeckOptions options = {}) : o_(options) {
    require(o_.theta > 0.0 && std::isfinite(o_.theta), name, ": theta must be positive, found ", o_.theta);
    require(o_.g > 0.0 && std::isfinite(o_.g), name, ": g must be positive, found ", o_.g);
    require(o_.horizon > 0.0 && std::isfinite(o_.horizon), name, ": horizon must be positive, found ", o_.horizon);
  }

  double horizon() const { return o_.horizon; }
  double alpha(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return std::exp(-o_.theta * s);
  }
  double sigma(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return o_.g * std::sqrt(-std::expm1(-2.0 * o_.theta * s) / (2.0 * o_.theta));
  }
  double drift_coef(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return -o_.theta;
  }
  double diffusion(double s) const {
    detail::check_forward_time(name, s, o_.horizon);
    return o_.g;
  }

 private:
  OrnsteinUhlenbeckOptions o_;
};

static_assert(NoiseSchedule<VpLinear> && NoiseSchedule<VpCosine> && NoiseSchedule<Ve> &&
              NoiseSchedule<OrnsteinUhlenbeck>);

// Forward time of generation time t.
template <NoiseSchedule Schedule>
double forward_time(const Schedule& schedule, double t) {
  return schedule.horizon() - t;
}

// --- conversions between the three ways a network can predict -----------------
// With x = alpha x0 + sigma eps at forward time s: score = -eps / sigma, and
// Tweedie's formula E[x0 | x] = (x + sigma^2 score) / alpha.

template <NoiseSchedule Schedule>
torch::Tensor score_from_epsilon(const Schedule& schedule, double s, const torch::Tensor& eps) {
  return eps * (-1.0 / schedule.sigma(s));
}

template <NoiseSchedule Schedule>
torch::Tensor epsilon_from_score(const Schedule& schedule, double s, const torch::Tensor& score) {
  return score * (-schedule.sigma(s));
}

template <NoiseSchedule Schedule>
torch::Tensor x0_from_epsilon(const Schedule& schedule, double s, const torch::Tensor& x, const torch::Tensor& eps) {
  return (x - schedule.sigma(s) * eps) / schedule.alpha(s);
}

template <NoiseSchedule Schedule>
torch::Tensor epsilon_from_x0(const Schedule& schedule, double s, const torch::Tensor& x, const torch::Tensor& x0) {
  return (x - schedule.alpha(s) * x0) / schedule.sigma(s);
}

template <NoiseSchedule Schedule>
torch::Tensor x0_from_score(const Schedule& schedule, double s, const torch::Tensor& x, const torch::Tensor& score) {
  const double sigma = schedule.sigma(s);
  return (x + (sigma * sigma) * score) / schedule.alpha(s);
}

template <NoiseSchedule Schedule>
torch::Tensor score_from_x0(const Schedule& schedule, double s, const torch::Tensor& x, const torch::Tensor& x0) {
  const double sigma = schedule.sigma(s);
  return (x - schedule.alpha(s) * x0) * (-1.0 / (sigma * sigma));
}

// A draw of the forward process at a uniform time per sample: s ~ U(0, T),
// x_s = alpha(s) x0 + sigma(s) eps, for data x0 [B, ...]. What denoising score
// matching trains on, and what a noise-aware classifier (a reward model of the
// noisy state) learns p_s(z | x_s) from. s is kept on the host (the schedule's
// functions are scalar); the times are drawn before the noise.
struct ForwardDraw {
  torch::Tensor x, eps;   // like x0
  std::vector<double> s;  // [B] forward times
};

template <NoiseSchedule Schedule>
ForwardDraw forward_draw(const Schedule& schedule, const torch::Tensor& x0,
                         const c10::optional<at::Generator>& generator = c10::nullopt) {
  require(x0.dim() >= 1 && x0.size(0) > 0, "forward draw: expected a batch [B, ...], found ", x0.sizes());
  const int64_t batch = x0.size(0);
  const torch::Tensor u = torch::rand({batch}, generator, torch::kDouble);
  ForwardDraw draw;
  draw.s.resize(static_cast<std::size_t>(batch));
  std::vector<double> alphas(draw.s.size()), sigmas(draw.s.size());
  const auto* uu = u.data_ptr<double>();
  for (std::size_t i = 0; i < draw.s.size(); ++i) {
    draw.s[i] = uu[i] * schedule.horizon();
    alphas[i] = schedule.alpha(draw.s[i]);
    sigmas[i] = schedule.sigma(draw.s[i]);
  }
  std::vector<int64_t> view(static_cast<std::size_t>(x0.dim()), 1);
  view[0] = batch;
  const auto column = [&](const std::vector<double>& values) {
    return torch::tensor(values, torch::kDouble).to(x0.options()).view(view);
  };
  draw.eps = standard_normal(x0.sizes(), generator, x0.options());
  draw.x = column(alphas) * x0 + column(sigmas) * draw.eps;
  return draw;
}

// forward_draw as a function of a batch alone, x0 -> x_s: what noise-aware
// training (ClassifierTrainingOptions::forward_noise, MemberFitOptions::input_noise)
// applies to its inputs.
template <NoiseSchedule Schedule>
auto forward_noise(Schedule schedule) {
  return [schedule](const torch::Tensor& x0, const c10::optional<at::Generator>& generator) {
    return forward_draw(schedule, x0, generator).x;
  };
}

// Draws the reverse process's starting state x(0) ~ N(0, sigma(T)^2 I), the
// forward process's marginal at its horizon for data of negligible alpha(T).
template <NoiseSchedule Schedule>
torch::Tensor sample_prior(const Schedule& schedule, torch::IntArrayRef shape,
                           c10::optional<at::Generator> generator = c10::nullopt,
                           torch::TensorOptions options = torch::kFloat) {
  return standard_normal(shape, generator, options) * schedule.sigma(schedule.horizon());
}

}  // namespace diffctl::sde
