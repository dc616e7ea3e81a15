#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "diffctl/runtime.hpp"
#include "diffctl/sde/schedules.hpp"

using namespace diffctl;
using namespace diffctl::sde;

namespace {

// The identities every schedule must satisfy, checked by central differences:
// f = d log(alpha)/ds and g^2 = d(sigma^2)/ds - 2 f sigma^2.
template <class Schedule>
void check_forward_process_identities(const Schedule& schedule) {
  const double horizon = schedule.horizon();
  for (const double fraction : {0.05, 0.2, 0.5, 0.8, 0.95}) {
    const double s = fraction * horizon, ds = 1e-6 * horizon;
    const double dlog_alpha = (std::log(schedule.alpha(s + ds)) - std::log(schedule.alpha(s - ds))) / (2 * ds);
    const auto var = [&](double at) { return schedule.sigma(at) * schedule.sigma(at); };
    const double dvar = (var(s + ds) - var(s - ds)) / (2 * ds);
    const double f = schedule.drift_coef(s), g = schedule.diffusion(s);
    INFO(Schedule::name << " at s = " << s);
    CHECK(f == Approx(dlog_alpha).epsilon(1e-6).margin(1e-9));
    CHECK(g * g == Approx(dvar - 2 * f * var(s)).epsilon(1e-6));
  }
}

}  // namespace

TEST_CASE("schedules obey the forward-process identities", "[schedules]") {
  check_forward_process_identities(VpLinear{});
  check_forward_process_identities(VpLinear({.beta_min = 0.5, .beta_max = 10.0, .horizon = 2.0}));
  check_forward_process_identities(VpCosine{});
  check_forward_process_identities(Ve{});
  check_forward_process_identities(OrnsteinUhlenbeck{});
  check_forward_process_identities(OrnsteinUhlenbeck({.theta = 0.5, .g = 3.0, .horizon = 4.0}));
}

TEST_CASE("schedules match their closed forms", "[schedules]") {
  const VpLinear vp;
  CHECK(vp.alpha(0.0) == 1.0);
  CHECK(vp.sigma(0.0) == 0.0);
  CHECK(vp.alpha(1.0) == Approx(std::exp(-0.5 * 0.1 - 0.25 * 19.9)));
  CHECK(vp.diffusion(1.0) == Approx(std::sqrt(20.0)));
  for (const double s : {0.01, 0.3, 1.0}) CHECK(vp.alpha(s) * vp.alpha(s) + vp.sigma(s) * vp.sigma(s) == Approx(1.0));

  const VpCosine cosine;
  CHECK(cosine.alpha(0.0) == Approx(1.0));
  CHECK(cosine.alpha(cosine.horizon()) < 0.01);

  const Ve ve;
  CHECK(ve.sigma(0.0) == Approx(0.01));
  CHECK(ve.sigma(1.0) == Approx(50.0));
  CHECK(ve.alpha(0.7) == 1.0);

  const OrnsteinUhlenbeck ou;  // dX = -X ds + sqrt(2) dW
  for (const double s : {0.1, 0.5, 1.0}) {
    CHECK(ou.alpha(s) == Approx(std::exp(-s)));
    CHECK(ou.sigma(s) * ou.sigma(s) == Approx(1.0 - std::exp(-2.0 * s)));
    CHECK(ou.diffusion(s) == Approx(std::sqrt(2.0)));
  }
}

TEST_CASE("score, epsilon and x0 predictions convert into one another", "[schedules]") {
  const VpLinear schedule;
  const double s = 0.4;
  const torch::Tensor x0 = torch::randn({16, 3}, torch::kDouble);
  const torch::Tensor eps = torch::randn({16, 3}, torch::kDouble);
  const torch::Tensor x = schedule.alpha(s) * x0 + schedule.sigma(s) * eps;

  const torch::Tensor score = score_from_epsilon(schedule, s, eps);
  CHECK(torch::allclose(score, -eps / schedule.sigma(s)));
  CHECK(torch::allclose(epsilon_from_score(schedule, s, score), eps));
  CHECK(torch::allclose(x0_from_epsilon(schedule, s, x, eps), x0));
  CHECK(torch::allclose(epsilon_from_x0(schedule, s, x, x0), eps));
  CHECK(torch::allclose(x0_from_score(schedule, s, x, score), x0));
  CHECK(torch::allclose(score_from_x0(schedule, s, x, x0), score));
}

TEST_CASE("schedules reject bad options and times", "[schedules][errors]") {
  CHECK_THROWS_WITH(VpLinear({.beta_min = 1.0, .beta_max = 0.5}), Catch::Contains("beta_min <= beta_max"));
  CHECK_THROWS_WITH(VpCosine({.horizon = 1.0}), Catch::Contains("horizon must lie in (0, 1)"));
  CHECK_THROWS_WITH(Ve({.sigma_min = 1.0, .sigma_max = 1.0}), Catch::Contains("sigma_min < sigma_max"));
  CHECK_THROWS_WITH(OrnsteinUhlenbeck({.theta = 0.0}), Catch::Contains("theta must be positive"));
  CHECK_THROWS_WITH(VpLinear{}.alpha(1.5), Catch::Contains("vp-linear: forward time s must lie in [0, 1], found 1.5"));
  CHECK_THROWS_WITH(Ve{}.sigma(-0.1), Catch::Contains("ve: forward time s"));
}

TEST_CASE("the prior has the schedule's terminal spread", "[schedules]") {
  const Ve schedule;
  const torch::Tensor x = sample_prior(schedule, {50000, 2}, make_generator(1), torch::kDouble);
  CHECK(x.std().item<double>() == Approx(50.0).epsilon(4 * std::sqrt(0.5 / 1e5)));
}

TEST_CASE("a forward draw is alpha(s) x0 + sigma(s) eps at a uniform time", "[schedules]") {
  const VpCosine schedule;
  const int64_t n = 20000;
  const torch::Tensor x0 = torch::full({n, 3}, 0.7, torch::kDouble);
  const ForwardDraw draw = forward_draw(schedule, x0, make_generator(4));
  REQUIRE(draw.s.size() == static_cast<std::size_t>(n));
  REQUIRE(draw.x.sizes() == x0.sizes());
  double total = 0.0, worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double s = draw.s[static_cast<std::size_t>(i)];
    REQUIRE(s >= 0.0);
    REQUIRE(s <= schedule.horizon());
    total += s;
    const torch::Tensor rebuilt = schedule.alpha(s) * x0[i] + schedule.sigma(s) * draw.eps[i];
    worst = std::max(worst, (rebuilt - draw.x[i]).abs().max().item<double>());
  }
  CHECK(worst < 1e-12);
  // s ~ U(0, T): mean T / 2 with a standard error of T / sqrt(12 n).
  CHECK(total / double(n) == Approx(schedule.horizon() / 2).margin(5 * schedule.horizon() / std::sqrt(12.0 * n)));
  CHECK(draw.eps.std().item<double>() == Approx(1.0).margin(5 * std::sqrt(0.5 / (3.0 * n))));
  CHECK_THROWS_WITH(forward_draw(schedule, torch::zeros({0, 3}), make_generator(4)),
                    Catch::Contains("expected a batch"));
}
