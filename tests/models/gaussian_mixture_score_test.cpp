#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/runtime.hpp"

using namespace diffctl;
using Mixture = models::GaussianMixtureScore<sde::VpLinear>;

namespace {

// log p_t(x) of the noised mixture, written directly as a density so autograd can
// differentiate it: the reference the closed-form score must match.
torch::Tensor log_density(const sde::VpLinear& schedule, double t, const torch::Tensor& x, const torch::Tensor& means,
                          const torch::Tensor& stds, const torch::Tensor& weights) {
  const double s = schedule.horizon() - t, a = schedule.alpha(s), sg = schedule.sigma(s);
  const auto d = double(x.size(1));
  const torch::Tensor var = a * a * stds.square() + sg * sg;                           // [K]
  const torch::Tensor sq = (x.unsqueeze(1) - a * means.unsqueeze(0)).square().sum(2);  // [B, K]
  const torch::Tensor log_components =
      (weights / weights.sum()).log() - 0.5 * d * (2 * std::numbers::pi * var).log() - 0.5 * sq / var;
  return torch::logsumexp(log_components, 1);
}

}  // namespace

TEST_CASE("the mixture score is the gradient of the noised log-density", "[models][mixture]") {
  const sde::VpLinear schedule;
  const torch::Tensor means = torch::tensor({{2.0, 0.0, 1.0}, {-1.0, 1.0, 0.0}, {0.0, -2.0, 0.5}}, torch::kDouble);
  const torch::Tensor stds = torch::tensor({0.3, 0.6, 0.1}, torch::kDouble);
  const torch::Tensor weights = torch::tensor({1.0, 2.0, 1.0}, torch::kDouble);
  const Mixture model(schedule, means, stds, weights);

  for (const double t : {0.0, 0.5, 0.9, 0.999}) {
    const torch::Tensor x = (2.0 * torch::randn({64, 3}, torch::kDouble)).requires_grad_();
    const torch::Tensor log_p = log_density(schedule, t, x, means, stds, weights);
    const torch::Tensor expected = torch::autograd::grad({log_p.sum()}, {x})[0];
    INFO("t = " << t);
    CHECK(torch::allclose(model.score(t, x.detach(), {}), expected, 1e-8, 1e-8));
  }
}

TEST_CASE("with a condition, the score is its own component's", "[models][mixture]") {
  const sde::VpLinear schedule;
  const torch::Tensor means = torch::tensor({{3.0, 0.0}, {-3.0, 0.0}}, torch::kDouble);
  const torch::Tensor stds = torch::tensor({0.5, 0.5}, torch::kDouble);
  const Mixture model(schedule, means, stds, torch::ones({2}, torch::kDouble));
  const auto one = Mixture::gaussian(schedule, means[1], 0.5);
  const torch::Tensor x = torch::randn({16, 2}, torch::kDouble);
  const torch::Tensor z = torch::ones({16}, torch::kLong);
  CHECK(torch::allclose(model.score(0.6, x, z), one.score(0.6, x, {}), 1e-10, 1e-10));
}

TEST_CASE("mixture samples have the mixture's moments", "[models][mixture][statistical]") {
  const sde::VpLinear schedule;
  const torch::Tensor means = torch::tensor({{1.0, 0.0}, {-1.0, 2.0}}, torch::kDouble);
  const Mixture model(schedule, means, torch::tensor({0.2, 0.4}, torch::kDouble),
                      torch::tensor({3.0, 1.0}, torch::kDouble));
  constexpr int64_t n = 100000;
  const auto [x, component] = model.sample(1.0, n, make_generator(5), torch::kDouble);
  // Mean 0.75 m_0 + 0.25 m_1; first coordinate's variance: within + between components.
  const torch::Tensor expected_mean = torch::tensor({0.5, 0.5}, torch::kDouble);
  const double var0 = 0.75 * 0.04 + 0.25 * 0.16 + 0.75 * 0.25 * 4.0;
  CHECK((x.mean(0) - expected_mean).abs().max().item<double>() < 4 * std::sqrt(1.0 / n));
  CHECK(x.var(0)[0].item<double>() == Approx(var0).epsilon(4 * std::sqrt(3.0 / n)));
  CHECK(component.to(torch::kDouble).mean().item<double>() == Approx(0.25).margin(4 * std::sqrt(0.1875 / n)));
}

TEST_CASE("the mixture rejects malformed parameters", "[models][mixture][errors]") {
  const sde::VpLinear schedule;
  const torch::Tensor means = torch::zeros({2, 3}, torch::kDouble);
  CHECK_THROWS_WITH(Mixture(schedule, means, torch::ones({3}), torch::ones({2})), Catch::Contains("stds must be [2]"));
  CHECK_THROWS_WITH(Mixture(schedule, means, torch::ones({2}), -torch::ones({2})),
                    Catch::Contains("weights must be > 0"));
  const Mixture model(schedule, means, torch::ones({2}), torch::ones({2}));
  CHECK_THROWS_WITH(model.score(0.5, torch::zeros({4, 2}), {}), Catch::Contains("x must be [B, [3]]"));
}
