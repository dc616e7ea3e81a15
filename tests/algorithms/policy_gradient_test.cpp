// DDPO and DPOK on the 1-D problem of the q-learning tests, starting from a model
// that q-learning pretrained for 400 episodes on data N(1, 0.5^2).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/policy_gradient_eigen.hpp"
#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/runtime.hpp"

using namespace diffctl;
using Schedule = sde::OrnsteinUhlenbeck;
using Estimate = models::RatioScore<Schedule>;

namespace {

const Schedule kSchedule({.horizon = 2.0});
constexpr double kDt = 0.1;

struct NearTwo {
  torch::Tensor operator()(const torch::Tensor& y, const torch::Tensor&) const {
    return -(y.squeeze(1) - 2.0).square();
  }
};

models::TimeStateMlp pretrained_policy() {
  auto generator = make_generator(0);
  const torch::Tensor data = 1.0 + 0.5 * torch::randn({200, 1}, generator);
  algorithms::QLearning<Schedule, Estimate> learner(
      kSchedule, Estimate(kSchedule, data), 1, 0,
      {.temperature = 0.1, .dt = kDt, .batch = 64, .learning_rate = 0.01});
  for (int episode = 0; episode < 400; ++episode) learner.train_episode(generator);
  return learner.policy();
}

double mean_reward(const torch::Tensor& samples) { return NearTwo{}(samples, {}).mean().item<double>(); }

}  // namespace

TEST_CASE("the transition densities are those of the sampled chains", "[algorithms][policy-gradient]") {
  // Residuals of sampled steps against transition_means, in units of the step's
  // standard deviation, must be standard normal: 2000 chains x 20 steps.
  const models::TimeStateMlp policy(models::TimeStateMlpOptions{1, 1, 0, 16});
  auto generator = make_generator(1);
  const auto grid = algorithms::grid_with_step(kSchedule, kDt);
  const auto steps = algorithms::euler_steps(kSchedule, grid);
  const auto chains = algorithms::sample_chains(kSchedule, policy, grid, steps, 2000, 0, generator);
  torch::NoGradGuard no_grad;
  auto trained = policy;
  const auto [means, stds] = algorithms::transition_means(trained, grid, steps, chains);
  const torch::Tensor residual = (chains.states.narrow(0, 1, 20) - means) / stds.view({-1, 1, 1});
  const double n = double(residual.numel());
  CHECK(std::abs(residual.mean().item<double>()) < 4.0 / std::sqrt(n));
  CHECK(std::abs(residual.var().item<double>() - 1.0) < 4.0 * std::sqrt(2.0 / n));
  // and the log-density is the Gaussian one of those residuals.
  const torch::Tensor expected = -0.5 * residual.squeeze(2).square() - stds.log().view({-1, 1}) -
                                 0.5 * std::log(2.0 * std::numbers::pi);
  CHECK(torch::allclose(algorithms::transition_log_probs(means, stds, chains), expected, 1e-4, 1e-5));
}

TEST_CASE("DDPO raises the reward of a pretrained model", "[algorithms][policy-gradient]") {
  const auto pretrained = pretrained_policy();
  auto generator = make_generator(2);
  const double before = mean_reward(
      algorithms::sample_policy(kSchedule, pretrained, algorithms::grid_with_step(kSchedule, kDt), 4000,
                                {}, generator, sde::EulerMaruyama{}));
  algorithms::Ddpo<Schedule, NearTwo> ddpo(kSchedule, pretrained, NearTwo{},
                                           {.dt = kDt, .batch = 128, .learning_rate = 1e-3});
  const auto first = ddpo.train_iteration(generator);
  CHECK(first.kl == Approx(0.0).margin(1e-12));  // it starts as the pretrained model
  for (int iteration = 1; iteration < 60; ++iteration) ddpo.train_iteration(generator);
  const double after = mean_reward(ddpo.sample(4000, {}, generator));
  INFO("mean reward " << before << " -> " << after);
  CHECK(after > before + 0.1);
}

TEST_CASE("DPOK trades reward against KL by its weights", "[algorithms][policy-gradient]") {
  const auto pretrained = pretrained_policy();
  const auto fine_tune = [&](double kl_weight) {
    auto generator = make_generator(3);
    algorithms::Dpok<Schedule, NearTwo> dpok(
        kSchedule, pretrained, NearTwo{},
        {.dt = kDt, .batch = 128, .learning_rate = 1e-3, .reward_weight = 1.0, .kl_weight = kl_weight});
    algorithms::FineTuneStats stats{};
    for (int iteration = 0; iteration < 60; ++iteration) stats = dpok.train_iteration(generator);
    return stats;
  };
  const auto loose = fine_tune(0.0), tight = fine_tune(1.0);
  INFO("kl weight 0: reward " << loose.reward << ", KL " << loose.kl << "; weight 1: reward "
                              << tight.reward << ", KL " << tight.kl);
  CHECK(tight.kl < loose.kl);
  CHECK(loose.reward > tight.reward);
}

namespace {

double weight_error(const models::TimeStateMlp& found, const models::TimeStateMlp& expected) {
  double worst = 0.0;
  auto reference = expected->named_parameters();
  for (const auto& item : found->named_parameters()) {
    const torch::Tensor e = reference[item.key()].detach();
    worst = std::max(worst, (item.value().detach() - e).abs().max().item<double>() /
                                std::max(1e-12, e.abs().max().item<double>()));
  }
  return worst;
}

// Three iterations of a method on both backends, in double, from the same weights
// and the same seed: the same statistics and the same weights after each. Returns
// the largest clip fraction seen.
template <template <class, class, class> class Method, class Options>
double compare_backends(const models::TimeStateMlp& pretrained, const Options& options) {
  Method<Schedule, NearTwo, algorithms::TorchBackend> torch_method(kSchedule, pretrained, NearTwo{}, options);
  Method<Schedule, NearTwo, algorithms::EigenBackend<double>> eigen_method(kSchedule, pretrained, NearTwo{},
                                                                          options);
  if constexpr (requires { eigen_method.value(); }) eigen_method.value().copy_from(torch_method.value());
  auto torch_generator = make_generator(7), eigen_generator = make_generator(7);
  double clip_fraction = 0.0;
  for (int iteration = 0; iteration < 3; ++iteration) {
    const auto expected = torch_method.train_iteration(torch_generator);
    const auto found = eigen_method.train_iteration(eigen_generator);
    INFO("iteration " << iteration << ": reward " << found.reward << " vs " << expected.reward << ", KL "
                      << found.kl << " vs " << expected.kl << ", loss " << found.loss << " vs " << expected.loss);
    CHECK(found.reward == Approx(expected.reward).epsilon(1e-9));
    CHECK(found.kl == Approx(expected.kl).epsilon(1e-6).margin(1e-12));
    CHECK(found.loss == Approx(expected.loss).epsilon(1e-6).margin(1e-9));
    // A ratio on the clip's edge may fall either side: allow a few of the terms.
    CHECK(found.clip_fraction == Approx(expected.clip_fraction).margin(1e-3));
    CHECK(weight_error(eigen_method.policy().to_torch(), torch_method.policy()) < 1e-6);
    clip_fraction = std::max(clip_fraction, expected.clip_fraction);
  }
  auto a = make_generator(5), b = make_generator(5);
  const torch::Tensor z = pretrained->options().classes > 0 ? torch::arange(30, torch::kLong) % 2 : torch::Tensor{};
  CHECK(torch::allclose(eigen_method.sample(30, z, a), torch_method.sample(30, z, b), 1e-8, 1e-10));
  return clip_fraction;
}

}  // namespace

TEST_CASE("DDPO and DPOK compute the same iterations on the Eigen and LibTorch backends",
          "[algorithms][policy-gradient][eigen]") {
  // A network that is not trained: what matters is that both backends compute the
  // same function of the same weights and noise, also with a condition as input.
  const int64_t classes = GENERATE(0, 2);
  INFO("classes " << classes);
  torch::manual_seed(4);
  models::TimeStateMlp pretrained(models::TimeStateMlpOptions{1, 1, classes, 32});
  pretrained->to(torch::kDouble);
  SECTION("DDPO, 3 inner epochs (clipping active after the first)") {
    const double clip_fraction = compare_backends<algorithms::Ddpo>(
        pretrained, algorithms::DdpoOptions{.dt = kDt, .batch = 48, .learning_rate = 3e-2, .clip = 0.05,
                                            .inner_epochs = 3});
    // The clipped branch of the gradient was taken, so it is compared too.
    CHECK(clip_fraction > 0.05);
  }
  SECTION("DPOK") {
    CHECK(compare_backends<algorithms::Dpok>(
              pretrained, algorithms::DpokOptions{.dt = kDt, .batch = 48, .learning_rate = 1e-2,
                                                  .reward_weight = 2.0, .kl_weight = 0.5}) == 0.0);
  }
}
