// The bootstrap ensemble: its members, resampling, optimism rules and calibration.

#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "diffctl/io/checkpoint.hpp"
#include "diffctl/models/resnet.hpp"
#include "diffctl/reward/calibration.hpp"
#include "diffctl/reward/ensemble.hpp"
#include "diffctl/runtime.hpp"
#include "support/ranks.hpp"
#include "support/temp_dir.hpp"

namespace {

using namespace diffctl;
using Catch::Matchers::Contains;

// phi(x) = (1, x, x^2, ..., x^degree) of 1-D inputs x [B, 1]: the backbone of a
// linear regression, so the ensemble's heads are bootstrapped least squares.
class PolynomialFeaturesImpl : public torch::nn::Cloneable<PolynomialFeaturesImpl> {
 public:
  explicit PolynomialFeaturesImpl(int64_t degree = 2) : degree_(degree) {}
  void reset() override {}
  torch::Tensor features(const torch::Tensor& x) const {
    std::vector<torch::Tensor> powers{torch::ones_like(x)};
    for (int64_t k = 1; k <= degree_; ++k) powers.push_back(x.pow(double(k)));
    return torch::cat(powers, 1);
  }
  int64_t degree() const { return degree_; }

 private:
  int64_t degree_;
};
TORCH_MODULE(PolynomialFeatures);

using LinearHeads = reward::SharedBackboneHeads<PolynomialFeatures, reward::ScalarReadout>;
using MlpMembers = reward::ModuleMembers<torch::nn::Sequential, reward::ScalarReadout>;

// y = r(x) + noise for x uniform in [-1, 1], with r quadratic.
torch::Tensor quadratic(const torch::Tensor& x) { return (0.5 + x - 0.8 * x.square()).squeeze(1); }

reward::FeedbackDataset regression_data(int64_t n, double noise, at::Generator& generator) {
  const torch::Tensor x = torch::rand({n, 1}, generator, torch::kFloat) * 2.0 - 1.0;
  reward::FeedbackDataset data;
  data.append(x, {}, quadratic(x).to(torch::kDouble) + noise * torch::randn({n}, generator, torch::kDouble), 0);
  return data;
}

reward::EnsembleOptions exact_fit(std::uint64_t seed, int64_t steps = 600, double lr = 0.05) {
  return {.fit = {.steps = steps, .batch = 1 << 20, .learning_rate = lr, .l2 = 1e-6}, .seed = seed};
}

torch::nn::Sequential small_mlp() {
  return torch::nn::Sequential(torch::nn::Linear(1, 32), torch::nn::ReLU(), torch::nn::Linear(32, 32),
                               torch::nn::ReLU(), torch::nn::Linear(32, 1));
}

}  // namespace

TEST_CASE("bootstrapped least squares covers the truth at about its nominal rate", "[reward]") {
  // Well specified: the truth is quadratic and so are the heads. Over 30 datasets
  // of 200 points, |r_hat - r| <= 2 g_hat at 50 test points each should hold about
  // 95% of the time (a little less with M = 32: the spread is itself estimated).
  auto generator = make_generator(2024);
  const PolynomialFeatures backbone(2);
  const torch::Tensor test_x = torch::linspace(-0.95, 0.95, 50).unsqueeze(1);
  std::vector<torch::Tensor> means, stds, truths;
  for (int replicate = 0; replicate < 30; ++replicate) {
    const auto data = regression_data(200, 0.3, generator);
    reward::BootstrapEnsemble ensemble(LinearHeads::random(backbone, 32, 1, 3, generator), exact_fit(replicate));
    ensemble.fit(data);
    torch::NoGradGuard no_grad;
    means.push_back(ensemble.mean(test_x, {}));
    stds.push_back(ensemble.uncertainty(test_x, {}));
    truths.push_back(quadratic(test_x));
  }
  const auto report = reward::calibration_report(torch::cat(means), torch::cat(stds), torch::cat(truths));
  INFO("coverage k=1,2,3: " << report.coverage[0] << ", " << report.coverage[1] << ", " << report.coverage[2]);
  CHECK(report.coverage[0] > 0.55);
  CHECK(report.coverage[0] < 0.80);
  CHECK(report.coverage[1] > 0.88);
  CHECK(report.coverage[1] < 0.99);
  CHECK(report.coverage[2] > 0.95);
}

TEST_CASE("anchored members shrink toward their initial parameters, unanchored ones toward zero", "[reward]") {
  // Ridge regression on (1, x, x^2) with uniform weights has the closed form
  //   theta = (Phi^T Phi / n + l2 I)^-1 (Phi^T y / n + l2 a),
  // a = the head's initial parameters when anchored, 0 otherwise.
  auto generator = make_generator(7);
  const PolynomialFeatures backbone(2);
  const auto data = regression_data(40, 0.3, generator);
  const torch::Tensor weights = torch::ones({2, data.size()});
  const double l2 = 0.5;
  for (const bool anchored : {false, true}) {
    INFO("anchored " << anchored);
    LinearHeads heads(backbone, torch::tensor({1.5, -2.0, 0.7}).view({1, 1, 3}).repeat({2, 1, 1}),
                      torch::zeros({2, 1}));
    const torch::Tensor initial = torch::cat({heads.head_weight()[0][0], heads.head_bias()[0]}).to(torch::kDouble);
    heads.fit(data, weights, {.steps = 1500, .batch = 1 << 20, .learning_rate = 0.05, .l2 = l2, .anchored = anchored},
              generator);
    // The bias is a fourth parameter beside the constant feature: both carry the intercept.
    const torch::Tensor phi =
        torch::cat({backbone->features(data.x()), torch::ones({data.size(), 1})}, 1).to(torch::kDouble);
    const double n = double(data.size());
    const torch::Tensor a = anchored ? initial : torch::zeros({4}, torch::kDouble);
    const torch::Tensor expected = torch::linalg_solve(phi.t().mm(phi) / n + l2 * torch::eye(4, torch::kDouble),
                                                       phi.t().mv(data.y()) / n + l2 * a);
    const torch::Tensor found = torch::cat({heads.head_weight()[0][0], heads.head_bias()[0]}).to(torch::kDouble);
    INFO("expected " << expected << " found " << found);
    CHECK(torch::allclose(found, expected, 1e-3, 2e-3));
  }
  // Whole networks: with a heavy l2, anchored members barely move, unanchored ones shrink.
  const auto networks = [] {
    torch::manual_seed(3);
    return std::vector<torch::nn::Sequential>{small_mlp(), small_mlp()};
  };
  std::vector<torch::Tensor> before;
  for (auto& t : networks()[0]->parameters()) before.push_back(t.detach().clone());
  const auto distance_after = [&](bool anchored) {
    MlpMembers members(networks());
    members.fit(data, weights,
                {.steps = 200, .batch = 1 << 20, .learning_rate = 0.01, .l2 = 10.0, .anchored = anchored}, generator);
    double moved = 0.0, norm = 0.0;
    const auto after = members.networks()[0]->parameters();
    for (std::size_t i = 0; i < after.size(); ++i) {
      moved += (after[i] - before[i]).square().sum().item<double>();
      norm += after[i].square().sum().item<double>();
    }
    return std::pair{std::sqrt(moved), std::sqrt(norm)};
  };
  double initial_norm = 0.0;
  for (const auto& p : before) initial_norm += p.square().sum().item<double>();
  initial_norm = std::sqrt(initial_norm);
  const auto [moved_anchored, norm_anchored] = distance_after(true);
  const auto [moved_free, norm_free] = distance_after(false);
  INFO("initial norm " << initial_norm << "; anchored moved " << moved_anchored << ", unanchored norm " << norm_free);
  CHECK(moved_anchored < 0.1 * initial_norm);
  CHECK(norm_free < 0.5 * initial_norm);
  CHECK(moved_free > 5.0 * moved_anchored);
}

TEST_CASE("members fitted on forward draws estimate the reward given the noisy state", "[reward]") {
  // x ~ N(0, 1), r(x) = x, and the draws x_s = a x + b eps with a = 0.6, b = 0.8:
  // E[r | x_s] = a x_s / (a^2 + b^2) = 0.6 x_s, where the clean fit is r_hat(x) = x.
  auto generator = make_generator(11);
  const int64_t n = 2000;
  const torch::Tensor x = torch::randn({n, 1}, generator, torch::kFloat);
  reward::FeedbackDataset data;
  data.append(x, {}, x.squeeze(1).to(torch::kDouble), 0);
  const torch::Tensor weights = torch::ones({2, n});
  int64_t draws = 0;
  const auto noise = [&](const torch::Tensor& x0, const c10::optional<at::Generator>& g) {
    ++draws;
    return 0.6 * x0 + 0.8 * torch::randn(x0.sizes(), g, x0.options());
  };
  const auto slope_of = [](const torch::Tensor& predict) {  // r_hat(1) - r_hat(0) of member 0
    return (predict[0][1] - predict[0][0]).item<double>();
  };
  const torch::Tensor probe = torch::tensor({0.0f, 1.0f}).view({2, 1});
  const PolynomialFeatures backbone(1);
  for (const bool noisy : {false, true}) {
    LinearHeads heads(backbone, torch::zeros({2, 1, 2}), torch::zeros({2, 1}));
    reward::MemberFitOptions options{.steps = 800, .batch = 1 << 20, .learning_rate = 0.05, .l2 = 0.0};
    if (noisy) options.input_noise = noise, options.noisy_copies = 16;
    draws = 0;
    heads.fit(data, weights, options, generator);
    const double slope = slope_of(heads.predict(probe, {}));
    INFO((noisy ? "noisy" : "clean") << " heads: slope " << slope);
    CHECK(slope == Approx(noisy ? 0.6 : 1.0).margin(0.04));
    CHECK(draws == (noisy ? 16 * ((n + 255) / 256) : 0));  // features of 16 draws, computed once
  }
  // Whole networks: a fresh draw of the batch at every step.
  torch::manual_seed(11);  // the networks' initial weights
  std::vector<torch::nn::Sequential> networks;
  for (int m = 0; m < 2; ++m) networks.emplace_back(torch::nn::Linear(1, 1));
  MlpMembers members(networks);
  draws = 0;
  members.fit(data, weights, {.steps = 400, .batch = 1 << 20, .learning_rate = 0.05, .l2 = 0.0, .input_noise = noise},
              generator);
  const double slope = slope_of(members.predict(probe, {}));
  INFO("noisy networks: slope " << slope);
  CHECK(slope == Approx(0.6).margin(0.04));
  CHECK(draws == 2 * 400);
}

TEST_CASE("a neural ensemble is confident near its data and uncertain away from it", "[reward]") {
  torch::manual_seed(7);  // the members' initial weights differ by the global generator
  auto generator = make_generator(7);
  std::vector<torch::nn::Sequential> networks;
  for (int m = 0; m < 5; ++m) networks.push_back(small_mlp());
  reward::BootstrapEnsemble ensemble(MlpMembers(networks), exact_fit(1, 400, 0.01));
  const auto data = regression_data(100, 0.1, generator);
  ensemble.fit(data);

  torch::NoGradGuard no_grad;
  const torch::Tensor near = torch::linspace(-0.9, 0.9, 40).unsqueeze(1);
  const torch::Tensor far = torch::linspace(3.0, 4.0, 40).unsqueeze(1);
  const double near_std = ensemble.uncertainty(near, {}).mean().item<double>();
  const double far_std = ensemble.uncertainty(far, {}).mean().item<double>();
  INFO("std near the data " << near_std << ", far from it " << far_std);
  CHECK(far_std > 5.0 * near_std);
  // Near the data the mean is the truth, to within the label noise.
  CHECK((ensemble.mean(near, {}) - quadratic(near)).abs().mean().item<double>() < 0.1);
}

TEST_CASE("resampling and fitting are reproducible by seed", "[reward]") {
  auto generator = make_generator(3);
  const auto data = regression_data(50, 0.3, generator);
  const PolynomialFeatures backbone(2);
  const auto heads = [&](std::uint64_t seed) {
    auto init = make_generator(100);
    reward::BootstrapEnsemble ensemble(
        LinearHeads::random(backbone, 4, 1, 3, init),
        {.fit = {.steps = 50, .batch = 16, .learning_rate = 0.05, .l2 = 1e-4}, .seed = seed});
    ensemble.fit(data);
    return ensemble.predictions(torch::linspace(-1, 1, 7).unsqueeze(1), {});
  };
  CHECK(torch::equal(heads(5), heads(5)));
  CHECK(!torch::allclose(heads(5), heads(6)));

  // Bootstrap counts: N draws per member.
  const torch::Tensor counts = reward::BootstrapResample{}.weights(3, 40, 0, generator);
  CHECK(torch::equal(counts.sum(1), torch::full({3}, 40.0, torch::kDouble)));
  // Masks keep each sample's membership as the dataset grows, and include a
  // fraction p of the samples (4 standard errors at n = 4000).
  const reward::BernoulliMasks masks{0.3};
  const torch::Tensor grown = masks.weights(2, 4000, 9, generator);
  CHECK(torch::equal(masks.weights(2, 100, 9, generator), grown.narrow(1, 0, 100)));
  CHECK(std::abs(grown.mean().item<double>() - 0.3) < 4 * std::sqrt(0.3 * 0.7 / 8000));
  CHECK(!torch::equal(grown[0], grown[1]));
  CHECK_THROWS_WITH(reward::BernoulliMasks{0.0}.weights(2, 3, 0, generator), Contains("p must lie"));

  // A masked ensemble fits too.
  auto init = make_generator(1);
  reward::BootstrapEnsemble<LinearHeads, reward::optimism::MeanPlusStd, reward::BernoulliMasks> masked(
      LinearHeads::random(backbone, 4, 1, 3, init), exact_fit(2, 200), {}, masks);
  const auto report = masked.fit(data);
  CHECK(torch::isfinite(report.member_loss).all().item<bool>());
}

TEST_CASE("optimism rules turn member predictions into the reward to maximise", "[reward]") {
  auto generator = make_generator(12);
  const PolynomialFeatures backbone(1);
  auto init = make_generator(4);
  const auto members = LinearHeads::random(backbone, 4, 1, 2, init);
  const torch::Tensor predictions = torch::tensor({{0.1, 0.5}, {0.3, 0.5}, {0.2, 0.9}, {0.6, 0.1}}, torch::kDouble);
  const torch::Tensor x = torch::zeros({2, 1});
  const torch::Tensor mean = predictions.mean(0);
  const torch::Tensor std = ((predictions - mean).square().sum(0) / 3.0).sqrt();

  CHECK(torch::allclose(reward::member_std(predictions), std, 1e-9, 1e-9));
  CHECK(torch::allclose(reward::optimism::MeanPlusStd{2.0}(predictions, x, members, generator), mean + 2.0 * std, 1e-9,
                        1e-9));
  CHECK(torch::equal(reward::optimism::MaxOfMembers{}(predictions, x, members, generator),
                     torch::tensor({0.6, 0.9}, torch::kDouble)));
  CHECK(torch::equal(reward::optimism::Greedy{}(predictions, x, members, generator), mean));

  // Thompson: each sample gets one member's prediction, each member about 1/M of
  // the time (4 standard errors at 4,000 draws).
  const torch::Tensor many = torch::arange(4, torch::kDouble).unsqueeze(1).expand({4, 4000});
  const torch::Tensor drawn = reward::optimism::Thompson{}(many, x, members, generator);
  for (int m = 0; m < 4; ++m)
    CHECK(std::abs(drawn.eq(m).to(torch::kDouble).mean().item<double>() - 0.25) < 4 * std::sqrt(0.25 * 0.75 / 4000));

  // Feature UCB: c sqrt(phi^T (Phi^T Phi + lambda I)^-1 phi), shrinking as D grows.
  reward::optimism::FeatureUcb ucb(1.5, 0.1);
  const torch::Tensor phi = torch::tensor({{1.0, 0.0}, {1.0, 2.0}}, torch::kDouble);
  CHECK(torch::allclose(ucb.bonus(phi), 1.5 * (phi.square().sum(1) / 0.1).sqrt()));
  const torch::Tensor seen =
      torch::cat({torch::ones({6, 1}), torch::linspace(-1, 1, 6).unsqueeze(1)}, 1).to(torch::kDouble);
  ucb.observe(seen);
  const torch::Tensor inverse = torch::inverse(seen.t().mm(seen) + 0.1 * torch::eye(2, torch::kDouble));
  const torch::Tensor expected = 1.5 * (phi.mm(inverse) * phi).sum(1).sqrt();
  CHECK(torch::allclose(ucb.bonus(phi), expected, 1e-9, 1e-9));
  ucb.observe(torch::cat({seen, seen}));
  CHECK((ucb.bonus(phi) < expected).all().item<bool>());
  CHECK(torch::allclose(ucb(predictions.to(torch::kFloat), phi.narrow(1, 1, 1).to(torch::kFloat), members, generator),
                        (mean + ucb.bonus(phi)).to(torch::kFloat), 1e-5, 1e-6));
}

TEST_CASE("ensembles started from a weak classifier have an opinion and a spread before feedback", "[reward]") {
  torch::manual_seed(5);
  models::ResNet18 weak(models::ResNet18Options{.in_channels = 1, .num_classes = 3, .width = 0.0625});
  weak->eval();
  auto generator = make_generator(5);
  const torch::Tensor x = torch::randn({16, 1, 8, 8}, generator);
  const torch::Tensor z = torch::randint(3, {16}, generator, torch::kLong);
  torch::Tensor weak_probability;
  {
    torch::NoGradGuard no_grad;
    weak_probability = torch::softmax(weak(x), 1).gather(1, z.unsqueeze(1)).squeeze(1);
  }
  // Labels that disagree with the weak model: class 0 is always right.
  reward::FeedbackDataset data;
  const torch::Tensor train_x = torch::randn({48, 1, 8, 8}, generator);
  const torch::Tensor train_z = torch::randint(3, {48}, generator, torch::kLong);
  data.append(train_x, train_z, train_z.eq(0).to(torch::kDouble), 0);
  const auto squared_error = [&](auto& ensemble) {
    torch::NoGradGuard no_grad;
    return (ensemble.mean(train_x, train_z) - train_z.eq(0).to(torch::kFloat)).square().mean().template item<double>();
  };

  const auto check = [&](auto ensemble) {
    {
      torch::NoGradGuard no_grad;
      const auto estimate = ensemble.estimate(x, z);
      CHECK((estimate.mean - weak_probability).abs().max().template item<double>() < 0.1);
      CHECK(estimate.uncertainty.min().template item<double>() > 1e-4);
      CHECK(torch::allclose(estimate.optimistic, estimate.mean + estimate.uncertainty));
    }
    {
      // Every class at once is every class in turn (heads read the backbone once).
      torch::NoGradGuard no_grad;
      const torch::Tensor each = ensemble.optimistic_each(x, torch::arange(3, torch::kLong));
      REQUIRE(each.sizes() == torch::IntArrayRef({16, 3}));
      const torch::Tensor mean_each = ensemble.mean_each(x, torch::arange(3, torch::kLong));
      REQUIRE(mean_each.sizes() == torch::IntArrayRef({16, 3}));
      for (int64_t c = 0; c < 3; ++c) {
        CHECK(torch::equal(each.select(1, c), ensemble.optimistic(x, torch::full({16}, c, torch::kLong))));
        CHECK(torch::allclose(mean_each.select(1, c), ensemble.mean(x, torch::full({16}, c, torch::kLong))));
      }
      CHECK_THROWS_WITH(ensemble.optimistic_each(x, torch::zeros({3})),
                        Contains("conditions must be int64 [P], found Float [3]"));
    }
    const double before = squared_error(ensemble);
    const auto report = ensemble.fit(data);
    CHECK(report.samples == 48);
    CHECK(torch::isfinite(report.member_loss).all().template item<bool>());
    const double after = squared_error(ensemble);
    INFO("squared error before " << before << ", after " << after);
    CHECK(after < 0.5 * before);

    // The reward is differentiable in the samples, and training nothing else.
    const torch::Tensor probe = x.clone().requires_grad_(true);
    ensemble.optimistic(probe, z).sum().backward();
    REQUIRE(probe.grad().defined());
    CHECK(torch::isfinite(probe.grad()).all().template item<bool>());
    CHECK(probe.grad().abs().sum().template item<double>() > 0.0);
  };
  SECTION("a whole ResNet18 per member") {
    check(reward::BootstrapEnsemble(reward::ModuleMembers<models::ResNet18>::copies_of(weak, 4, 0.2, generator),
                                    {.fit = {.steps = 60, .batch = 16, .learning_rate = 3e-3, .l2 = 1e-6}, .seed = 1}));
  }
  SECTION("heads on the weak classifier's frozen backbone") {
    check(reward::BootstrapEnsemble(
        reward::SharedBackboneHeads<models::ResNet18>::copies_of(weak, weak->head(), 4, 0.2, generator),
        {.fit = {.steps = 300, .batch = 16, .learning_rate = 0.03, .l2 = 1e-6}, .seed = 1}));
  }
  SECTION("feature UCB on the frozen backbone of either member type") {
    reward::BootstrapEnsemble<reward::ModuleMembers<models::ResNet18>, reward::optimism::FeatureUcb> whole(
        reward::ModuleMembers<models::ResNet18>::copies_of(weak, 2, 0.2, generator), {},
        reward::optimism::FeatureUcb(1.0, 1.0));
    reward::BootstrapEnsemble<reward::SharedBackboneHeads<models::ResNet18>, reward::optimism::FeatureUcb> heads(
        reward::SharedBackboneHeads<models::ResNet18>::copies_of(weak, weak->head(), 2, 0.2, generator), {},
        reward::optimism::FeatureUcb(1.0, 1.0));
    const auto bonus = [&](auto& ensemble) {
      torch::NoGradGuard no_grad;
      return ensemble.optimistic(x, z) - ensemble.mean(x, z);
    };
    const torch::Tensor before = bonus(whole);
    whole.fit(data);
    heads.fit(data);
    torch::NoGradGuard no_grad;
    const torch::Tensor after = whole.optimistic(x, z) - whole.mean(x, z);
    CHECK((after < before).all().item<bool>());  // more data, smaller bonus
    const torch::Tensor head_bonus = heads.optimistic(x, z) - heads.mean(x, z);
    CHECK(torch::allclose(after, head_bonus, 1e-4, 1e-5));  // same frozen features, same data
  }
}

TEST_CASE("an ensemble's members and Thompson generator survive a checkpoint", "[reward]") {
  testing::TempDir dir;
  auto generator = make_generator(3);
  const auto data = regression_data(40, 0.2, generator);
  const PolynomialFeatures backbone(2);
  using Ensemble = reward::BootstrapEnsemble<LinearHeads, reward::optimism::Thompson>;
  Ensemble trained(LinearHeads::random(backbone, 3, 1, 3, generator), exact_fit(1, 100));
  trained.fit(data);
  io::Checkpoint saved;
  trained.add_to(saved);
  io::save_checkpoint(dir / "round.pt", saved);

  Ensemble restored(LinearHeads::random(backbone, 3, 1, 3, generator), exact_fit(9, 100));
  io::Checkpoint target;
  restored.add_to(target);
  io::load_checkpoint(dir / "round.pt", target);
  const torch::Tensor x = torch::linspace(-1, 1, 9).unsqueeze(1);
  CHECK(torch::equal(restored.predictions(x, {}), trained.predictions(x, {})));
  CHECK(torch::equal(restored.optimistic(x, {}), trained.optimistic(x, {})));
  // optimistic_each draws the Thompson members as a loop over the conditions does.
  const torch::Tensor each = trained.optimistic_each(x, torch::arange(3, torch::kLong));
  for (int64_t c = 0; c < 3; ++c) CHECK(torch::equal(each.select(1, c), restored.optimistic(x, {})));
  CHECK_FALSE(torch::equal(each.select(1, 0), each.select(1, 1)));  // each condition its own draw
}

TEST_CASE("the ensemble refuses bad input with a clear message", "[reward]") {
  auto generator = make_generator(1);
  const PolynomialFeatures backbone(1);
  CHECK_THROWS_WITH(LinearHeads::random(backbone, 1, 1, 2, generator), Contains("at least 2 members"));
  CHECK_THROWS_WITH(MlpMembers({small_mlp()}), Contains("at least 2 members"));
  reward::BootstrapEnsemble ensemble(LinearHeads::random(backbone, 2, 1, 2, generator));
  CHECK_THROWS_WITH(ensemble.fit(reward::FeedbackDataset{}), Contains("empty feedback dataset"));

  // Class readouts need the prompted classes, as many as samples.
  torch::manual_seed(2);
  models::ResNet18 weak(models::ResNet18Options{.in_channels = 1, .num_classes = 3, .width = 0.0625});
  reward::BootstrapEnsemble classes(
      reward::SharedBackboneHeads<models::ResNet18>::copies_of(weak, weak->head(), 2, 0.1, generator));
  const torch::Tensor x = torch::zeros({4, 1, 8, 8});
  CHECK_THROWS_WITH(classes.mean(x, torch::zeros({3}, torch::kLong)), Contains("3 classes z for logits"));
  CHECK_THROWS_WITH(classes.mean(x, torch::Tensor{}), Contains("class indices"));
  CHECK_THROWS_WITH(classes.mean(x, torch::full({4}, 3, torch::kLong)), Contains("[0, 3)"));
}

namespace {
// Five linear heads (three on rank 0, two on rank 1) fitted twice (the second
// warm-started) in `group`; their weights and last losses, flattened.
torch::Tensor fitted_heads(const distributed::Group& group) {
  auto generator = make_generator(11);
  const PolynomialFeatures backbone(2);
  reward::EnsembleOptions options = exact_fit(3, 200);
  options.group = group;
  reward::BootstrapEnsemble ensemble(LinearHeads::random(backbone, 5, 1, 3, generator), options);
  auto data = regression_data(60, 0.3, generator);
  std::vector<torch::Tensor> out{ensemble.fit(data).member_loss};
  const auto more = regression_data(40, 0.3, generator);
  data.append(more.x(), {}, more.y(), 1);
  out.push_back(ensemble.fit(data).member_loss);
  out.push_back(ensemble.members().head_weight().reshape(-1).to(torch::kDouble));
  out.push_back(ensemble.members().head_bias().reshape(-1).to(torch::kDouble));
  return torch::cat(out);
}
}  // namespace

// One rank of the two-process fit below (hidden from the suite).
TEST_CASE("spread ensemble fit rank", "[.spread-ensemble]") { testing::save_rank_result(fitted_heads); }

TEST_CASE("two processes fit an ensemble's members between them as one process does", "[reward][distributed][gloo]") {
  static_assert(SpreadableMembers<LinearHeads>);
  testing::TempDir dir;
  // Every rank has every member, each fitted by its owner on the same data and
  // minibatches: exactly the one-process fit.
  const auto run = testing::run_two_and_one("[.spread-ensemble]", dir.path(), fitted_heads);
  CHECK(torch::equal(run.ranks, run.alone));
}
