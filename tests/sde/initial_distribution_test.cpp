// The learned initial distribution (sde/initial_distribution.hpp): its draws, its
// KL terms against closed forms, its gradients, its rounds and its checkpoint.

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include <torch/torch.h>

#include "diffctl/io/checkpoint.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/initial_distribution.hpp"
#include "diffctl/sde/schedules.hpp"
#include "support/temp_dir.hpp"

using namespace diffctl;
using Catch::Matchers::Contains;

namespace {
// KL(N(m 1, s^2 I_d) || N(0, p^2 I_d)) = d log(p / s) + d (s^2 + m^2) / (2 p^2) - d / 2.
// d = 3, m = 0.5, s = 3, p = 1.5: 3 log 0.5 + 27.75 / 4.5 - 1.5.
constexpr double kShiftedKl = -2.0794415416798357 + 6.1666666666666667 - 1.5;

void move_to_shifted(sde::LearnedGaussianInitial& initial) {
  torch::NoGradGuard no_grad;
  initial.parameters()[0].fill_(0.5);
  initial.parameters()[1].fill_(std::log(3.0));
}
}  // namespace

TEST_CASE("the initial distribution starts at the schedule's prior", "[sde][initial]") {
  // A VE schedule's prior is far from N(0, I), so a draw that ignored the std shows.
  const sde::Ve schedule;
  auto initial = sde::LearnedGaussianInitial::prior_of(schedule, {3});
  const double prior_std = schedule.sigma(schedule.horizon());
  REQUIRE(prior_std > 10.0);
  CHECK(initial.log_std().item<double>() == Approx(std::log(prior_std)).margin(1e-7));
  auto generator = make_generator(11);
  const torch::Tensor x = initial.draw(20000, generator).to(torch::kDouble);
  REQUIRE(x.sizes() == torch::IntArrayRef({20000, 3}));
  CHECK(!x.requires_grad());
  // 60,000 standard normals times prior_std: mean within 5 standard errors.
  CHECK(std::abs(x.mean().item<double>()) < 5.0 * prior_std / std::sqrt(60000.0));
  CHECK(x.std().item<double>() == Approx(prior_std).epsilon(0.02));
  CHECK(initial.kl_to_prior().item<double>() == Approx(0.0).margin(1e-6));
  CHECK(initial.kl_to_previous().item<double>() == Approx(0.0).margin(1e-6));
}

TEST_CASE("the initial distribution's KL terms have their closed form", "[sde][initial][kl]") {
  sde::LearnedGaussianInitial initial({3}, 1.5);
  move_to_shifted(initial);
  CHECK(initial.kl_to_prior().item<double>() == Approx(kShiftedKl).epsilon(1e-5));
  CHECK(initial.kl_to_previous().item<double>() == Approx(kShiftedKl).epsilon(1e-5));
  // A Monte Carlo estimate of E[log q(x) - log p(x)] under the shifted law agrees.
  auto generator = make_generator(3);
  const torch::Tensor x = initial.draw(200000, generator).to(torch::kDouble);
  const auto log_density = [&](double mean, double std) {
    return (-0.5 * ((x - mean) / std).square() - std::log(std) - 0.5 * std::log(2.0 * std::numbers::pi)).sum(1);
  };
  const double monte_carlo = (log_density(0.5, 3.0) - log_density(0.0, 1.5)).mean().item<double>();
  CHECK(monte_carlo == Approx(kShiftedKl).epsilon(0.02));

  // Once the round ends, the shifted law is the previous round's: no KL to it.
  initial.end_round();
  CHECK(initial.kl_to_previous().item<double>() == Approx(0.0).margin(1e-6));
  CHECK(initial.kl_to_prior().item<double>() == Approx(kShiftedKl).epsilon(1e-5));
}

TEST_CASE("draws are differentiable in the mean and log-std only while trainable", "[sde][initial]") {
  sde::LearnedGaussianInitial initial({2, 2}, 1.0);
  auto generator = make_generator(5);
  CHECK(!initial.draw(4, generator).requires_grad());
  initial.set_trainable(true);
  const torch::Tensor x = initial.draw(4, generator);
  REQUIRE(x.requires_grad());
  x.sum().backward();
  // d/dm sum(m + e^l xi) = n per coordinate; d/dl = sum(e^l xi) = sum(x - m).
  CHECK(torch::allclose(initial.parameters()[0].grad(), torch::full({2, 2}, 4.0)));
  CHECK(initial.parameters()[1].grad().item<double>() ==
        Approx((x.detach() - initial.mean().detach()).sum().item<double>()).margin(1e-5));
  initial.set_trainable(false);
  CHECK(!initial.draw(4, generator).requires_grad());
}

TEST_CASE("the initial distribution survives a checkpoint under its names", "[sde][initial][checkpoint]") {
  const testing::TempDir dir;
  sde::LearnedGaussianInitial saved({3}, 1.5);
  move_to_shifted(saved);
  saved.end_round();
  {
    torch::NoGradGuard no_grad;
    saved.parameters()[0].fill_(-1.0);
  }
  io::Checkpoint checkpoint;
  saved.add_to(checkpoint);
  checkpoint.step = 2;
  io::save_checkpoint(dir / "initial.ckpt", checkpoint);

  sde::LearnedGaussianInitial loaded({3}, 1.5);
  io::Checkpoint into;
  loaded.add_to(into);
  CHECK(io::load_checkpoint(dir / "initial.ckpt", into) == 2);
  CHECK(torch::equal(loaded.mean(), saved.mean()));
  CHECK(torch::equal(loaded.log_std(), saved.log_std()));
  CHECK(loaded.kl_to_previous().item<double>() == Approx(saved.kl_to_previous().item<double>()));
  CHECK(loaded.kl_to_prior().item<double>() == Approx(saved.kl_to_prior().item<double>()));

  // The names SEIKO's checkpoints have always used.
  torch::Tensor mean, log_std, previous_mean, previous_log_std;
  io::Checkpoint by_name;
  by_name.tensors = {{"initial_mean", &mean},
                     {"initial_log_std", &log_std},
                     {"previous_initial_mean", &previous_mean},
                     {"previous_initial_log_std", &previous_log_std}};
  io::load_checkpoint(dir / "initial.ckpt", by_name);
  CHECK(torch::equal(mean, saved.mean()));
  CHECK(previous_mean.eq(0.5).all().item<bool>());
  CHECK(previous_log_std.item<double>() == Approx(std::log(3.0)));
}

TEST_CASE("the initial distribution refuses an empty shape and a non-positive std", "[sde][initial]") {
  CHECK_THROWS_WITH(sde::LearnedGaussianInitial({}, 1.0), Contains("sample shape is empty"));
  CHECK_THROWS_WITH(sde::LearnedGaussianInitial({2}, 0.0), Contains("std must be > 0, found 0"));
  CHECK_THROWS_WITH(sde::LearnedGaussianInitial({2}, std::nan("")), Contains("std must be > 0"));
}
