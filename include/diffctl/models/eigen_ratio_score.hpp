#pragma once
// RatioScore's estimate, fused for the CPU with Eigen: for each sample, one read
// of its class's data computes the squared distances (in units of the kernel's
// width) into a buffer that stays in L1; short vectorised sweeps over that buffer
// give the nearest distance, the exponentials relative to it, their sum and the
// weighted sums of the centers. No [B, n] matrix is formed, unlike RatioScore's
// cdist / logsumexp / mm chain. The same function as RatioScore:
//
//   score(s, y) = sum_j w_j (alpha x_j - y) / sigma^2,
//   w_j = exp(l_j - max(logsumexp_j l_j, log eps)),  l_j = log N(y; alpha x_j, sigma^2 I),
//
// in log space (the exponentials are taken relative to the largest l_j), with the
// same floor eps on the density: where the data's total density at y falls below
// eps the weights sum to less than one and the estimate is damped.
//
// Layout: states and estimates are [d, B] (one column per sample), as in EigenMlp.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include <Eigen/Dense>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/sde/schedules.hpp"

namespace diffctl::models {

namespace detail {
// exp(offset - x) in place, for offset - x <= 0, values whose exponential is below the smallest
// normal number giving 0: what the estimator's weights need, vectorised by hand
// with SSE2 (the x86-64 baseline, so no flags needed), since the compiler does
// not vectorise the scalar loop and Eigen's exp takes twice as long here. Range
// reduction by ln 2 in two parts, then the Taylor polynomial of exp on
// [-ln 2 / 2, ln 2 / 2] to the unit roundoff (degree 7 in float, 13 in double).
inline void exp_of_difference(float offset, float* x, std::ptrdiff_t n) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kMagic = 12582912.0f, kLowest = -87.0f;
  std::ptrdiff_t j = 0;
#if defined(__SSE2__)
  const __m128 log2e = _mm_set1_ps(kLog2e), hi = _mm_set1_ps(kLn2Hi), lo = _mm_set1_ps(kLn2Lo),
               magic = _mm_set1_ps(kMagic), lowest = _mm_set1_ps(kLowest), from = _mm_set1_ps(offset);
  const __m128 c7 = _mm_set1_ps(1.0f / 5040.0f), c6 = _mm_set1_ps(1.0f / 720.0f), c5 = _mm_set1_ps(1.0f / 120.0f),
               c4 = _mm_set1_ps(1.0f / 24.0f), c3 = _mm_set1_ps(1.0f / 6.0f), c2 = _mm_set1_ps(0.5f),
               one = _mm_set1_ps(1.0f);
  const __m128i bias = _mm_set1_epi32(127 - std::bit_cast<std::int32_t>(kMagic));
  for (; j + 4 <= n; j += 4) {
    const __m128 v = _mm_sub_ps(from, _mm_loadu_ps(x + j));
    const __m128 c = _mm_max_ps(v, lowest);
    const __m128 t = _mm_add_ps(_mm_mul_ps(c, log2e), magic);
    const __m128 k = _mm_sub_ps(t, magic);
    const __m128 r = _mm_sub_ps(_mm_sub_ps(c, _mm_mul_ps(k, hi)), _mm_mul_ps(k, lo));
    __m128 p = c7;
    p = _mm_add_ps(_mm_mul_ps(p, r), c6);
    p = _mm_add_ps(_mm_mul_ps(p, r), c5);
    p = _mm_add_ps(_mm_mul_ps(p, r), c4);
    p = _mm_add_ps(_mm_mul_ps(p, r), c3);
    p = _mm_add_ps(_mm_mul_ps(p, r), c2);
    p = _mm_add_ps(_mm_mul_ps(p, r), one);
    p = _mm_add_ps(_mm_mul_ps(p, r), one);
    const __m128 scale = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(_mm_castps_si128(t), bias), 23));
    _mm_storeu_ps(x + j, _mm_andnot_ps(_mm_cmplt_ps(v, lowest), _mm_mul_ps(p, scale)));
  }
#endif
  for (; j < n; ++j) {
    const float v = offset - x[j];
    x[j] = v < kLowest ? 0.0f : std::exp(v);
  }
}
inline void exp_of_difference(double offset, double* x, std::ptrdiff_t n) {
  constexpr double kLog2e = 1.4426950408889634074, kLn2Hi = 6.93147180369123816490e-01,
                   kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kMagic = 6755399441055744.0, kLowest = -708.0;
  std::ptrdiff_t j = 0;
#if defined(__SSE2__)
  const __m128d log2e = _mm_set1_pd(kLog2e), hi = _mm_set1_pd(kLn2Hi), lo = _mm_set1_pd(kLn2Lo),
                magic = _mm_set1_pd(kMagic), lowest = _mm_set1_pd(kLowest), from = _mm_set1_pd(offset);
  constexpr double coefficients[] = {1.0 / 6227020800.0,
                                     1.0 / 479001600.0,
                                     1.0 / 39916800.0,
                                     1.0 / 3628800.0,
                                     1.0 / 362880.0,
                                     1.0 / 40320.0,
                                     1.0 / 5040.0,
                                     1.0 / 720.0,
                                     1.0 / 120.0,
                                     1.0 / 24.0,
                                     1.0 / 6.0,
                                     0.5,
                                     1.0,
                                     1.0};
  const __m128i bias = _mm_set1_epi64x(1023 - std::bit_cast<std::int64_t>(kMagic));
  for (; j + 2 <= n; j += 2) {
    const __m128d v = _mm_sub_pd(from, _mm_loadu_pd(x + j));
    const __m128d c = _mm_max_pd(v, lowest);
    const __m128d t = _mm_add_pd(_mm_mul_pd(c, log2e), magic);
    const __m128d k = _mm_sub_pd(t, magic);
    const __m128d r = _mm_sub_pd(_mm_sub_pd(c, _mm_mul_pd(k, hi)), _mm_mul_pd(k, lo));
    __m128d p = _mm_set1_pd(coefficients[0]);
    for (int i = 1; i < 14; ++i) p = _mm_add_pd(_mm_mul_pd(p, r), _mm_set1_pd(coefficients[i]));
    const __m128d scale = _mm_castsi128_pd(_mm_slli_epi64(_mm_add_epi64(_mm_castpd_si128(t), bias), 52));
    _mm_storeu_pd(x + j, _mm_andnot_pd(_mm_cmplt_pd(v, lowest), _mm_mul_pd(p, scale)));
  }
#endif
  for (; j < n; ++j) {
    const double v = offset - x[j];
    x[j] = v < kLowest ? 0.0 : std::exp(v);
  }
}
}  // namespace detail

template <class Scalar>
class EigenRatioScore {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

  // data [n, d]; labels [n] int64 (for conditional scores) or undefined.
  EigenRatioScore(const torch::Tensor& data, const torch::Tensor& labels = {}, RatioScoreOptions options = {})
      : log_floor_(std::log(options.density_floor)) {
    require(data.defined() && data.dim() == 2 && data.size(0) > 0,
            "EigenRatioScore: data must be a non-empty [n, d] tensor, found ",
            data.defined() ? data.sizes() : torch::IntArrayRef{});
    require(options.density_floor > 0.0, "EigenRatioScore: density_floor must be > 0, found ", options.density_floor);
    const int64_t n = data.size(0), d = data.size(1);
    const torch::Tensor values = data.detach().to(torch::kCPU, torch::CppTypeToScalarType<Scalar>::value).contiguous();
    require(torch::isfinite(values).all().template item<bool>(), "EigenRatioScore: data holds NaN or Inf");
    // Sorted by class, so that each class's data is one contiguous segment.
    std::vector<int64_t> order(static_cast<std::size_t>(n));
    for (int64_t j = 0; j < n; ++j) order[std::size_t(j)] = j;
    if (labels.defined()) {
      require(labels.dim() == 1 && labels.size(0) == n && labels.scalar_type() == torch::kLong,
              "EigenRatioScore: labels must be int64 [", n, "], found ", labels.sizes(), " of ", labels.scalar_type());
      const torch::Tensor l = labels.to(torch::kCPU).contiguous();
      const int64_t* label = l.data_ptr<int64_t>();
      const int64_t lowest = *std::min_element(label, label + n);
      require(lowest >= 0, "EigenRatioScore: labels must be >= 0, found ", lowest);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return label[a] < label[b]; });
      const int64_t classes = *std::max_element(label, label + n) + 1;
      class_start_.assign(std::size_t(classes), 0);
      class_count_.assign(std::size_t(classes), 0);
      for (int64_t j = 0; j < n; ++j) ++class_count_[std::size_t(label[j])];
      for (std::size_t c = 1; c < class_count_.size(); ++c) class_start_[c] = class_start_[c - 1] + class_count_[c - 1];
    }
    data_.resize(n, d);
    const Scalar* v = values.data_ptr<Scalar>();
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < d; ++i) data_(j, i) = v[order[std::size_t(j)] * d + i];
    centers_.resize(n, d);
    buffer_.resize(n);
  }

  template <NoiseSchedule Schedule>
  explicit EigenRatioScore(const RatioScore<Schedule>& estimate)
      : EigenRatioScore(estimate.data(), estimate.labels(), estimate.options()) {}

  Eigen::Index dim() const { return data_.cols(); }
  bool conditional() const { return !class_count_.empty(); }

  // The estimate at generation time t into out [d, B] for states y [d, B]; z: B
  // class indices (the data of sample b's class only), or nullptr.
  template <NoiseSchedule Schedule, class States, class Out>
  void score(const Schedule& schedule, double t, const States& y, const int64_t* z, Out&& out) {
    const double s = sde::forward_time(schedule, t);
    const double sigma = schedule.sigma(s);
    require(sigma > 0.0, "EigenRatioScore: sigma(s) is 0 at t = ", t, ", where the estimate is undefined");
    score_at(schedule.alpha(s), sigma, y, z, out);
  }

  // The same for the noising kernel N(alpha x, sigma^2 I) given directly.
  template <class States, class Out>
  void score_at(double alpha, double sigma, const States& y, const int64_t* z, Out&& out) {
    const Eigen::Index d = data_.cols(), batch = y.cols();
    require(y.rows() == d, "EigenRatioScore: y must be [", d, ", B], found [", y.rows(), ", ", y.cols(), "]");
    require(out.rows() == d && out.cols() == batch, "EigenRatioScore: out must be [", d, ", ", batch, "], found [",
            out.rows(), ", ", out.cols(), "]");
    require(z == nullptr || conditional(), "EigenRatioScore: conditions z given, but the data has no labels");
    const double variance = sigma * sigma;
    const double log_normaliser = -0.5 * double(d) * std::log(2.0 * std::numbers::pi * variance);
    // In units where the log-density is minus a squared distance: u_j = c alpha x_j,
    // u = c y with c = 1 / (sqrt(2) sigma), so that l_j = log_normaliser - |u_j - u|^2.
    const double unit = 1.0 / (std::numbers::sqrt2 * sigma);
    centers_ = Scalar(unit * alpha) * data_;
    for (Eigen::Index b = 0; b < batch; ++b) {
      Eigen::Index start = 0, count = data_.rows();
      if (z != nullptr) {
        const int64_t c = z[b];
        const bool known = c >= 0 && c < int64_t(class_count_.size());
        start = known ? class_start_[std::size_t(c)] : 0;
        count = known ? class_count_[std::size_t(c)] : 0;
      }
      if (count == 0) {  // no data of this class: every weight is 0
        out.col(b).setZero();
        continue;
      }
      auto weight = buffer_.head(count);
      weight = (centers_.col(0).segment(start, count).array() - Scalar(unit * double(y(0, b)))).square();
      for (Eigen::Index i = 1; i < d; ++i)
        weight += (centers_.col(i).segment(start, count).array() - Scalar(unit * double(y(i, b)))).square();
      // Relative to the nearest center: weight_j = exp(l_j - max_j l_j).
      const Scalar nearest = weight.minCoeff();
      detail::exp_of_difference(nearest, weight.data(), count);
      const double total = double(weight.sum());
      const double log_total = log_normaliser - double(nearest) + std::log(total);
      // w_j = exp(l_j - max(log_total, log eps)) = weight_j * scale.
      const double scale = std::exp(log_normaliser - double(nearest) - std::max(log_total, log_floor_));
      for (Eigen::Index i = 0; i < d; ++i) {
        const double pulled = double((weight * centers_.col(i).segment(start, count).array()).sum()) / unit;
        out(i, b) = Scalar(scale * (pulled - total * double(y(i, b))) / variance);
      }
    }
  }

 private:
  Matrix data_;     // [n, d], sorted by class
  Matrix centers_;  // alpha * data_ / (sqrt(2) sigma), per call
  Array buffer_;    // [n]
  std::vector<Eigen::Index> class_start_, class_count_;
  double log_floor_;
};

}  // namespace diffctl::models
