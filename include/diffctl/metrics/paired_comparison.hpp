#pragma once
// Comparing two methods over seeds: Student-t intervals and the sign-flip test of a
// mean paired difference.
//
// When two methods run on the same seeds (same pretrained model, same first samples,
// same evaluation draws within a seed), the per-seed differences d_1..d_n carry the
// comparison, and the spread between seeds, which is usually far larger than the
// difference, cancels. Two questions are asked of them:
//
//   mean_interval(d):     mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n), the 95% interval
//                         of the mean difference if the d_i are normal enough;
//   sign_flip_p_value(d): the two-sided p-value of "no difference" without that
//                         assumption. Under the null that the two methods are
//                         exchangeable within a seed, each d_i is as likely to have
//                         either sign, so |sum_i s_i d_i| over all 2^n sign vectors
//                         s is the null distribution of |sum d|; p is the share at
//                         least as large as the observed one (the observed vector
//                         included, so p >= 2 / 2^n: three pairs cannot give
//                         p < 0.25). Exact up to `exact_up_to` pairs, Monte Carlo
//                         beyond, (1 + hits) / (1 + draws) from seeded draws.
//
// Quantiles of Student's t come from its distribution function,
// P(T <= t) = 1 - I_{nu / (nu + t^2)}(nu / 2, 1 / 2) / 2 for t >= 0 (I the regularised
// incomplete beta function, by its continued fraction), inverted by bisection; no
// table, so any number of seeds gets its own quantile (t_{0.975} = 12.706 at one
// degree of freedom, 2.101 at 18, toward 1.960).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>

#include "diffctl/error.hpp"

namespace diffctl::metrics {

namespace detail {

// The continued fraction of the incomplete beta function I_x(a, b) (modified Lentz),
// accurate where x < (a + 1) / (a + b + 2).
inline double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  const auto guard = [](double v) { return std::abs(v) < tiny ? tiny : v; };
  double c = 1.0, d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0)), h = d;
  for (int m = 1; m <= 1000; ++m) {
    const double even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
    d = 1.0 / guard(1.0 + even * d);
    c = guard(1.0 + even / c);
    h *= d * c;
    const double odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
    d = 1.0 / guard(1.0 + odd * d);
    c = guard(1.0 + odd / c);
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1.0) < 1e-15) break;
  }
  return h;
}

}  // namespace detail

// The regularised incomplete beta function I_x(a, b), a, b > 0, x in [0, 1].
inline double incomplete_beta(double a, double b, double x) {
  require(a > 0 && b > 0, "incomplete_beta: a and b must be positive, found ", a, " and ", b);
  require(x >= 0 && x <= 1, "incomplete_beta: x must lie in [0, 1], found ", x);
  if (x == 0.0 || x == 1.0) return x;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  // The fraction converges fast on the side of the mean a / (a + b); the symmetry
  // I_x(a, b) = 1 - I_{1-x}(b, a) moves x there.
  if (x < (a + 1.0) / (a + b + 2.0)) return front * detail::incomplete_beta_fraction(a, b, x) / a;
  return 1.0 - front * detail::incomplete_beta_fraction(b, a, 1.0 - x) / b;
}

// P(T <= t) for Student's t with `degrees_of_freedom` > 0.
inline double student_t_cdf(double t, double degrees_of_freedom) {
  require(degrees_of_freedom > 0, "student_t_cdf: degrees of freedom must be positive, found ", degrees_of_freedom);
  const double tail =
      0.5 * incomplete_beta(0.5 * degrees_of_freedom, 0.5, degrees_of_freedom / (degrees_of_freedom + t * t));
  return t >= 0 ? 1.0 - tail : tail;
}

// The t with P(T <= t) = probability, for probability in (0, 1).
inline double student_t_quantile(double probability, double degrees_of_freedom) {
  require(probability > 0 && probability < 1, "student_t_quantile: probability must lie in (0, 1), found ",
          probability);
  require(degrees_of_freedom > 0, "student_t_quantile: degrees of freedom must be positive, found ",
          degrees_of_freedom);
  if (probability < 0.5) return -student_t_quantile(1.0 - probability, degrees_of_freedom);
  double low = 0.0, high = 1.0;
  while (student_t_cdf(high, degrees_of_freedom) < probability) {
    low = high;
    high *= 2.0;
  }
  for (int i = 0; i < 200 && high - low > 1e-12 * high; ++i) {
    const double middle = 0.5 * (low + high);
    (student_t_cdf(middle, degrees_of_freedom) < probability ? low : high) = middle;
  }
  return 0.5 * (low + high);
}

// A mean with the half-width of its two-sided t-interval at `level`.
struct MeanInterval {
  double mean = 0.0;
  double half_width = 0.0;
  std::size_t count = 0;
};

// The mean of `values` (at least two) and its t-interval at `level` (0.95: 95%).
inline MeanInterval mean_interval(std::span<const double> values, double level = 0.95) {
  require(values.size() >= 2, "mean_interval: an interval needs at least two values, found ", values.size());
  require(level > 0 && level < 1, "mean_interval: level must lie in (0, 1), found ", level);
  const auto n = static_cast<double>(values.size());
  double mean = 0.0;
  for (const double v : values) mean += v / n;
  double squares = 0.0;
  for (const double v : values) squares += (v - mean) * (v - mean);
  const double standard_error = std::sqrt(squares / (n - 1.0) / n);
  return {.mean = mean,
          .half_width = student_t_quantile(0.5 + 0.5 * level, n - 1.0) * standard_error,
          .count = values.size()};
}

struct SignFlipOptions {
  std::size_t exact_up_to = 20;  // all 2^n sign vectors up to this many differences
  std::size_t draws = 200000;    // random sign vectors beyond it
  std::uint64_t seed = 0;
};

// Two-sided p-value of a zero mean difference by the sign-flip (paired permutation)
// test. Differences of exactly zero are kept: they change no sum.
inline double sign_flip_p_value(std::span<const double> differences, const SignFlipOptions& options = {}) {
  require(!differences.empty(), "sign_flip_p_value: no differences");
  require(options.exact_up_to <= 30, "sign_flip_p_value: exact_up_to must be at most 30 (2^30 sign vectors), found ",
          options.exact_up_to);
  require(differences.size() <= options.exact_up_to || options.draws > 0,
          "sign_flip_p_value: more than exact_up_to differences and no draws");
  double observed = 0.0, scale = 0.0;
  for (const double d : differences) {
    require(std::isfinite(d), "sign_flip_p_value: a difference is not finite (", d, ")");
    observed += d;
    scale += std::abs(d);
  }
  // Sums equal to the observed one up to rounding count as "at least as large".
  const double threshold = std::abs(observed) - 1e-12 * scale;
  const std::size_t n = differences.size();
  if (n <= options.exact_up_to) {
    std::uint64_t hits = 0;
    const std::uint64_t vectors = std::uint64_t{1} << n;
    for (std::uint64_t signs = 0; signs < vectors; ++signs) {
      double sum = 0.0;
      for (std::size_t i = 0; i < n; ++i) sum += (signs >> i & 1U) ? -differences[i] : differences[i];
      hits += std::abs(sum) >= threshold;
    }
    return static_cast<double>(hits) / static_cast<double>(vectors);
  }
  std::mt19937_64 generator(options.seed);
  std::uint64_t hits = 0;
  for (std::size_t draw = 0; draw < options.draws; ++draw) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += (generator() & 1U) ? -differences[i] : differences[i];
    hits += std::abs(sum) >= threshold;
  }
  return static_cast<double>(hits + 1) / static_cast<double>(options.draws + 1);
}

}  // namespace diffctl::metrics
