#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/time_grid.hpp"

using namespace diffctl;
using Schedule = sde::OrnsteinUhlenbeck;

TEST_CASE("the ratio estimator is the score of the noised empirical distribution", "[models][ratio]") {
  const Schedule schedule({.horizon = 5.0});
  const auto generator = make_generator(3);
  const torch::Tensor data = torch::randn({50, 2}, generator, torch::kDouble);
  // With a negligible floor, the estimate is the exact score of the data as an
  // equal-weight mixture of point masses.
  const models::RatioScore<Schedule> estimate(schedule, data, {}, {.density_floor = 1e-300});
  const models::GaussianMixtureScore<Schedule> point_masses(schedule, data, torch::zeros({50}, torch::kDouble),
                                                            torch::ones({50}, torch::kDouble));
  for (const double t : {0.0, 2.5, 4.5, 4.9}) {
    const torch::Tensor y = torch::randn({40, 2}, generator, torch::kDouble);
    INFO("t = " << t);
    CHECK(torch::allclose(estimate.score(t, y, {}), point_masses.score(t, y, {}), 1e-8, 1e-10));
  }
}

TEST_CASE("the density floor damps the estimate far from the data", "[models][ratio]") {
  const Schedule schedule({.horizon = 5.0});
  const double floor = 1e-8, t = 4.0, x = 0.5;  // one data point
  const models::RatioScore<Schedule> estimate(schedule, torch::full({1, 1}, x, torch::kDouble), {},
                                              {.density_floor = floor});
  const double s = 1.0, alpha = schedule.alpha(s), sigma = schedule.sigma(s);
  for (const double y : {1.0, 5.0, 7.0}) {
    const double density =
        std::exp(-0.5 * std::pow((y - alpha * x) / sigma, 2)) / (std::sqrt(2 * std::numbers::pi) * sigma);
    // sum_j grad p / max(sum_j p, eps): the exact score -(y - alpha x)/sigma^2
    // where the density exceeds the floor, scaled down by density / eps beyond it.
    const double expected = -(y - alpha * x) / (sigma * sigma) * density / std::max(density, floor);
    const double found = estimate.score(t, torch::full({1, 1}, y, torch::kDouble), {}).item<double>();
    INFO("y = " << y << ", density " << density);
    CHECK(found == Approx(expected).epsilon(1e-9).margin(1e-300));
  }
}

TEST_CASE("a conditional estimate uses its own class's data only", "[models][ratio]") {
  const Schedule schedule;
  const auto generator = make_generator(4);
  const torch::Tensor data = torch::randn({60, 2}, generator, torch::kDouble);
  const torch::Tensor labels = torch::arange(60, torch::kLong) % 3;
  const models::RatioScore<Schedule> all(schedule, data, labels);
  const torch::Tensor y = torch::randn({5, 2}, generator, torch::kDouble);
  for (int64_t c = 0; c < 3; ++c) {
    const models::RatioScore<Schedule> own(schedule, data.index({labels == c}));
    CHECK(torch::allclose(all.score(0.3, y, torch::full({5}, c, torch::kLong)), own.score(0.3, y, {}), 1e-10, 1e-12));
  }
}

TEST_CASE("the ratio estimator rejects bad data", "[models][ratio][errors]") {
  const Schedule schedule;
  CHECK_THROWS_WITH(models::RatioScore<Schedule>(schedule, torch::zeros({0, 2})), Catch::Contains("non-empty [n, d]"));
  CHECK_THROWS_WITH(models::RatioScore<Schedule>(schedule, torch::full({3, 1}, NAN)),
                    Catch::Contains("data holds NaN or Inf"));
  CHECK_THROWS_WITH(models::RatioScore<Schedule>(schedule, torch::zeros({3, 1}), torch::zeros({2}, torch::kLong)),
                    Catch::Contains("labels must be int64 [3]"));
  const models::RatioScore<Schedule> estimate(schedule, torch::zeros({3, 1}));
  CHECK_THROWS_WITH(estimate.score(0.5, torch::zeros({4, 2}), {}), Catch::Contains("y must be [B, 1]"));
  CHECK_THROWS_WITH(estimate.score(0.5, torch::zeros({4, 1}), torch::zeros({4}, torch::kLong)),
                    Catch::Contains("the data has no labels"));
  CHECK_THROWS_WITH(estimate.score(1.0, torch::zeros({4, 1}), {}), Catch::Contains("sigma(s) is 0"));
}

// The exact-score floor of the q-learning study: the simulator driven by the ratio
// estimator itself, no learning. For one data point x0 the estimate is the exact
// score -(y - alpha x0) / sigma^2 of N(alpha x0, sigma^2), Euler-Maruyama on the
// OU process (f = -1, g^2 = 2) is then linear in y, and the samples are Gaussian
// with a mean and variance that a scalar recursion gives exactly:
//   m' = (1 + h) m - 2 h (m - alpha x0) / sigma^2,
//   v' = (1 + h - 2 h / sigma^2)^2 v + 2 h,   from m = 0, v = sigma(T)^2.
// The last step adds variance 2 h however exact the score: the floor at step h.
TEST_CASE("the exact-score floor of Euler-Maruyama matches its closed form", "[models][ratio][floor]") {
  const double horizon = 5.0, x0 = 1.5;
  const Schedule schedule({.horizon = horizon});
  const models::RatioScore<Schedule> estimate(schedule, torch::full({1, 1}, x0, torch::kDouble), {},
                                              {.density_floor = 1e-300});
  for (const std::size_t steps : {20, 50}) {
    const sde::TimeGrid grid = sde::TimeGrid::uniform(horizon, steps);
    double m = 0.0, v = std::pow(schedule.sigma(horizon), 2);
    for (std::size_t k = 0; k + 1 < grid.size(); ++k) {
      const double h = grid[k + 1] - grid[k], s = horizon - grid[k];
      const double alpha = schedule.alpha(s), var = std::pow(schedule.sigma(s), 2);
      m = (1.0 + h) * m - 2.0 * h * (m - alpha * x0) / var;
      v = std::pow(1.0 + h - 2.0 * h / var, 2) * v + 2.0 * h;
    }
    const int64_t n = 200000;
    auto generator = make_generator(11);
    sde::IntegrateOptions options;
    options.generator = generator;
    const torch::Tensor prior = sde::sample_prior(schedule, {n, 1}, generator, torch::kDouble);
    const torch::Tensor y =
        sde::integrate(schedule, estimate, sde::EulerMaruyama{}, grid, prior, {}, options).final_state;
    const double mean = y.mean().item<double>(), variance = y.var().item<double>();
    INFO(steps << " steps: mean " << mean << " (exact " << m << "), variance " << variance << " (exact " << v << ")");
    // 5 standard errors of the mean and of a normal sample's variance.
    CHECK(std::abs(mean - m) < 5.0 * std::sqrt(v / n));
    CHECK(std::abs(variance - v) < 5.0 * v * std::sqrt(2.0 / n));
    // The floor is the last step's noise: the samples' variance is 2 h to within
    // 1% (the exact value's distance from 2 h) plus 5 standard errors.
    CHECK(std::abs(variance / (2.0 * horizon / double(steps)) - 1.0) < 0.01 + 5.0 * std::sqrt(2.0 / n));
  }
}
