// The KL terms of the fine-tuning objective (objective/path_kl.hpp,
// objective/sample_kl.hpp) against closed forms on linear-Gaussian models.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/models/switched_drift.hpp"
#include "diffctl/objective/path_kl.hpp"
#include "diffctl/objective/sample_kl.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"

using namespace diffctl;

namespace {
using Schedule = sde::VpLinear;
using Mixture = models::GaussianMixtureScore<Schedule>;
}  // namespace

TEST_CASE("the path KL of two linear-Gaussian samplers matches its moment recursion", "[objective][kl]") {
  // Pretrained: data N(0, 1); tuned: data N(0, 1.5^2). Both scores are linear, so
  // every Euler-Maruyama step is x -> a_k x + s_k xi and the KL of the tuned chain
  // against the pretrained steps is sum_k (a_k - b_k)^2 E[x_k^2] / (2 s_k^2), with
  // E[x_{k+1}^2] = a_k^2 E[x_k^2] + s_k^2 along the tuned chain.
  const Schedule schedule;
  const auto pretrained = Mixture::gaussian(schedule, torch::zeros({1}), 1.0);
  const auto tuned = Mixture::gaussian(schedule, torch::zeros({1}), 1.5);
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), 50);
  const sde::EulerMaruyama solver;

  double second_moment = std::pow(schedule.sigma(schedule.horizon()), 2), exact = 0.0;
  const torch::Tensor one = torch::ones({1, 1}, torch::kDouble);
  for (std::size_t k = 0; k < grid.steps(); ++k) {
    const Transition a = solver.transition(schedule, tuned, grid[k], grid[k + 1], one, {});
    const Transition b = solver.transition(schedule, pretrained, grid[k], grid[k + 1], one, {});
    const double ak = a.mean.item<double>(), bk = b.mean.item<double>();
    exact += (ak - bk) * (ak - bk) * second_moment / (2.0 * a.noise_std * a.noise_std);
    second_moment = ak * ak * second_moment + a.noise_std * a.noise_std;
  }

  constexpr int64_t n = 20000;
  auto generator = make_generator(5);
  torch::Tensor kl = torch::zeros({n}, torch::kDouble);
  sde::IntegrateOptions options;
  options.generator = generator;
  options.record_x0 = false;
  options.on_step = [&](const sde::StepRecord& r) {
    kl +=
        objective::transition_kl(r.step, solver.transition(schedule, pretrained, r.t, r.t_next, r.before_impulse, {}));
  };
  const torch::Tensor x_init = sde::sample_prior(schedule, {n, 1}, generator, torch::kDouble);
  sde::integrate(schedule, tuned, solver, grid, x_init, {}, options);
  const double estimate = kl.mean().item<double>(), standard_error = kl.std().item<double>() / std::sqrt(double(n));
  INFO("Monte Carlo " << estimate << " +- " << standard_error << ", exact " << exact);
  CHECK(exact > 0.01);
  CHECK(std::abs(estimate - exact) < 4.0 * standard_error);

  // The initial distributions' KL: D (l0 - l) + (D e^{2l} + |m - m0|^2) / (2 e^{2 l0}) - D / 2.
  const torch::Tensor m = torch::tensor({0.5, -1.0}), l = torch::tensor(std::log(0.5));
  const double expected = 2 * (0.0 - std::log(0.5)) + (2 * 0.25 + 1.25) / 2.0 - 1.0;
  CHECK(objective::gaussian_kl(m, l, torch::zeros({2}), torch::zeros({})).item<double>() == Approx(expected));
}

// Data N(m1, sd^2 I) against N(m2, sd^2 I): the scores differ by alpha (m1 - m2) / v
// with v = alpha^2 sd^2 + sigma^2, whatever the state, so an Euler-Maruyama step
// of length h costs h g^2 alpha^2 |m1 - m2|^2 / (2 v^2), the same for every sample.
struct TwoGaussians {
  Schedule schedule;
  torch::Tensor m1 = torch::tensor({1.0, -0.5}, torch::kDouble), m2 = torch::tensor({0.2, 0.4}, torch::kDouble);
  double sd = 0.6;
  Mixture first = Mixture::gaussian(schedule, m1, sd), second = Mixture::gaussian(schedule, m2, sd);
  sde::TimeGrid grid = sde::TimeGrid::uniform(schedule.horizon(), 30);

  // The KL of the grid's steps that start before `until`.
  double closed_form_kl(double until = std::numeric_limits<double>::infinity()) const {
    double kl = 0.0;
    for (std::size_t k = 0; k < grid.steps() && grid[k] < until; ++k) {
      const double s = schedule.horizon() - grid[k], h = grid[k + 1] - grid[k];
      const double alpha = schedule.alpha(s), v = alpha * alpha * sd * sd + std::pow(schedule.sigma(s), 2);
      kl += h * schedule.diffusion(s) * schedule.diffusion(s) * alpha * alpha *
            (m1 - m2).square().sum().item<double>() / (2.0 * v * v);
    }
    return kl;
  }
};

TEST_CASE("the path KL of samples between two Gaussian models has its closed form", "[objective][kl]") {
  const TwoGaussians pair;
  const auto& [schedule, m1, m2, sd, first, second, grid] = pair;
  const double expected = pair.closed_form_kl();
  at::Generator generator = make_generator(3);
  const torch::Tensor x_init = sde::sample_prior(schedule, {64, 2}, generator, torch::kDouble);
  const auto run =
      objective::sample_with_path_kl(schedule, first, second, sde::EulerMaruyama{}, grid, x_init, {}, generator);
  INFO("closed form " << expected << " nats");
  CHECK(run.x.sizes() == x_init.sizes());
  CHECK(run.kl.min().item<double>() == Approx(expected).epsilon(1e-9));
  CHECK(run.kl.max().item<double>() == Approx(expected).epsilon(1e-9));
  CHECK(objective::sample_with_path_kl(schedule, first, first, sde::EulerMaruyama{}, grid, x_init, {}, generator)
            .kl.abs()
            .max()
            .item<double>() == 0.0);

  // The clean last step: the same path (same noise), the last step's mean instead
  // of its draw, and the same KL.
  at::Generator noisy_generator = make_generator(8), clean_generator = make_generator(8);
  const auto noisy =
      objective::sample_with_path_kl(schedule, first, second, sde::EulerMaruyama{}, grid, x_init, {}, noisy_generator);
  const auto clean = objective::sample_with_path_kl(schedule, first, second, sde::EulerMaruyama{}, grid, x_init, {},
                                                    clean_generator, {.clean_last_step = true});
  CHECK(torch::equal(clean.kl, noisy.kl));
  const double h = grid[grid.steps()] - grid[grid.steps() - 1];
  const double last_std = schedule.diffusion(schedule.horizon() - grid[grid.steps() - 1]) * std::sqrt(h);
  const torch::Tensor drawn = (noisy.x - clean.x) / last_std;  // the last step's noise, N(0, I)
  CHECK(drawn.abs().max().item<double>() > 0.1);
  CHECK(drawn.std().item<double>() == Approx(1.0).margin(0.15));
}

// A drift that counts its evaluations.
struct Counted {
  const Mixture* model;
  int* calls;
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    ++*calls;
    return model->score(t, x, z);
  }
};

TEST_CASE("a model that hands over to the reference costs KL until the handover only", "[objective][kl]") {
  // `first` until t = 0.4 of the horizon, `second` after: the closed form of the
  // test above over the steps that start before then (t_0 ... t_12); told that the
  // model is the reference from then on, the same samples and KL without
  // evaluating the reference on those steps.
  const TwoGaussians pair;
  const auto& [schedule, m1, m2, sd, first, second, grid] = pair;
  const double handover = 0.4 * schedule.horizon() + 1e-9;
  const double expected = pair.closed_form_kl(handover);
  REQUIRE(expected < pair.closed_form_kl(grid[13] + 1e-9));
  REQUIRE(expected > pair.closed_form_kl(grid[12] - 1e-9));
  int all_steps = 0, until_handover = 0;
  const models::SwitchedDrift model(first, second, handover);
  at::Generator g1 = make_generator(5), g2 = make_generator(5);
  const torch::Tensor x_init = sde::sample_prior(schedule, {32, 2}, g1, torch::kDouble);
  sde::sample_prior(schedule, {32, 2}, g2, torch::kDouble);
  const auto every = objective::sample_with_path_kl(schedule, model, Counted{&second, &all_steps}, sde::EulerMaruyama{},
                                                    grid, x_init, {}, g1);
  const auto skipped =
      objective::sample_with_path_kl(schedule, model, Counted{&second, &until_handover}, sde::EulerMaruyama{}, grid,
                                     x_init, {}, g2, {.reference_from = handover});
  CHECK(every.kl.min().item<double>() == Approx(expected).epsilon(1e-9));
  CHECK(every.kl.max().item<double>() == Approx(expected).epsilon(1e-9));
  CHECK(torch::equal(every.x, skipped.x));
  CHECK(torch::equal(every.kl, skipped.kl));
  CHECK(all_steps == 30);
  CHECK(until_handover == 13);
}
