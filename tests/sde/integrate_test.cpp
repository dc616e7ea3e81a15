// Controlled integration: impulses, recording, gradients, reproducibility, errors.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"
#include "support/gaussian_case.hpp"

using namespace diffctl;
using namespace diffctl::sde;
using diffctl::testing::GaussianCase;

namespace {

// Terminal shift of the mean caused by an impulse u at generation time t_k, as the
// continuous-time linear dynamics of the Gaussian case predict. A deviation d of
// the state evolves by d' = (-f - g^2 / v) d along the reverse SDE (whose mean
// obeys the same equation) and by d' = (-f - g^2 / (2 v)) d along the probability
// flow; with d log sqrt(v)/dt = -f - g^2/(2v) these integrate to the factors below.
double sde_shift_factor(const GaussianCase<VpLinear>& c, double t_k) {
  const double horizon = c.schedule.horizon();
  return c.variance(horizon) / c.variance(t_k) * c.alpha(t_k) / c.alpha(horizon);
}
double flow_shift_factor(const GaussianCase<VpLinear>& c, double t_k) {
  return std::sqrt(c.variance(c.schedule.horizon()) / c.variance(t_k));
}

template <class Solver>
void check_impulse_shift(const Solver& solver, double expected_factor, double t_k, const TimeGrid& grid) {
  const GaussianCase<VpLinear> c;
  const torch::Tensor x0 = c.draw(0.0, 500, 4);
  const torch::Tensor u = torch::tensor({1.0, -2.0}, torch::kDouble);
  IntegrateOptions options;
  options.generator = make_generator(9);
  const auto free = integrate(c.schedule, c.model(), solver, grid, x0, {}, options).final_state;
  options.generator = make_generator(9);
  const auto pushed = integrate(c.schedule, c.model(), solver, grid, x0, {}, {{t_k, u}}, options).final_state;
  const torch::Tensor shift = pushed - free;
  // With the same noise, the dynamics are affine in the state: every sample moves
  // by the same amount ...
  CHECK((shift - shift[0]).abs().max().item<double>() < 1e-10);
  // ... which is the continuous-time prediction up to the scheme's O(h) error.
  const torch::Tensor expected = expected_factor * u;
  INFO(Solver::name << ": shift " << shift[0] << " expected " << expected);
  CHECK(torch::allclose(shift[0], expected, 1e-2, 0.0));
}

// A model whose score turns NaN after generation time `from`.
struct BreaksAfter {
  models::GaussianMixtureScore<VpLinear> inner;
  double from;
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    torch::Tensor s = inner.score(t, x, z);
    return t > from ? s * std::numeric_limits<double>::quiet_NaN() : s;
  }
};

}  // namespace

TEST_CASE("an impulse shifts the terminal mean as the linear dynamics predict", "[integrate][impulse]") {
  const GaussianCase<VpLinear> c;
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 1000);
  const double t_k = 0.5;
  check_impulse_shift(EulerMaruyama{}, sde_shift_factor(c, t_k), t_k, grid);
  check_impulse_shift(Ddpm{}, sde_shift_factor(c, t_k), t_k, grid);
  check_impulse_shift(ProbabilityFlowEuler{}, flow_shift_factor(c, t_k), t_k, grid);
  check_impulse_shift(Heun{}, flow_shift_factor(c, t_k), t_k, grid);
  check_impulse_shift(Ddim{}, flow_shift_factor(c, t_k), t_k, grid);
}

TEST_CASE("impulses at the end add to the state exactly, and impulses at one time add up", "[integrate][impulse]") {
  const GaussianCase<VpLinear> c;
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 50);
  const torch::Tensor x0 = c.draw(0.0, 64, 1);
  const torch::Tensor u = torch::randn({64, 2}, torch::kDouble);
  const auto free = integrate(c.schedule, c.model(), Heun{}, grid, x0).final_state;
  const auto at_end = integrate(c.schedule, c.model(), Heun{}, grid, x0, {}, {{grid.back(), u}}).final_state;
  CHECK(torch::equal(at_end, free + u));

  const auto once = integrate(c.schedule, c.model(), Heun{}, grid, x0, {}, {{grid[10], 2 * u}});
  const auto twice = integrate(c.schedule, c.model(), Heun{}, grid, x0, {}, {{grid[10], u}, {grid[10], u}});
  CHECK(torch::allclose(once.final_state, twice.final_state, 0.0, 1e-12));
}

TEST_CASE("recorded states and Tweedie estimates", "[integrate][record]") {
  const GaussianCase<VpLinear> c;
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 200);
  const torch::Tensor x0 = c.draw(0.0, 256, 2);
  const torch::Tensor u = torch::full({2}, 0.3, torch::kDouble);
  IntegrateOptions options;
  options.record_times = {grid.back(), grid[0], grid[100]};
  const auto trajectory = integrate(c.schedule, c.model(), EulerMaruyama{}, grid, x0, {}, {{grid[0], u}}, options);

  REQUIRE(trajectory.times == std::vector<double>{grid[0], grid[100], grid.back()});
  REQUIRE(trajectory.states.size() == 3);
  REQUIRE(trajectory.x0_estimates.size() == 3);
  CHECK(torch::equal(trajectory.states[0], x0 + u));  // recorded after the impulse
  CHECK(torch::equal(trajectory.states[2], trajectory.final_state));
  // Gaussian data: E[x0 | x_t] = m + alpha sd^2 / v (x - alpha m).
  for (std::size_t r = 0; r < 2; ++r) {
    const double t = trajectory.times[r], a = c.alpha(t);
    const torch::Tensor expected = c.mean + a * c.sd * c.sd / c.variance(t) * (trajectory.states[r] - a * c.mean);
    CHECK(torch::allclose(trajectory.x0_estimates[r], expected, 1e-10, 1e-10));
  }
  CHECK(torch::equal(trajectory.x0_estimates[2], trajectory.final_state));  // sigma = 0 at T
}

TEST_CASE("gradients flow through the integration when asked", "[integrate][grad]") {
  const GaussianCase<VpLinear> c;
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 1000);
  const torch::Tensor x0 = c.draw(0.0, 100, 3).requires_grad_();
  const torch::Tensor u_early = torch::zeros({2}, torch::kDouble).requires_grad_();
  const torch::Tensor u_late = torch::zeros({2}, torch::kDouble).requires_grad_();
  const std::vector<Impulse> impulses{{grid[500], u_early}, {grid[950], u_late}};

  SECTION("without the option, no graph is built") {
    const auto end = integrate(c.schedule, c.model(), ProbabilityFlowEuler{}, grid, x0, {}, impulses).final_state;
    CHECK_FALSE(end.requires_grad());
  }
  SECTION("the whole trajectory") {
    IntegrateOptions options;
    options.with_grad = true;
    integrate(c.schedule, c.model(), ProbabilityFlowEuler{}, grid, x0, {}, impulses, options)
        .final_state.sum()
        .backward();
    // d x_T / d x_0 is the flow map's slope; d sum(x_T) / d u sums it over the batch.
    const double slope = flow_shift_factor(c, 0.0);
    CHECK(torch::allclose(x0.grad(), torch::full_like(x0, slope), 1e-2, 0.0));
    CHECK(u_early.grad()[0].item<double>() == Approx(100 * flow_shift_factor(c, grid[500])).epsilon(1e-2));
    CHECK(u_late.grad()[0].item<double>() == Approx(100 * flow_shift_factor(c, grid[950])).epsilon(1e-2));
  }
  SECTION("truncated to the last 100 steps") {
    IntegrateOptions options;
    options.with_grad = true;
    options.backprop_steps = 100;
    integrate(c.schedule, c.model(), ProbabilityFlowEuler{}, grid, x0, {}, impulses, options)
        .final_state.sum()
        .backward();
    CHECK_FALSE(x0.grad().defined());
    CHECK_FALSE(u_early.grad().defined());
    REQUIRE(u_late.grad().defined());
    CHECK(u_late.grad()[0].item<double>() == Approx(100 * flow_shift_factor(c, grid[950])).epsilon(1e-2));
  }
}

TEST_CASE("the same seed reproduces the same samples bit for bit", "[integrate][seed]") {
  const GaussianCase<VpLinear> c;
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 100);
  const auto run = [&](std::uint64_t seed) {
    IntegrateOptions options;
    options.generator = make_generator(seed);
    return integrate(c.schedule, c.model(), EulerMaruyama{}, grid,
                     sample_prior(c.schedule, {512, 2}, options.generator, torch::kDouble), {}, options)
        .final_state;
  };
  CHECK(torch::equal(run(42), run(42)));
  CHECK_FALSE(torch::equal(run(42), run(43)));
}

TEST_CASE("integrate names what is wrong with its input", "[integrate][errors]") {
  const GaussianCase<VpLinear> c;
  const auto model = c.model();
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 10);
  const torch::Tensor x = torch::zeros({8, 2}, torch::kDouble);

  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, TimeGrid::uniform(2.0, 10), x),
                    Catch::Contains("differs from the schedule's T"));
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x, {}, {{0.55, torch::ones({2})}}),
                    Catch::Contains("impulse time 0.55 is not a point of the time grid"));
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x, {}, {{0.5, torch::ones({3}, torch::kDouble)}}),
                    Catch::Contains("u has shape [3]"));
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x, {},
                              {{0.5, torch::ones({2}, torch::dtype(torch::kDouble).device(torch::kMeta))}}),
                    Catch::Contains("u is on meta but the state is on cpu"));
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x.clone().index_fill_(0, torch::tensor({3}), NAN)),
                    Catch::Contains("initial state holds NaN or Inf"));
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x, torch::zeros({7}, torch::kLong)),
                    Catch::Contains("conditions z must have shape [8]"));
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x, torch::zeros({8})),
                    Catch::Contains("conditions z must be int64"));
  IntegrateOptions options;
  options.record_times = {0.25};
  CHECK_THROWS_WITH(integrate(c.schedule, model, Heun{}, grid, x, {}, options),
                    Catch::Contains("record time 0.25 is not a point of the time grid"));

  // A state that breaks mid-way is reported with the last recorded time it was sound.
  options.record_times = {0.2, 0.5, 0.8};
  CHECK_THROWS_WITH(
      integrate(c.schedule, BreaksAfter{model, 0.6}, EulerMaruyama{}, grid, c.draw(0.0, 8, 1), {}, options),
      Catch::Contains("became NaN or Inf after t = 0.5"));
}

TEST_CASE("integration runs on CUDA when it is available", "[integrate][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("CUDA is not available: the CUDA path was not exercised");
    return;
  }
  const GaussianCase<VpLinear> c;
  const auto grid = TimeGrid::uniform(c.schedule.horizon(), 500);
  const torch::Tensor x0 = c.draw(0.0, 100000, 8).to(torch::kCUDA);
  IntegrateOptions options;
  options.generator = make_generator(3);  // a CPU generator drives CUDA states too
  const auto end = integrate(c.schedule, c.model(), EulerMaruyama{}, grid, x0, {},
                             {{grid[100], torch::zeros({2}, x0.options())}}, options)
                       .final_state;
  REQUIRE(end.device().is_cuda());
  const double var = c.variance(c.schedule.horizon());
  CHECK((end.mean(0).cpu() - c.mean).abs().max().item<double>() < 4 * std::sqrt(var / 1e5) + 3e-3);
  CHECK(std::abs(end.var(0).mean().item<double>() / var - 1.0) < 4 * std::sqrt(2.0 / 1e5) + 6e-3);
}
