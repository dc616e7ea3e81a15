#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include "diffctl/metrics/knn_kl.hpp"
#include "diffctl/metrics/sample_quality.hpp"
#include "diffctl/runtime.hpp"

using namespace diffctl;
using metrics::knn_kl_divergence;
using metrics::KnnKlOptions;

namespace {

constexpr std::int64_t kSamples = 20000;

// n draws from N(mean, diag(sd^2)) in double precision.
torch::Tensor gaussian(std::int64_t n, const std::vector<double>& mean, const std::vector<double>& sd,
                       std::uint64_t seed) {
  const auto options = torch::TensorOptions().dtype(torch::kDouble);
  const torch::Tensor z = torch::randn({n, std::int64_t(mean.size())}, make_generator(seed), options);
  return z * torch::tensor(sd, options) + torch::tensor(mean, options);
}

// KL(N(mp, diag sp^2) || N(mq, diag sq^2)) in nats.
double gaussian_kl(const std::vector<double>& mp, const std::vector<double>& sp, const std::vector<double>& mq,
                   const std::vector<double>& sq) {
  double kl = 0.0;
  for (std::size_t j = 0; j < mp.size(); ++j) {
    const double ratio = sp[j] * sp[j] / (sq[j] * sq[j]), shift = (mp[j] - mq[j]) / sq[j];
    kl += 0.5 * (ratio + shift * shift - 1.0 - std::log(ratio));
  }
  return kl;
}

// The estimator written out by brute force (all pairwise distances, torch's
// digamma): the reference the k-d tree implementation must reproduce exactly.
double brute_force_knn_kl(const torch::Tensor& x, const torch::Tensor& y, std::int64_t k, std::int64_t l) {
  const auto n = x.size(0), m = y.size(0), d = x.size(1);
  torch::Tensor within = (x.unsqueeze(1) - x.unsqueeze(0)).square().sum(2).sqrt();
  within.fill_diagonal_(std::numeric_limits<double>::infinity());
  const torch::Tensor across = (x.unsqueeze(1) - y.unsqueeze(0)).square().sum(2).sqrt();
  const torch::Tensor rho = std::get<0>(within.kthvalue(k, 1));
  const torch::Tensor nu = std::get<0>(across.kthvalue(l, 1));
  const auto digamma = [](std::int64_t v) {
    return torch::digamma(torch::tensor(double(v), torch::kDouble)).item<double>();
  };
  return double(d) * (nu / rho).log().mean().item<double>() + std::log(double(m) / double(n - 1)) + digamma(k) -
         digamma(l);
}

}  // namespace

TEST_CASE("the kNN KL estimate is the formula, computed exactly", "[metrics][knn]") {
  // By hand, 1-D, k = 1: X = {0, 1, 3}, Y = {0.5, 2.5, 10}. rho = (1, 1, 2),
  // nu = (0.5, 0.5, 0.5), so D = (1/3) log(1/16) + log(3/2).
  const torch::Tensor x = torch::tensor({0.0, 1.0, 3.0}, torch::kDouble).unsqueeze(1);
  const torch::Tensor y = torch::tensor({0.5, 2.5, 10.0}, torch::kDouble).unsqueeze(1);
  CHECK(knn_kl_divergence(x, y) == Approx(-4.0 / 3.0 * std::numbers::ln2 + std::log(1.5)));

  // Against brute force, 3-D, for several (k, l), including the digamma correction.
  const torch::Tensor p = gaussian(300, {0.0, 0.0, 0.0}, {1.0, 2.0, 0.5}, 1);
  const torch::Tensor q = gaussian(200, {0.5, 0.0, -0.5}, {1.5, 1.0, 1.0}, 2);
  for (const auto& [k, l] : std::vector<std::pair<std::int64_t, std::int64_t>>{{1, 1}, {3, 3}, {2, 5}, {4, 1}}) {
    INFO("k = " << k << ", l = " << l);
    KnnKlOptions options;
    options.k = k;
    options.k_q = l;
    CHECK(knn_kl_divergence(p, q, options) == Approx(brute_force_knn_kl(p, q, k, l)).epsilon(1e-12));
  }
}

// Statistical cases, n = m = 20,000 (unless said) with fixed seeds, against the
// closed-form Gaussian KL. Tolerances are 4 standard deviations of the estimator
// plus its bias, both measured once by repeating each case over 400 seeds (other
// seeds than these): k = 1 unless said.
//
//   case                                  truth    mean of 400   sd      tolerance
//   1-D N(0,1) || N(1,1)                  0.5      0.5005        0.0194  0.08
//   1-D N(0,1) || N(0,2^2)                0.31815  0.3180        0.0163  0.07
//   2-D diagonal pair (below)             0.79306  0.7945        0.0185  0.08
//   1-D N(0,1) || N(0,1)                  0        0.0006        0.0139  0.06
//   2-D identical                         0        -0.0009       0.0143  0.06
//   1-D shift, n = 10,000, m = 30,000     0.5      0.5010        0.0228  0.095
//   1-D shift, k = 5                      0.5      0.4977        0.0129  0.055
//   1-D shift, k = 2, k_q = 6             0.5      0.4974        0.0136  0.06
//
// The measured biases are all within 0.003 nats of zero (standard errors ~0.001);
// one estimate takes 15-25 ms.
TEST_CASE("kNN KL matches Gaussian closed forms", "[metrics][knn][statistical]") {
  SECTION("1-D, shifted mean: KL = 1/2") {
    const double truth = gaussian_kl({0.0}, {1.0}, {1.0}, {1.0});
    REQUIRE(truth == Approx(0.5));
    const double estimate =
        knn_kl_divergence(gaussian(kSamples, {0.0}, {1.0}, 11), gaussian(kSamples, {1.0}, {1.0}, 12));
    CHECK(estimate == Approx(truth).margin(0.08));
  }
  SECTION("1-D, wider q: KL = log 2 + 1/8 - 1/2") {
    const double truth = gaussian_kl({0.0}, {1.0}, {0.0}, {2.0});
    REQUIRE(truth == Approx(std::numbers::ln2 + 0.125 - 0.5));
    const double estimate =
        knn_kl_divergence(gaussian(kSamples, {0.0}, {1.0}, 13), gaussian(kSamples, {0.0}, {2.0}, 14));
    CHECK(estimate == Approx(truth).margin(0.07));
  }
  SECTION("2-D, different means and diagonal covariances") {
    const std::vector<double> mp{0.0, 0.0}, sp{1.0, 0.5}, mq{1.0, -0.5}, sq{1.5, 1.0};
    const double truth = gaussian_kl(mp, sp, mq, sq);  // trace + Mahalanobis - d + log det ratio, halved
    REQUIRE(truth == Approx(0.5 * (2.0 / 2.25 + 0.5 - 2.0 + std::log(9.0))));
    const double estimate = knn_kl_divergence(gaussian(kSamples, mp, sp, 15), gaussian(kSamples, mq, sq, 16));
    CHECK(estimate == Approx(truth).margin(0.08));
  }
  SECTION("identical distributions: KL = 0") {
    CHECK(knn_kl_divergence(gaussian(kSamples, {0.0}, {1.0}, 17), gaussian(kSamples, {0.0}, {1.0}, 18)) ==
          Approx(0.0).margin(0.06));
    CHECK(knn_kl_divergence(gaussian(kSamples, {0.5, -1.0}, {1.0, 0.5}, 19),
                            gaussian(kSamples, {0.5, -1.0}, {1.0, 0.5}, 20)) == Approx(0.0).margin(0.06));
  }
  SECTION("unequal sample sizes: the log(m / (n - 1)) term") {
    // Without that term this would come out near 0.5 + log 3 = 1.6.
    const double estimate = knn_kl_divergence(gaussian(10000, {0.0}, {1.0}, 21), gaussian(30000, {1.0}, {1.0}, 22));
    CHECK(estimate == Approx(0.5).margin(0.095));
  }
  SECTION("larger and unequal neighbour orders") {
    const torch::Tensor p = gaussian(kSamples, {0.0}, {1.0}, 23);
    const torch::Tensor q = gaussian(kSamples, {1.0}, {1.0}, 24);
    KnnKlOptions five;
    five.k = 5;
    CHECK(knn_kl_divergence(p, q, five) == Approx(0.5).margin(0.055));
    KnnKlOptions two_six;
    two_six.k = 2;
    two_six.k_q = 6;
    CHECK(knn_kl_divergence(p, q, two_six) == Approx(0.5).margin(0.06));
  }
}

TEST_CASE("kNN KL is invariant to a common similarity transform", "[metrics][knn]") {
  // Distances all scale by c, so every log(nu / rho) is unchanged; translations
  // and rotations leave distances alone.
  const torch::Tensor p = gaussian(2000, {0.0, 0.0}, {1.0, 0.5}, 31);
  const torch::Tensor q = gaussian(2000, {1.0, -0.5}, {1.5, 1.0}, 32);
  const double angle = 0.6, scale = 3.7;
  const torch::Tensor rotation =
      torch::tensor({std::cos(angle), -std::sin(angle), std::sin(angle), std::cos(angle)}, torch::kDouble)
          .reshape({2, 2});
  const torch::Tensor offset = torch::tensor({5.0, -2.0}, torch::kDouble);
  const auto transform = [&](const torch::Tensor& x) { return scale * x.matmul(rotation.t()) + offset; };
  const double reference = knn_kl_divergence(p, q);
  CHECK(knn_kl_divergence(p + offset, q + offset) == Approx(reference).epsilon(1e-9));
  CHECK(knn_kl_divergence(scale * p, scale * q) == Approx(reference).epsilon(1e-9));
  CHECK(knn_kl_divergence(transform(p), transform(q)) == Approx(reference).epsilon(1e-9));
}

TEST_CASE("kNN KL takes any floating dtype and device", "[metrics][knn]") {
  const torch::Tensor p = gaussian(1000, {0.0, 0.0}, {1.0, 1.0}, 41).to(torch::kFloat);
  const torch::Tensor q = gaussian(1000, {0.5, 0.0}, {1.0, 1.0}, 42).to(torch::kFloat);
  const double reference = knn_kl_divergence(p.to(torch::kDouble), q.to(torch::kDouble));
  CHECK(knn_kl_divergence(p, q) == reference);
  const torch::Tensor p_half = p.to(torch::kHalf), q_half = q.to(torch::kHalf);
  CHECK(knn_kl_divergence(p_half, q_half) == knn_kl_divergence(p_half.to(torch::kDouble), q_half.to(torch::kDouble)));
  if (torch::cuda::is_available()) CHECK(knn_kl_divergence(p.to(torch::kCUDA), q.to(torch::kCUDA)) == reference);
}

TEST_CASE("kNN KL rejects malformed samples", "[metrics][knn]") {
  const torch::Tensor p = gaussian(20, {0.0, 0.0}, {1.0, 1.0}, 51);
  const torch::Tensor q = gaussian(30, {0.0, 0.0}, {1.0, 1.0}, 52);
  CHECK_THROWS_AS(knn_kl_divergence(p.flatten(), q), std::invalid_argument);
  CHECK_THROWS_WITH(knn_kl_divergence(p.flatten(), q),
                    Catch::Contains("samples_p must be 2-D [points, dimensions], found 1-D"));
  CHECK_THROWS_WITH(knn_kl_divergence(p, q.unsqueeze(0)),
                    Catch::Contains("samples_q must be 2-D [points, dimensions], found 3-D"));
  CHECK_THROWS_WITH(knn_kl_divergence(torch::Tensor(), q), Catch::Contains("samples_p is undefined"));
  CHECK_THROWS_WITH(knn_kl_divergence(p, q.to(torch::kLong)),
                    Catch::Contains("samples_q must have a floating-point dtype"));
  CHECK_THROWS_WITH(knn_kl_divergence(p.narrow(1, 0, 0), q.narrow(1, 0, 0)),
                    Catch::Contains("samples_p must have at least one dimension"));
  CHECK_THROWS_WITH(knn_kl_divergence(p, q.narrow(1, 0, 1)), Catch::Contains("the same dimension, found 2 and 1"));

  KnnKlOptions three;
  three.k = 3;
  CHECK_THROWS_WITH(knn_kl_divergence(p.narrow(0, 0, 3), q, three),
                    Catch::Contains("samples_p needs at least k + 1 = 4 points (k = 3), found 3"));
  CHECK_THROWS_WITH(knn_kl_divergence(p, q.narrow(0, 0, 2), three),
                    Catch::Contains("samples_q needs at least k_q = 3 points, found 2"));
  KnnKlOptions zero;
  zero.k = 0;
  CHECK_THROWS_WITH(knn_kl_divergence(p, q, zero), Catch::Contains("options.k must be >= 1"));
  KnnKlOptions zero_q;
  zero_q.k_q = 0;
  CHECK_THROWS_WITH(knn_kl_divergence(p, q, zero_q), Catch::Contains("options.k_q must be >= 1"));

  torch::Tensor bad = q.clone();
  bad[3][1] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(knn_kl_divergence(p, bad), Catch::Contains("samples_q row 3 is not finite"));
  bad = p.clone();
  bad[7][0] = -std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(knn_kl_divergence(bad, q), Catch::Contains("samples_p row 7 is not finite"));
}

TEST_CASE("kNN KL rejects zero neighbour distances, unless k looks past them", "[metrics][knn]") {
  const torch::Tensor p = gaussian(20, {0.0, 0.0}, {1.0, 1.0}, 61);
  const torch::Tensor q = gaussian(30, {0.0, 0.0}, {1.0, 1.0}, 62);
  KnnKlOptions two;
  two.k = 2;

  // Row 5 repeated as row 12: rho_1 = 0 for both copies.
  torch::Tensor duplicated = p.clone();
  duplicated[12] = duplicated[5];
  CHECK_THROWS_WITH(knn_kl_divergence(duplicated, q),
                    Catch::Contains("samples_p row 5 has 1 or more exact duplicates"));
  CHECK(std::isfinite(knn_kl_divergence(duplicated, q, two)));

  // A point of p that is also in q: nu_1 = 0.
  torch::Tensor shared = q.clone();
  shared[9] = p[4];
  CHECK_THROWS_WITH(knn_kl_divergence(p, shared),
                    Catch::Contains("samples_p row 4 coincides with 1 or more points of samples_q"));
  CHECK(std::isfinite(knn_kl_divergence(p, shared, two)));

  // The same tensor as both arguments: every nu is 0.
  CHECK_THROWS_WITH(knn_kl_divergence(p, p), Catch::Contains("samples_p row 0 coincides"));
}

// sample_quality reports both directions: KL(samples || data), which a generator
// that misses part of the data does not see, and KL(data || samples), which it
// does. Data: an equal mixture of N((-3, 0), I) and N((3, 0), I); samples from the
// left mode only. KL(samples || data) = ln 2 (less about 1e-4: the modes barely
// overlap), while KL(data || samples) is enormous: half the data lies where the
// samples' density is about exp(-18).
TEST_CASE("sample quality reports both KL directions against fresh data", "[metrics][knn][statistical]") {
  auto generator = make_generator(21);
  const auto shifted = [&](int64_t n, const torch::Tensor& centre) {
    return torch::randn({n, 2}, generator, torch::kDouble) + centre;
  };
  const torch::Tensor left = torch::tensor({-3.0, 0.0}, torch::kDouble);
  const auto data = [&](int64_t n) {
    const torch::Tensor sign = 2.0 * torch::randint(2, {n, 1}, generator, torch::kDouble) - 1.0;
    return shifted(n, torch::zeros({2}, torch::kDouble)) - sign * left;
  };
  const auto reward = [](const torch::Tensor& y) { return (y.select(1, 0) > 0).to(torch::kDouble); };
  const metrics::SampleQualityOptions options{.batches = 20, .batch_size = 2000, .knn = {.k = 2, .k_q = {}}};

  const auto same = metrics::sample_quality(data, reward, data, options);
  INFO("same: " << same.kl.mean << ", " << same.forward_kl.mean << ", reward " << same.reward.mean);
  CHECK(std::abs(same.kl.mean) < 0.03);
  CHECK(std::abs(same.forward_kl.mean) < 0.03);
  CHECK(std::abs(same.reward.mean - 0.5) < 4.0 * std::sqrt(0.25 / (20 * 2000)));

  const auto one_mode = [&](int64_t n) { return shifted(n, left); };
  const auto missed = metrics::sample_quality(one_mode, reward, data, options);
  INFO("one mode: " << missed.kl.mean << " +- " << missed.kl.half_width << ", " << missed.forward_kl.mean << " +- "
                    << missed.forward_kl.half_width);
  CHECK(missed.kl.mean == Approx(std::log(2.0)).margin(0.05));
  CHECK(missed.forward_kl.mean > 3.0);
  CHECK(missed.reward.mean < 0.01);

  // A fixed reference tensor gives the same estimate as fresh data, up to noise.
  const auto fixed = metrics::sample_quality(one_mode, reward, data(2000), options);
  CHECK(fixed.kl.mean == Approx(std::log(2.0)).margin(0.08));
}
