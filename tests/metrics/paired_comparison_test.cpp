#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <utility>
#include <vector>

#include "diffctl/metrics/paired_comparison.hpp"

using namespace diffctl::metrics;

TEST_CASE("incomplete beta has its closed forms", "[metrics][paired]") {
  for (const double x : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    CHECK(incomplete_beta(1.0, 1.0, x) == Approx(x).margin(1e-14));                      // uniform
    CHECK(incomplete_beta(3.0, 1.0, x) == Approx(x * x * x).margin(1e-14));              // x^a
    CHECK(incomplete_beta(1.0, 2.0, x) == Approx(1 - (1 - x) * (1 - x)).margin(1e-14));  // 1 - (1 - x)^b
  }
  for (const double a : {0.5, 2.0, 7.5, 40.0}) CHECK(incomplete_beta(a, a, 0.5) == Approx(0.5).margin(1e-13));
  CHECK_THROWS_AS(incomplete_beta(0.0, 1.0, 0.5), std::invalid_argument);
  CHECK_THROWS_AS(incomplete_beta(1.0, 1.0, 1.5), std::invalid_argument);
}

TEST_CASE("Student t quantiles match the tables at any degrees of freedom", "[metrics][paired]") {
  // Two-sided 95% critical values (Fisher and Yates' table, three decimals).
  const std::vector<std::pair<double, double>> table{{1, 12.706}, {2, 4.303},  {3, 3.182},  {10, 2.228},
                                                     {13, 2.160}, {18, 2.101}, {30, 2.042}, {120, 1.980}};
  for (const auto& [dof, value] : table) CHECK(student_t_quantile(0.975, dof) == Approx(value).margin(5e-4));
  // Toward the normal's 1.95996 as the degrees of freedom grow.
  CHECK(student_t_quantile(0.975, 1e7) == Approx(1.959964).margin(1e-5));
  // Closed forms: at one degree of freedom t is Cauchy, at two P(T <= t) = (1 + t / sqrt(2 + t^2)) / 2.
  CHECK(student_t_quantile(0.9, 1.0) == Approx(std::tan(std::numbers::pi * 0.4)).epsilon(1e-10));
  CHECK(student_t_cdf(1.5, 2.0) == Approx(0.5 * (1 + 1.5 / std::sqrt(2 + 2.25))).epsilon(1e-12));
  for (const double dof : {1.0, 2.5, 9.0, 60.0})
    for (const double p : {0.01, 0.3, 0.5, 0.8, 0.999}) {
      CHECK(student_t_cdf(student_t_quantile(p, dof), dof) == Approx(p).epsilon(1e-9));
      CHECK(student_t_quantile(1 - p, dof) == Approx(-student_t_quantile(p, dof)).margin(1e-9));
    }
  CHECK_THROWS_AS(student_t_quantile(1.0, 3.0), std::invalid_argument);
  CHECK_THROWS_AS(student_t_quantile(0.5, 0.0), std::invalid_argument);
}

TEST_CASE("mean_interval is the t-interval of the mean", "[metrics][paired]") {
  // Mean 1/15, sample sd sqrt(1/1200), standard error 1/60, t(2) = 4.3027.
  const std::vector<double> values{0.10, 0.05, 0.05};
  const MeanInterval interval = mean_interval(values);
  CHECK(interval.mean == Approx(1.0 / 15.0).epsilon(1e-12));
  CHECK(interval.half_width == Approx(4.302653 / 60.0).epsilon(1e-6));
  CHECK(interval.count == 3);
  CHECK(mean_interval(values, 0.9).half_width == Approx(2.919986 / 60.0).epsilon(1e-6));
  CHECK_THROWS_WITH(mean_interval(std::vector<double>{0.3}), Catch::Contains("at least two values"));
  CHECK_THROWS_AS(mean_interval(values, 1.0), std::invalid_argument);
}

TEST_CASE("sign-flip p-values count sign vectors", "[metrics][paired]") {
  // Three positive differences: only the observed vector and its negation reach |sum|.
  CHECK(sign_flip_p_value(std::vector<double>{0.10, 0.05, 0.05}) == 0.25);
  // Eight paired accuracy differences (examples/RESULTS.md, "Eight seeds"): 22 of the
  // 256 sign vectors reach |sum| = 0.166.
  const std::vector<double> eight{0.097, -0.012, 0.020, 0.038, 0.020, 0.002, -0.005, 0.006};
  CHECK(sign_flip_p_value(eight) == 22.0 / 256.0);
  std::vector<double> negated;
  for (const double d : eight) negated.push_back(-d);
  CHECK(sign_flip_p_value(negated) == 22.0 / 256.0);
  CHECK(sign_flip_p_value(std::vector<double>{0.0, 0.0, 0.0}) == 1.0);
  CHECK(sign_flip_p_value(std::vector<double>{0.02, -0.02}) == 1.0);

  // The Monte Carlo estimate agrees with the exact count (its sd at p ~ 0.09 is 0.0006).
  std::vector<double> sixteen;
  for (int i = 0; i < 16; ++i) sixteen.push_back(std::sin(1.3 * i) + 0.3);
  const double exact = sign_flip_p_value(sixteen);
  REQUIRE(exact > 0.05);
  REQUIRE(exact < 0.15);
  CHECK(sign_flip_p_value(sixteen, {.exact_up_to = 10, .draws = 200000, .seed = 7}) == Approx(exact).margin(0.003));
  // Beyond the exact range a p-value is never zero: 25 equal signs give at most 2 / (draws + 1).
  const double floor = sign_flip_p_value(std::vector<double>(25, 0.01), {.draws = 1000});
  CHECK(floor > 0.0);
  CHECK(floor <= 2.0 / 1001.0);

  CHECK_THROWS_AS(sign_flip_p_value(std::vector<double>{}), std::invalid_argument);
  CHECK_THROWS_AS(sign_flip_p_value(std::vector<double>{0.1, NAN}), std::invalid_argument);
}
