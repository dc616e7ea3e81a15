// DDPO and DPOK on the 1-D problem of the q-learning tests, starting from a model
// that q-learning pretrained for 400 episodes on data N(1, 0.5^2); both backends
// against each other, the step-by-step passes against the batched one, and a
// fine-tuning step of the image UNet.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/models/epsilon_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/runtime.hpp"
#include "support/toy_rewards.hpp"

using namespace diffctl;
using testing::NearTwo;
using Schedule = sde::OrnsteinUhlenbeck;
using Estimate = models::RatioScore<Schedule>;
using algorithms::PolicyScore;

namespace {

const Schedule kSchedule({.horizon = 2.0});
constexpr double kDt = 0.1;

models::TimeStateMlp pretrained_policy() {
  auto generator = make_generator(0);
  const torch::Tensor data = 1.0 + 0.5 * torch::randn({200, 1}, generator);
  algorithms::QLearning<Schedule, Estimate> learner(
      kSchedule, Estimate(kSchedule, data), 1, 0, {.temperature = 0.1, .dt = kDt, .batch = 64, .learning_rate = 0.01});
  for (int episode = 0; episode < 400; ++episode) learner.train_episode(generator);
  return learner.policy();
}

double mean_reward(const torch::Tensor& samples) { return NearTwo{}(samples, {}).mean().item<double>(); }

}  // namespace

namespace {
// DDPO with its chains and transitions in reach of a test.
struct OpenDdpo : algorithms::Ddpo<Schedule, PolicyScore, NearTwo> {
  using Ddpo::chains;
  using Ddpo::Ddpo;
  using Ddpo::draw_chains;
  using Ddpo::pass;
  using Ddpo::transitions;
};
}  // namespace

TEST_CASE("DDPO's chains follow the transition densities it differentiates", "[algorithms][policy-gradient]") {
  // Residuals of the sampled steps against the transitions, in units of each
  // step's noise, must be standard normal (2000 chains x 20 steps), and the
  // log-densities those of the residuals.
  const models::TimeStateMlp policy(models::TimeStateMlpOptions{1, 1, 0, 16});
  OpenDdpo ddpo(kSchedule, PolicyScore(policy), NearTwo{}, algorithms::chain_shape(policy), {.dt = kDt, .batch = 2000});
  auto generator = make_generator(1);
  torch::NoGradGuard no_grad;
  ddpo.draw_chains(generator);
  const algorithms::Chains& chains = ddpo.chains();
  const StepStack steps = ddpo.transitions(ddpo.policy(), 0, 20);
  const torch::Tensor residual = (chains.states.narrow(0, 1, 20) - steps.means) / steps.noise_std.view({-1, 1, 1});
  const double n = double(residual.numel());
  CHECK(std::abs(residual.mean().item<double>()) < 4.0 / std::sqrt(n));
  CHECK(std::abs(residual.var().item<double>() - 1.0) < 4.0 * std::sqrt(2.0 / n));
  const torch::Tensor expected = -0.5 * residual.squeeze(2).square() - steps.noise_std.log().view({-1, 1}) -
                                 0.5 * std::log(2.0 * std::numbers::pi);
  CHECK(torch::allclose(ddpo.pass(0, 20, algorithms::detail::Track::no, false).log_probs, expected, 1e-4, 1e-5));
}

TEST_CASE("DDPO raises the reward of a pretrained model", "[algorithms][policy-gradient]") {
  const auto pretrained = pretrained_policy();
  auto generator = make_generator(2);
  const double before = mean_reward(algorithms::sample_policy(
      kSchedule, pretrained, algorithms::grid_with_step(kSchedule, kDt), 4000, {}, generator, sde::EulerMaruyama{}));
  algorithms::Ddpo<Schedule, PolicyScore, NearTwo> ddpo(kSchedule, PolicyScore(pretrained), NearTwo{},
                                                        algorithms::chain_shape(pretrained),
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
    algorithms::Dpok<Schedule, PolicyScore, NearTwo> dpok(
        kSchedule, PolicyScore(pretrained), NearTwo{}, algorithms::chain_shape(pretrained),
        {.dt = kDt, .batch = 128, .learning_rate = 1e-3, .reward_weight = 1.0, .kl_weight = kl_weight});
    algorithms::FineTuneStats stats{};
    for (int iteration = 0; iteration < 60; ++iteration) stats = dpok.train_iteration(generator);
    return stats;
  };
  const auto loose = fine_tune(0.0), tight = fine_tune(1.0);
  INFO("kl weight 0: reward " << loose.reward << ", KL " << loose.kl << "; weight 1: reward " << tight.reward << ", KL "
                              << tight.kl);
  CHECK(tight.kl < loose.kl);
  CHECK(loose.reward > tight.reward);
}

namespace {

double weight_error(const models::TimeStateMlp& found, const models::TimeStateMlp& expected) {
  double worst = 0.0;
  auto reference = expected->named_parameters();
  for (const auto& item : found->named_parameters()) {
    const torch::Tensor e = reference[item.key()].detach();
    worst = std::max(
        worst, (item.value().detach() - e).abs().max().item<double>() / std::max(1e-12, e.abs().max().item<double>()));
  }
  return worst;
}

// Three iterations of a method on both backends, in double, from the same weights
// and the same seed: the same statistics and the same weights after each. Returns
// the largest clip fraction seen.
template <template <class, class, class, class, class> class Method, class Options>
double compare_backends(const models::TimeStateMlp& pretrained, const Options& options) {
  using EulerMaruyama = sde::EulerMaruyama;
  const auto shape = algorithms::chain_shape(pretrained);
  Method<Schedule, PolicyScore, NearTwo, EulerMaruyama, algorithms::TorchBackend> torch_method(
      kSchedule, PolicyScore(pretrained), NearTwo{}, shape, options);
  Method<Schedule, PolicyScore, NearTwo, EulerMaruyama, algorithms::EigenBackend<double>> eigen_method(
      kSchedule, PolicyScore(pretrained), NearTwo{}, shape, options);
  if constexpr (requires { eigen_method.value(); }) eigen_method.value().copy_from(torch_method.value());
  auto torch_generator = make_generator(7), eigen_generator = make_generator(7);
  double clip_fraction = 0.0;
  for (int iteration = 0; iteration < 3; ++iteration) {
    const auto expected = torch_method.train_iteration(torch_generator);
    const auto found = eigen_method.train_iteration(eigen_generator);
    INFO("iteration " << iteration << ": reward " << found.reward << " vs " << expected.reward << ", KL " << found.kl
                      << " vs " << expected.kl << ", loss " << found.loss << " vs " << expected.loss);
    CHECK(found.reward == Approx(expected.reward).epsilon(1e-9));
    CHECK(found.kl == Approx(expected.kl).epsilon(1e-6).margin(1e-12));
    CHECK(found.loss == Approx(expected.loss).epsilon(1e-6).margin(1e-9));
    // A ratio on the clip's edge may fall either side: allow a few of the terms.
    CHECK(found.clip_fraction == Approx(expected.clip_fraction).margin(1e-3));
    CHECK(weight_error(eigen_method.policy().to_torch(), torch_method.policy().network()) < 1e-6);
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
        pretrained,
        algorithms::DdpoOptions{.dt = kDt, .batch = 48, .learning_rate = 3e-2, .clip = 0.05, .inner_epochs = 3});
    // The clipped branch of the gradient was taken, so it is compared too.
    CHECK(clip_fraction > 0.05);
  }
  SECTION("DPOK") {
    CHECK(compare_backends<algorithms::Dpok>(pretrained, algorithms::DpokOptions{.dt = kDt,
                                                                                 .batch = 48,
                                                                                 .learning_rate = 1e-2,
                                                                                 .reward_weight = 2.0,
                                                                                 .kl_weight = 0.5,
                                                                                 .value_hidden = 32}) == 0.0);
  }
}

namespace {

// The policy of PolicyScore without its batched times: fine-tuning then takes the
// step-by-step path that image networks take.
class StepwisePolicy {
 public:
  explicit StepwisePolicy(PolicyScore policy) : policy_(std::move(policy)) {}
  torch::Tensor score(double t, const torch::Tensor& y, const torch::Tensor& z) const { return policy_.score(t, y, z); }
  const models::TimeStateMlp& network() const { return policy_.network(); }
  StepwisePolicy snapshot() const { return StepwisePolicy(policy_.snapshot()); }

 private:
  PolicyScore policy_;
};
static_assert(TimeBatchedDrift<PolicyScore> && !TimeBatchedDrift<StepwisePolicy> && TunableDrift<StepwisePolicy>);

// Three iterations of a method with the batched and the step-by-step passes, in
// double, from the same weights and seed: the same statistics and weights.
template <template <class, class, class, class, class> class Method, class Options>
void compare_passes(const models::TimeStateMlp& pretrained, const Options& options) {
  using Torch = algorithms::TorchBackend;
  const auto shape = algorithms::chain_shape(pretrained);
  Method<Schedule, PolicyScore, NearTwo, sde::EulerMaruyama, Torch> batched(kSchedule, PolicyScore(pretrained),
                                                                            NearTwo{}, shape, options);
  Method<Schedule, StepwisePolicy, NearTwo, sde::EulerMaruyama, Torch> stepwise(
      kSchedule, StepwisePolicy(PolicyScore(pretrained)), NearTwo{}, shape, options);
  if constexpr (requires { batched.value(); }) models::copy_weights(*batched.value(), *stepwise.value());
  auto batched_generator = make_generator(8), stepwise_generator = make_generator(8);
  for (int iteration = 0; iteration < 3; ++iteration) {
    const auto expected = batched.train_iteration(batched_generator);
    const auto found = stepwise.train_iteration(stepwise_generator);
    INFO("iteration " << iteration << ": KL " << found.kl << " vs " << expected.kl << ", loss " << found.loss << " vs "
                      << expected.loss);
    CHECK(found.reward == Approx(expected.reward).epsilon(1e-9));
    CHECK(found.kl == Approx(expected.kl).epsilon(1e-9).margin(1e-12));
    CHECK(found.loss == Approx(expected.loss).epsilon(1e-9).margin(1e-12));
    CHECK(found.clip_fraction == Approx(expected.clip_fraction).margin(1e-3));
    CHECK(weight_error(stepwise.policy().network(), batched.policy().network()) < 1e-9);
  }
}

}  // namespace

TEST_CASE("DDPO and DPOK compute the same iterations step by step as in one batched pass",
          "[algorithms][policy-gradient]") {
  torch::manual_seed(6);
  models::TimeStateMlp pretrained(models::TimeStateMlpOptions{1, 1, 2, 16});
  pretrained->to(torch::kDouble);
  SECTION("DDPO") {
    compare_passes<algorithms::Ddpo>(
        pretrained,
        algorithms::DdpoOptions{.dt = kDt, .batch = 32, .learning_rate = 3e-2, .clip = 0.05, .inner_epochs = 2});
  }
  SECTION("DPOK") {
    compare_passes<algorithms::Dpok>(
        pretrained,
        algorithms::DpokOptions{.dt = kDt, .batch = 32, .learning_rate = 1e-2, .kl_weight = 0.5, .value_hidden = 8});
  }
}

TEST_CASE("DDPO and DPOK fine-tune the image UNet through DDPM's Gaussian steps",
          "[algorithms][policy-gradient][unet]") {
  // A tiny conditional UNet on 8x8 images, two DDPM steps, a reward for bright
  // images. At the start the tuned model is the pretrained one: the chains' KL is
  // 0 and the importance ratios 1, so DDPO's first loss is minus the mean
  // advantage, 0. One step moves the weights, and the next batch pays KL for it.
  using Cosine = sde::VpCosine;
  using Drift = models::EpsilonScore<Cosine, models::UNet>;
  using Ddpm = sde::Ddpm;
  const Cosine schedule;
  torch::manual_seed(9);
  models::UNetOptions tiny = models::UNetOptions::small(8, 1, 2);
  tiny.base_width = 8;
  tiny.head_channels = 8;
  tiny.dropout = 0.0;
  models::UNet net(tiny);
  // Off zero, so that the output layer is not the only one that learns.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(0.02 * torch::randn_like(p));
  }
  const Drift pretrained(schedule, net);
  const auto bright = [](const torch::Tensor& x, const torch::Tensor&) { return x.flatten(1).mean(1); };
  const algorithms::ChainShape shape{.sample = {1, 8, 8}, .classes = 2};
  const Ddpm solver({.variance = sde::DdpmVariance::forward});
  const double dt = schedule.horizon() / 2.0;
  auto generator = make_generator(3);
  SECTION("DDPO") {
    algorithms::Ddpo<Cosine, Drift, decltype(bright), Ddpm> ddpo(
        schedule, pretrained, bright, shape, {.dt = dt, .batch = 4, .learning_rate = 1e-3, .inner_epochs = 1}, solver);
    const auto first = ddpo.train_iteration(generator);
    CHECK(first.kl == Approx(0.0).margin(1e-12));
    CHECK(first.loss == Approx(0.0).margin(1e-5));
    CHECK(first.clip_fraction == 0.0);
    const auto second = ddpo.train_iteration(generator);
    INFO("second iteration: KL " << second.kl << ", loss " << second.loss);
    CHECK(second.kl > 0.0);
    CHECK(std::isfinite(second.loss));
    CHECK(ddpo.sample(3, torch::tensor({0, 1, 1}), generator).sizes() == torch::IntArrayRef({3, 1, 8, 8}));
  }
  SECTION("DPOK") {
    algorithms::Dpok<Cosine, Drift, decltype(bright), Ddpm> dpok(
        schedule, pretrained, bright, shape, {.dt = dt, .batch = 4, .learning_rate = 1e-3, .value_hidden = 8}, solver);
    CHECK(dpok.train_iteration(generator).kl == Approx(0.0).margin(1e-12));
    const auto second = dpok.train_iteration(generator);
    CHECK(second.kl > 0.0);
    CHECK(std::isfinite(second.loss));
  }
  SECTION("a solver without noise in a step is refused") {
    algorithms::Ddpo<Cosine, Drift, decltype(bright), sde::Ddim> ddim(schedule, pretrained, bright, shape,
                                                                      {.dt = dt, .batch = 4}, sde::Ddim());
    CHECK_THROWS_WITH(ddim.train_iteration(generator), Catch::Contains("is deterministic"));
  }
}
