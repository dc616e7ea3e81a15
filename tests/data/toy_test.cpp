#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "diffctl/data/toy.hpp"
#include "diffctl/runtime.hpp"

using namespace diffctl;

namespace {

// scikit-learn's make_swiss_roll in its (x, z) plane: t = 1.5 pi (1 + 2 U(0, 1)),
// (t cos t, t sin t), plus noise * N(0, I) on every coordinate. Its moments over t
// by the midpoint rule on a fine grid: E x, E z, E x^2, E z^2, E xz without noise.
struct RollMoments {
  double x = 0.0, z = 0.0, xx = 0.0, zz = 0.0, xz = 0.0;
};
RollMoments sklearn_roll_moments() {
  constexpr int kCells = 200000;
  const double lo = 1.5 * std::numbers::pi, hi = 4.5 * std::numbers::pi;
  RollMoments m;
  for (int i = 0; i < kCells; ++i) {
    const double t = lo + (hi - lo) * (i + 0.5) / kCells, x = t * std::cos(t), z = t * std::sin(t);
    m.x += x / kCells, m.z += z / kCells, m.xx += x * x / kCells, m.zz += z * z / kCells, m.xz += x * z / kCells;
  }
  return m;
}

}  // namespace

TEST_CASE("the Swiss roll without noise lies on scikit-learn's curve", "[data][toy]") {
  auto generator = make_generator(1);
  const torch::Tensor p = data::swiss_roll(2000, generator, {.noise = 0.0, .scale = 1.0}).to(torch::kDouble);
  // Each point is (t cos t, t sin t) with t = |p| in [1.5 pi, 4.5 pi].
  const torch::Tensor t = p.norm(2, 1);
  CHECK(t.min().item<double>() >= 1.5 * std::numbers::pi - 1e-4);
  CHECK(t.max().item<double>() <= 4.5 * std::numbers::pi + 1e-4);
  const torch::Tensor on_curve = torch::stack({t * t.cos(), t * t.sin()}, 1);
  CHECK((p - on_curve).abs().max().item<double>() < 1e-3);
}

TEST_CASE("the Swiss roll's moments are scikit-learn's, with its noise and our scale", "[data][toy]") {
  const RollMoments exact = sklearn_roll_moments();
  // Closed form of the first moments: E[t cos t] = 2, E[t sin t] = 2 / (3 pi).
  CHECK(exact.x == Approx(2.0).epsilon(1e-6));
  CHECK(exact.z == Approx(2.0 / (3.0 * std::numbers::pi)).epsilon(1e-6));
  const int64_t n = 400000;
  for (const auto& [noise, scale] : {std::pair{0.5, 1.0}, std::pair{1.0, 0.2}}) {
    auto generator = make_generator(7);
    const torch::Tensor p = data::swiss_roll(n, generator, {.noise = noise, .scale = scale}).to(torch::kDouble) / scale;
    const torch::Tensor x = p.select(1, 0), z = p.select(1, 1);
    const double var_x = exact.xx - exact.x * exact.x + noise * noise;
    const double var_z = exact.zz - exact.z * exact.z + noise * noise;
    const double cov = exact.xz - exact.x * exact.z;
    INFO("noise " << noise << ", scale " << scale);
    // 5 standard errors; for the variances, taking mu4 - var^2 <= 3 var^2.
    CHECK(std::abs(x.mean().item<double>() - exact.x) < 5.0 * std::sqrt(var_x / n));
    CHECK(std::abs(z.mean().item<double>() - exact.z) < 5.0 * std::sqrt(var_z / n));
    CHECK(std::abs(x.var().item<double>() - var_x) < 5.0 * var_x * std::sqrt(3.0 / n));
    CHECK(std::abs(z.var().item<double>() - var_z) < 5.0 * var_z * std::sqrt(3.0 / n));
    const double sample_cov = ((x - x.mean()) * (z - z.mean())).mean().item<double>();
    CHECK(std::abs(sample_cov - cov) < 5.0 * std::sqrt(var_x * var_z * 3.0 / n));
  }
}

TEST_CASE("the default Swiss roll is the paper's: scikit-learn's coordinates, noise 0.5", "[data][toy]") {
  const data::SwissRollOptions defaults;
  CHECK(defaults.scale == 1.0);
  CHECK(defaults.noise == 0.5);
  // The default reward box is the upper half-plane: the data's reward is
  // P(t sin t + 0.5 N(0, 1) >= 0) = E_t Phi(t sin t / 0.5), about one half.
  constexpr int kCells = 200000;
  const double lo = 1.5 * std::numbers::pi, hi = 4.5 * std::numbers::pi;
  double exact = 0.0;
  for (int i = 0; i < kCells; ++i) {
    const double t = lo + (hi - lo) * (i + 0.5) / kCells;
    exact += 0.5 * std::erfc(-t * std::sin(t) / (defaults.noise * std::numbers::sqrt2)) / kCells;
  }
  auto generator = make_generator(3);
  const int64_t n = 200000;
  const double share = data::BoxReward{}(data::swiss_roll(n, generator), {}).mean().item<double>();
  INFO("share " << share << ", exact " << exact);
  CHECK(std::abs(share - exact) < 5.0 * std::sqrt(exact * (1.0 - exact) / n));
}

TEST_CASE("the toy generators reject bad options", "[data][toy][errors]") {
  auto generator = make_generator(0);
  CHECK_THROWS_WITH(data::swiss_roll(10, generator, {.noise = -1.0}), Catch::Contains("noise >= 0"));
  CHECK_THROWS_WITH(data::swiss_roll(0, generator), Catch::Contains("n must be >= 1"));
  CHECK_THROWS_WITH(data::two_mode_mixture(10, generator, {.mode = 3.0, .std = 0.0}), Catch::Contains("std"));
}
