// Solvers against the closed-form Gaussian case (tests/support/gaussian_case.hpp).
//
// Moment checks allow 4 standard errors of the sample statistic plus the solver's
// discretisation bias at the step count used. The biases are properties of the
// discrete schemes: for linear-Gaussian dynamics each step maps the state's mean
// and variance affinely, so a scheme's exact terminal moments follow from a
// scalar recursion. The allowances below are those exact biases for this case
// (VP-linear, m = (1.5, -0.5), sd = 0.5, 1000 uniform steps) with about 50% margin.

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <vector>

#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"
#include "support/gaussian_case.hpp"

using namespace diffctl;
using namespace diffctl::sde;
using diffctl::testing::GaussianCase;

namespace {

constexpr int64_t kSamples = 100000;
constexpr std::size_t kSteps = 1000;

struct Allowance {
  double mean;          // absolute, on each coordinate
  double variance_rel;  // relative to the data variance
};

template <class Schedule, class Solver>
torch::Tensor sample_final(const GaussianCase<Schedule>& c, const Solver& solver, std::size_t steps, int64_t n,
                           std::uint64_t seed) {
  const torch::Tensor x0 = c.draw(0.0, n, seed);
  IntegrateOptions options;
  options.generator = make_generator(seed + 1);
  return integrate(c.schedule, c.model(), solver, TimeGrid::uniform(c.schedule.horizon(), steps), x0, {}, options)
      .final_state;
}

template <class Schedule, class Solver>
void check_moments(const GaussianCase<Schedule>& c, const Solver& solver, Allowance allowance, int64_t n = kSamples,
                   std::size_t steps = kSteps) {
  const torch::Tensor x = sample_final(c, solver, steps, n, 11);
  const double target_var = c.variance(c.schedule.horizon());
  const double target_sd = std::sqrt(target_var);
  const double mean_tol = 4.0 * target_sd / std::sqrt(double(n)) + allowance.mean;
  const double var_tol = 4.0 * target_var * std::sqrt(2.0 / double(n - 1)) + allowance.variance_rel * target_var;
  const torch::Tensor mean = x.mean(0), var = x.var(0);
  for (int64_t d = 0; d < x.size(1); ++d) {
    INFO(Solver::name << " coordinate " << d << ": mean " << mean[d].item().toDouble() << ", var "
                      << var[d].item().toDouble() << ", target var " << target_var);
    CHECK(std::abs(mean[d].item().toDouble() - c.mean[d].item().toDouble()) <= mean_tol);
    CHECK(std::abs(var[d].item().toDouble() - target_var) <= var_tol);
  }
}

// Least-squares slope of log(error) against log(step size).
double convergence_order(const std::vector<std::size_t>& steps, const std::vector<double>& errors) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  const double n = double(steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const double lx = std::log(1.0 / double(steps[i])), ly = std::log(errors[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

// Largest deviation of a deterministic solver's end state from the exact
// probability-flow map, from the same 2000 starting points.
template <class Solver>
double flow_error(const GaussianCase<VpLinear>& c, const Solver& solver, std::size_t steps) {
  const torch::Tensor x0 = c.draw(0.0, 2000, 5);
  const torch::Tensor end =
      integrate(c.schedule, c.model(), solver, TimeGrid::uniform(c.schedule.horizon(), steps), x0).final_state;
  return (end - c.flow(x0, 0.0, c.schedule.horizon())).abs().max().item<double>();
}

}  // namespace

// One test case per solver, so that they run in parallel under ctest.
TEST_CASE("euler-maruyama samples have the data's mean and variance", "[solvers][statistical]") {
  check_moments(GaussianCase<VpLinear>(), EulerMaruyama{}, {1.5e-3, 2.5e-3});
}
TEST_CASE("probability-flow euler samples have the data's mean and variance", "[solvers][statistical]") {
  check_moments(GaussianCase<VpLinear>(), ProbabilityFlowEuler{}, {1e-3, 1.5e-3});
}
TEST_CASE("heun samples have the data's mean and variance", "[solvers][statistical]") {
  check_moments(GaussianCase<VpLinear>(), Heun{}, {1e-4, 1e-4});
}
TEST_CASE("ddim samples have the data's mean and variance", "[solvers][statistical]") {
  check_moments(GaussianCase<VpLinear>(), Ddim({.eta = 0.0}), {1e-4, 1e-2});
  check_moments(GaussianCase<VpLinear>(), Ddim({.eta = 1.0}), {1e-4, 2.5e-2});
}
TEST_CASE("ddpm samples have the data's mean and variance", "[solvers][statistical]") {
  check_moments(GaussianCase<VpLinear>(), Ddpm{}, {1e-4, 2.5e-2});
  check_moments(GaussianCase<VpLinear>(), Ddpm({.variance = DdpmVariance::forward}), {1e-4, 5e-3});
}

TEST_CASE("solvers reach the data distribution on every schedule", "[solvers][statistical]") {
  // Fewer samples; the same allowances as above plus the schedules' own stiffness.
  constexpr int64_t n = 20000;
  SECTION("vp-cosine") {
    const GaussianCase<VpCosine> c;
    check_moments(c, EulerMaruyama{}, {5e-3, 1e-2}, n);
    check_moments(c, Heun{}, {1e-3, 1e-2}, n);
    check_moments(c, Ddim{}, {1e-3, 2e-2}, n);
  }
  SECTION("ve") {
    const GaussianCase<Ve> c;
    check_moments(c, EulerMaruyama{}, {5e-3, 1e-2}, n);
    check_moments(c, Heun{}, {1e-3, 1e-2}, n);
    check_moments(c, Ddpm{}, {1e-3, 2e-2}, n);
  }
  SECTION("ornstein-uhlenbeck") {
    // alpha(T) = e^-1 is far from 0: start from the exact marginal at t = 0.
    const GaussianCase<OrnsteinUhlenbeck> c;
    check_moments(c, EulerMaruyama{}, {5e-3, 1e-2}, n);
    check_moments(c, Heun{}, {1e-3, 1e-2}, n);
    check_moments(c, Ddim({.eta = 1.0}), {1e-3, 2e-2}, n);
  }
}

TEST_CASE("probability-flow euler converges at order 1 and heun at order 2", "[solvers][convergence]") {
  const GaussianCase<VpLinear> c;
  const std::vector<std::size_t> steps{20, 40, 80, 160, 320};
  std::vector<double> euler, heun;
  for (const auto n : steps) {
    euler.push_back(flow_error(c, ProbabilityFlowEuler{}, n));
    heun.push_back(flow_error(c, Heun{}, n));
  }
  const double euler_order = convergence_order(steps, euler);
  const double heun_order = convergence_order(steps, heun);
  INFO("pf-euler errors " << euler.front() << " .. " << euler.back() << ", order " << euler_order);
  INFO("heun errors " << heun.front() << " .. " << heun.back() << ", order " << heun_order);
  CHECK(euler_order == Approx(1.0).margin(0.1));
  CHECK(heun_order == Approx(2.0).margin(0.15));
}

TEST_CASE("ddim with eta=0 is deterministic and converges to the probability-flow solution", "[solvers][ddim]") {
  const GaussianCase<VpLinear> c;
  const torch::Tensor x0 = c.draw(0.0, 1000, 3);
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 100);
  IntegrateOptions first, second;
  first.generator = make_generator(1);
  second.generator = make_generator(2);
  const auto a = integrate(c.schedule, c.model(), Ddim{}, grid, x0, {}, first).final_state;
  const auto b = integrate(c.schedule, c.model(), Ddim{}, grid, x0, {}, second).final_state;
  CHECK(torch::equal(a, b));

  const std::vector<std::size_t> steps{50, 200, 800};
  std::vector<double> errors;
  for (const auto n : steps) errors.push_back(flow_error(c, Ddim{}, n));
  INFO("ddim errors against the exact flow: " << errors[0] << ", " << errors[1] << ", " << errors[2]);
  CHECK(errors[1] < errors[0] / 3.0);
  CHECK(errors[2] < errors[1] / 3.0);
  CHECK(errors[2] < 1e-2);
}

TEST_CASE("ddpm ancestral and ddim with eta=1 agree in distribution", "[solvers][ddpm][statistical]") {
  const GaussianCase<VpLinear> c;
  // Both are the Gaussian posterior q(x_s' | x_s, x0_hat): from the same noise
  // they give the same samples, up to rounding of their different formulas ...
  const auto ddpm = sample_final(c, Ddpm{}, 200, 4000, 21);
  const auto ddim = sample_final(c, Ddim({.eta = 1.0}), 200, 4000, 21);
  CHECK(torch::allclose(ddpm, ddim, 1e-9, 1e-9));
  // ... and from independent noise, samples whose moments agree within sampling error.
  const auto other = sample_final(c, Ddim({.eta = 1.0}), 200, kSamples, 22);
  const auto ddpm_large = sample_final(c, Ddpm{}, 200, kSamples, 23);
  const double var = c.variance(c.schedule.horizon());
  const double mean_tol = 4.0 * std::sqrt(2.0 * var / double(kSamples));
  const double var_tol = 4.0 * var * std::sqrt(4.0 / double(kSamples));
  CHECK((ddpm_large.mean(0) - other.mean(0)).abs().max().item<double>() < mean_tol);
  CHECK((ddpm_large.var(0) - other.var(0)).abs().max().item<double>() < var_tol);
}

TEST_CASE("ddim's x0 clipping bounds the prediction and keeps eps consistent with it", "[solvers][ddim]") {
  // Data N((1.5, -0.5), 0.5^2): from the prior, x0 predictions spread well beyond
  // [-1, 1]. The clipped step is alpha' clamp(x0) + sigma' (x - alpha clamp(x0)) / sigma.
  const GaussianCase<VpLinear> c;
  const auto model = c.model();
  const torch::Tensor x = c.draw(0.0, 256, 5);
  const double t = 0.0, t_next = 0.1;
  const double s = c.schedule.horizon() - t, s_next = c.schedule.horizon() - t_next;
  const double a = c.schedule.alpha(s), sigma = c.schedule.sigma(s);
  const torch::Tensor score = model.score(t, x, {});
  const torch::Tensor x0 = (x + sigma * sigma * score) / a;
  REQUIRE(x0.abs().max().item<double>() > 1.0);
  const torch::Tensor bounded = x0.clamp(-1.0, 1.0);
  const torch::Tensor expected =
      c.schedule.alpha(s_next) * bounded + c.schedule.sigma(s_next) * (x - a * bounded) / sigma;
  const auto clipped = Ddim({.clip_x0 = 1.0}).transition(c.schedule, model, t, t_next, x, {});
  CHECK(torch::allclose(clipped.mean, expected, 1e-10, 1e-10));
  // A bound the predictions never reach changes nothing.
  const auto loose = Ddim({.clip_x0 = 1e6}).transition(c.schedule, model, t, t_next, x, {});
  const auto plain = Ddim{}.transition(c.schedule, model, t, t_next, x, {});
  CHECK(torch::allclose(loose.mean, plain.mean, 1e-12, 1e-12));
  CHECK_THROWS_WITH(Ddim({.clip_x0 = 0.0}), Catch::Contains("clip_x0 must be > 0"));
}

TEST_CASE("ddpm's x0 clipping takes the posterior mean at the clamped x0", "[solvers][ddpm]") {
  // The posterior mean of q(x_s' | x_s, x0) is (alpha' b^2 x0 + a sigma'^2 x) / sigma^2
  // with a = alpha / alpha', b^2 = sigma^2 - a^2 sigma'^2; unclamped, it is the
  // epsilon form's mean.
  const GaussianCase<VpLinear> c;
  const auto model = c.model();
  const torch::Tensor x = c.draw(0.0, 256, 6);
  const double t = 0.0, t_next = 0.1;
  const double s = c.schedule.horizon() - t, s_next = c.schedule.horizon() - t_next;
  const double alpha = c.schedule.alpha(s), sigma = c.schedule.sigma(s);
  const double alpha_next = c.schedule.alpha(s_next), sigma_next = c.schedule.sigma(s_next);
  const double a = alpha / alpha_next, b2 = sigma * sigma - a * a * sigma_next * sigma_next;
  const torch::Tensor x0 = (x + sigma * sigma * model.score(t, x, {})) / alpha;
  const auto posterior_mean = [&](const torch::Tensor& at) {
    return (alpha_next * b2 * at + a * sigma_next * sigma_next * x) / (sigma * sigma);
  };
  const auto clipped = Ddpm({.clip_x0 = 1.0}).transition(c.schedule, model, t, t_next, x, {});
  CHECK(torch::allclose(clipped.mean, posterior_mean(x0.clamp(-1.0, 1.0)), 1e-10, 1e-10));
  const auto plain = Ddpm{}.transition(c.schedule, model, t, t_next, x, {});
  CHECK(torch::allclose(plain.mean, posterior_mean(x0), 1e-9, 1e-9));
  CHECK(clipped.noise_std == plain.noise_std);
}

TEST_CASE("solvers reject steps outside the schedule", "[solvers][errors]") {
  const GaussianCase<VpLinear> c;
  const auto model = c.model();
  const torch::Tensor x = torch::zeros({4, 2}, torch::kDouble);
  CHECK_THROWS_WITH(EulerMaruyama{}.transition(c.schedule, model, 0.5, 0.5, x, {}), Catch::Contains("t < t_next"));
  CHECK_THROWS_WITH(Heun{}.transition(c.schedule, model, 0.5, 1.5, x, {}), Catch::Contains("t_next <= T"));
  CHECK_THROWS_WITH(Ddim({.eta = 1.5}), Catch::Contains("eta must lie in [0, 1]"));
}

TEST_CASE("a step's log-probability is the Gaussian density of its transition", "[solvers][transition]") {
  // Known answers, two steps stacked with their own noise: N(next; 0, 0.5^2 I) in
  // 2-D at (1, 0) is -1 / (2 * 0.25) - 2 log 0.5 - log(2 pi); N(next; 0, 2^2 I) at
  // (2, 0) is -4 / (2 * 4) - 2 log 2 - log(2 pi).
  const StepStack steps{torch::zeros({2, 1, 2}, torch::kDouble), torch::tensor({0.5, 2.0}, torch::kDouble)};
  const torch::Tensor next = torch::tensor({{{1.0, 0.0}}, {{2.0, 0.0}}}, torch::kDouble);
  const torch::Tensor found = log_prob(steps, next);
  const double log_2pi = std::log(2.0 * std::numbers::pi);
  CHECK(found[0][0].item<double>() == Approx(-2.0 - 2.0 * std::log(0.5) - log_2pi).epsilon(1e-12));
  CHECK(found[1][0].item<double>() == Approx(-0.5 - 2.0 * std::log(2.0) - log_2pi).epsilon(1e-12));
  // The density of a DDPM step integrates to 1 over a fine grid of 1-D states.
  const GaussianCase<VpLinear> c{VpLinear{}, torch::tensor({0.3}, torch::kDouble), 0.7};
  const Transition ddpm =
      Ddpm().transition(c.schedule, c.model(), 0.5, 0.6, torch::full({1, 1}, 0.2, torch::kDouble), {});
  const torch::Tensor points = torch::linspace(-6.0, 6.0, 24001, torch::kDouble).view({1, -1, 1});
  const StepStack broadcast = StepStack::of(Transition{ddpm.mean.expand({points.size(1), 1}), ddpm.noise_std, {}});
  const double mass = (log_prob(broadcast, points).exp() * (12.0 / 24000.0)).sum().item<double>();
  CHECK(mass == Approx(1.0).epsilon(1e-6));
}
