// Pretraining and classifier training, on problems small enough for a unit test:
// the noise-prediction score against closed forms, the training step's moving
// average and label dropout, and short runs that must learn a known answer.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "diffctl/algorithms/classifier_training.hpp"
#include "diffctl/algorithms/denoising_pretraining.hpp"
#include "diffctl/algorithms/tilted_score_matching.hpp"
#include "diffctl/metrics/classification.hpp"
#include "diffctl/models/guided_drift.hpp"
#include "diffctl/models/switched_drift.hpp"
#include "diffctl/objective/sample_kl.hpp"
#include "diffctl/models/time_state_mlp.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"

using namespace diffctl;

namespace {

// The exact noise prediction for data N(mean_y, variance) per pixel, class y
// shifting the mean by y: E[eps | x_s] = sigma (x - alpha m) / (alpha^2 v + sigma^2).
struct ExactGaussianEpsImpl : torch::nn::Module {
  ExactGaussianEpsImpl(sde::VpCosine schedule, double mean, double variance)
      : schedule(schedule), mean(mean), variance(variance) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& time, const torch::Tensor& y) {
    const double s = time[0].item<double>() / 1000.0;
    const double a = schedule.alpha(s), sigma = schedule.sigma(s);
    const torch::Tensor m = y.defined() ? (mean + y.to(x.dtype())).view({-1, 1, 1, 1}) : torch::full({1}, mean);
    return sigma * (x - a * m) / (a * a * variance + sigma * sigma);
  }
  sde::VpCosine schedule;
  double mean, variance;
};
TORCH_MODULE(ExactGaussianEps);

// Remembers the labels it was given; predicts zero noise.
struct RecordingNetImpl : torch::nn::Module {
  RecordingNetImpl() { weight = register_parameter("weight", torch::zeros({1})); }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const torch::Tensor& y) {
    seen = y;
    return x * weight;
  }
  torch::Tensor weight, seen;
};
TORCH_MODULE(RecordingNet);

// An MLP on flattened images, with (s, class) as extra inputs: enough network for
// 1x4x4 images.
struct FlatEpsNetImpl : torch::nn::Module {
  explicit FlatEpsNetImpl(int64_t pixels, int64_t classes)
      : mlp(register_module("mlp", models::TimeStateMlp(models::TimeStateMlpOptions{
                                       .state_dim = pixels, .out_dim = pixels, .classes = classes, .hidden = 128}))) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& time, const torch::Tensor& y) {
    return mlp(time / 1000.0, x.flatten(1), y).view_as(x);
  }
  models::TimeStateMlp mlp;
};
TORCH_MODULE(FlatEpsNet);

// A small convolutional classifier.
struct SmallCnnImpl : torch::nn::Module {
  explicit SmallCnnImpl(int64_t classes)
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1)))),
        fc(register_module("fc", torch::nn::Linear(8 * 4 * 4, classes))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc(torch::max_pool2d(torch::relu(conv(x)), 2).flatten(1)); }
  torch::nn::Conv2d conv;
  torch::nn::Linear fc;
};
TORCH_MODULE(SmallCnn);

// Class k is a bright 2x2 square at one of four places of an 8x8 image, plus noise.
std::pair<torch::Tensor, torch::Tensor> squares(int64_t n, at::Generator& generator) {
  const torch::Tensor labels = torch::randint(4, {n}, generator, torch::kLong);
  torch::Tensor images = -1.0 + 0.3 * torch::randn({n, 1, 8, 8}, generator);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = labels[i].item<int64_t>();
    images[i].narrow(1, 1 + 4 * (k / 2), 2).narrow(2, 1 + 4 * (k % 2), 2).add_(2.0);
  }
  return {images, labels};
}

}  // namespace

TEST_CASE("the noise-prediction score is the closed-form score on Gaussian data", "[algorithms][pretraining]") {
  const sde::VpCosine schedule;
  const double mean = 0.3, variance = 0.25;
  const models::EpsilonScore<sde::VpCosine, ExactGaussianEps> model(schedule,
                                                                    ExactGaussianEps(schedule, mean, variance));
  auto generator = make_generator(3);
  const torch::Tensor x = torch::randn({5, 1, 2, 2}, generator);
  for (const double t : {0.0, 0.4, 0.9}) {
    const double s = schedule.horizon() - t, a = schedule.alpha(s), sigma = schedule.sigma(s);
    const torch::Tensor expected = -(x - a * mean) / (a * a * variance + sigma * sigma);
    CHECK(torch::allclose(model.score(t, x, {}), expected, 1e-5, 1e-5));
  }
}

TEST_CASE("classifier-free guidance extrapolates from the unconditional prediction", "[algorithms][pretraining]") {
  const sde::VpCosine schedule;
  ExactGaussianEps net(schedule, 0.0, 1.0);
  const double w = 2.0;
  const int64_t null_label = 0;  // class 0 shifts the mean by nothing: the "unconditional" model
  const models::EpsilonScore<sde::VpCosine, ExactGaussianEps> guided(schedule, net,
                                                                     {.guidance = w, .null_label = null_label});
  const torch::Tensor x = torch::randn({3, 1, 2, 2});
  const torch::Tensor z = torch::tensor({1, 2, 1}, torch::kLong);
  const double s = 0.5;
  const torch::Tensor time = torch::full({3}, 1000.0 * s);
  const torch::Tensor expected = (1 + w) * net->forward(x, time, z) - w * net->forward(x, time, torch::zeros_like(z));
  CHECK(torch::allclose(guided.epsilon(s, x, z), expected));
  CHECK_THROWS_WITH((models::EpsilonScore<sde::VpCosine, ExactGaussianEps>(schedule, net, {.guidance = 1.0})),
                    Catch::Contains("needs the network's null label"));
}

TEST_CASE("a switched drift is one model before its time and the other after", "[algorithms][pretraining]") {
  const sde::VpCosine schedule;
  using Score = models::EpsilonScore<sde::VpCosine, ExactGaussianEps>;
  const Score early(schedule, ExactGaussianEps(schedule, 0.0, 1.0)),
      late(schedule, ExactGaussianEps(schedule, 0.5, 0.7));
  const double until = 0.5 * schedule.horizon();
  const models::SwitchedDrift switched(early, late, until);
  const torch::Tensor x = torch::randn({3, 1, 2, 2});
  CHECK(torch::equal(switched.score(until - 0.01, x, {}), early.score(until - 0.01, x, {})));
  CHECK(torch::equal(switched.score(until, x, {}), late.score(until, x, {})));
  CHECK(!torch::allclose(early.score(until, x, {}), late.score(until, x, {})));

  // Its path KL to `late` is the KL of `early`'s steps before the switch alone:
  // the whole path's when it switches at the end, none when it starts switched.
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), 10);
  const auto kl_of = [&](const auto& model) {
    auto generator = make_generator(5);
    const torch::Tensor x_init = sde::sample_prior(schedule, {400, 1, 2, 2}, generator);
    return objective::sample_with_path_kl(schedule, model, late, sde::Ddpm({.variance = sde::DdpmVariance::forward}),
                                          grid, x_init, {}, generator)
        .kl.mean()
        .template item<double>();
  };
  const double whole = kl_of(early);
  CHECK(whole > 0.1);
  CHECK(kl_of(models::SwitchedDrift(early, late, schedule.horizon())) == Approx(whole).epsilon(1e-12));
  CHECK(kl_of(models::SwitchedDrift(early, late, 0.0)) == 0.0);
  const double half = kl_of(switched);
  CHECK(half > 0.0);
  CHECK(half < whole);
  CHECK_THROWS_WITH(models::SwitchedDrift(early, late, NAN), Catch::Contains("must be finite"));
}

TEST_CASE("a guided drift scales the tuned model's difference from the reference", "[algorithms][pretraining]") {
  // Data N(m, v) has the score -(x - alpha m) / (alpha^2 v + sigma^2) at every
  // noise level: the difference of two means' scores is linear in the means, so
  // guiding N(1.5, v) against N(0.5, v) at scale w is exactly N(0.5 + w, v).
  const sde::VpCosine schedule;
  using Score = models::EpsilonScore<sde::VpCosine, ExactGaussianEps>;
  const double variance = 0.3;
  const Score reference(schedule, ExactGaussianEps(schedule, 0.5, variance)),
      tuned(schedule, ExactGaussianEps(schedule, 1.5, variance));
  const torch::Tensor x = torch::randn({4, 1, 2, 2});
  for (const double w : {0.0, 0.5, 1.0, 2.5})
    for (const double t : {0.1, 0.5, 0.9}) {
      const Score exact(schedule, ExactGaussianEps(schedule, 0.5 + w, variance));
      const torch::Tensor guided = models::GuidedDrift(tuned, reference, w).score(t, x, {});
      CHECK(torch::allclose(guided, exact.score(t, x, {}), 1e-5, 1e-6));
    }
  CHECK(torch::equal(models::GuidedDrift(tuned, reference, 1.0).score(0.3, x, {}), tuned.score(0.3, x, {})));
  CHECK(torch::equal(models::GuidedDrift(tuned, reference, 0.0).score(0.3, x, {}), reference.score(0.3, x, {})));
  CHECK_THROWS_WITH(models::GuidedDrift(tuned, reference, -1.0), Catch::Contains("must be finite and >= 0"));
  CHECK_THROWS_WITH(models::GuidedDrift(tuned, reference, NAN), Catch::Contains("must be finite and >= 0"));
}

TEST_CASE("a prompted drift passes the prompts, none, or the null label", "[algorithms][pretraining]") {
  const sde::VpCosine schedule;
  using Score = models::EpsilonScore<sde::VpCosine, ExactGaussianEps>;
  const Score score(schedule, ExactGaussianEps(schedule, 0.0, 1.0));
  const torch::Tensor x = torch::randn({3, 1, 2, 2});
  const torch::Tensor z = torch::tensor({1, 3, 1}, torch::kLong);
  const double t = 0.4;
  const torch::Tensor prompted = models::PromptedDrift<Score>(score, true).score(t, x, z);
  CHECK(torch::equal(prompted, score.score(t, x, z)));
  CHECK(torch::equal(models::PromptedDrift<Score>(score, false).score(t, x, z), score.score(t, x, {})));
  // A label-dropout model is unconditional under its null label, for every sample.
  const torch::Tensor under_null = models::PromptedDrift<Score>(score, false, 2).score(t, x, z);
  CHECK(torch::equal(under_null, score.score(t, x, torch::full({3}, 2, torch::kLong))));
  CHECK(!torch::allclose(under_null, prompted));
}

TEST_CASE("a denoising step keeps the exact moving average and drops labels at its rate", "[algorithms][pretraining]") {
  const sde::VpCosine schedule;
  RecordingNet model, ema;
  const double decay = 0.9;
  algorithms::DenoisingTrainer<sde::VpCosine, RecordingNet> trainer(
      schedule, model, ema, {.learning_rate = 0.1, .ema_decay = decay, .label_dropout = 0.25, .null_label = 7});
  auto generator = make_generator(0);
  const int64_t n = 20000;
  const torch::Tensor x0 = torch::randn({n, 1, 1, 1}, generator);
  const torch::Tensor labels = torch::randint(3, {n}, generator, torch::kLong);
  const torch::Tensor before = model->weight.detach().clone();
  REQUIRE(torch::equal(ema->weight, before));
  const auto stats = trainer.step(x0, labels, generator);
  CHECK(stats.loss.item<double>() > 0.5);  // the zero prediction's loss is E[eps^2] = 1
  const torch::Tensor after = model->weight.detach();
  REQUIRE_FALSE(torch::equal(after, before));
  CHECK(torch::allclose(ema->weight, decay * before + (1 - decay) * after));

  // Dropped labels become the null label, the others stay as they were.
  const torch::Tensor dropped = model->seen.eq(7);
  const double rate = dropped.to(torch::kDouble).mean().item<double>();
  INFO("dropped " << rate);
  CHECK(std::abs(rate - 0.25) < 4.0 * std::sqrt(0.25 * 0.75 / double(n)));
  CHECK(torch::equal(model->seen.masked_select(~dropped), labels.masked_select(~dropped)));
}

TEST_CASE("Min-SNR-gamma weighs each sample's denoising loss by min(SNR, gamma) / SNR", "[algorithms][pretraining]") {
  // A zero prediction's loss is the (weighted) mean of eps^2: replay the step's
  // draw from the same generator state and weigh it by hand.
  const sde::VpCosine schedule;
  const int64_t n = 4096;
  auto data = make_generator(1);
  const torch::Tensor x0 = torch::randn({n, 1, 1, 1}, data);
  const torch::Tensor labels = torch::zeros({n}, torch::kLong);
  std::vector<double> losses;
  for (const double gamma : {0.0, 5.0, 1.0}) {
    RecordingNet model, ema;
    algorithms::DenoisingTrainer<sde::VpCosine, RecordingNet> trainer(schedule, model, ema, {.min_snr_gamma = gamma});
    auto generator = make_generator(2), replay = make_generator(2);
    losses.push_back(trainer.step(x0, labels, generator).loss.item<double>());
    const sde::ForwardDraw draw = sde::forward_draw(schedule, x0, replay);
    const torch::Tensor eps = draw.eps.flatten().to(torch::kDouble);
    double expected = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double s = draw.s[std::size_t(i)], snr = std::pow(schedule.alpha(s) / schedule.sigma(s), 2);
      expected += (gamma > 0.0 ? std::min(snr, gamma) / snr : 1.0) * std::pow(eps[i].item<double>(), 2) / double(n);
    }
    INFO("gamma " << gamma);
    CHECK(losses.back() == Approx(expected).epsilon(1e-5));
  }
  // Weights at most 1, smaller for a smaller gamma: the same draw's loss falls.
  CHECK(losses[1] < losses[0]);
  CHECK(losses[2] < losses[1]);
  CHECK_THROWS_WITH((algorithms::DenoisingTrainer<sde::VpCosine, RecordingNet>(schedule, RecordingNet(), RecordingNet(),
                                                                               {.min_snr_gamma = -1.0})),
                    Catch::Contains("min_snr_gamma must be >= 0"));
}

TEST_CASE("denoising pretraining learns a class-conditional model", "[algorithms][pretraining]") {
  // Two classes of 1x4x4 images: all pixels -0.5 (class 0) or +0.5 (class 1),
  // plus pixel noise of std 0.1. After training, conditional samples must come
  // out near their class's level: 1000 steps here give means -0.49 and 0.49,
  // pixel std 0.15 (the data: 0.1).
  const sde::VpCosine schedule;
  auto generator = make_generator(0);
  FlatEpsNet model(16, 2), ema(16, 2);
  algorithms::DenoisingTrainer<sde::VpCosine, FlatEpsNet> trainer(schedule, model, ema,
                                                                  {.learning_rate = 3e-3, .ema_decay = 0.99});
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 1000; ++step) {
    const torch::Tensor labels = torch::randint(2, {128}, generator, torch::kLong);
    const torch::Tensor x0 =
        (labels.to(torch::kFloat) - 0.5).view({-1, 1, 1, 1}) + 0.1 * torch::randn({128, 1, 4, 4}, generator);
    const double loss = trainer.step(x0, labels, generator).loss.item<double>();
    (step < 50 ? first : last) += loss / (step < 50 ? 50.0 : 950.0);
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.5 * first);

  torch::NoGradGuard no_grad;
  const auto score = trainer.score();
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), 50);
  for (const int64_t c : {0, 1}) {
    const torch::Tensor z = torch::full({500}, c, torch::kLong);
    const torch::Tensor x = sde::integrate(schedule, score, sde::Ddim({.clip_x0 = 1.0}), grid,
                                           sde::sample_prior(schedule, {500, 1, 4, 4}, generator), z)
                                .final_state;
    const double level = double(c) - 0.5;
    INFO("class " << c << ": mean " << x.mean().item<double>() << ", pixel std " << x.std().item<double>());
    CHECK(std::abs(x.mean().item<double>() - level) < 0.1);
    CHECK(x.std().item<double>() < 0.3);  // the classes do not mix (that would give 0.5)
  }
}

TEST_CASE("denoising learns named parameters at their own learning rates", "[algorithms][pretraining]") {
  algorithms::DenoisingTrainer<sde::VpCosine, FlatEpsNet> trainer(
      sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2),
      {.learning_rate = 1e-3, .learning_rate_factors = {{"mlp.out", 30.0}}});
  const auto& groups = trainer.optimizer().param_groups();
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params().size() == 4);  // mlp.first and mlp.second: weight, bias
  CHECK(groups[1].params().size() == 2);
  CHECK(groups[0].options().get_lr() == Approx(1e-3));
  CHECK(groups[1].options().get_lr() == Approx(3e-2));
  CHECK_THROWS_WITH(
      (algorithms::DenoisingTrainer<sde::VpCosine, FlatEpsNet>(sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2),
                                                               {.learning_rate_factors = {{"label", 2.0}}})),
      Catch::Contains("no parameter's name starts with label"));
  CHECK_THROWS_WITH(
      (algorithms::DenoisingTrainer<sde::VpCosine, FlatEpsNet>(sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2),
                                                               {.learning_rate_factors = {{"mlp", 0.0}}})),
      Catch::Contains("must be > 0"));
}

TEST_CASE("tilted score matching's weights are the objective's optimum on the pool", "[algorithms][tilt]") {
  // alpha = beta = 1. Round 1 (p_prev = p_pre): p* ∝ p_pre exp(r1 / 2), i.e. the
  // pool's weights softmax(r1 / 2). Round 2: p* ∝ p_pre^(1/2) p_prev^(1/2) exp(r2 / 2)
  // with p_prev ∝ p_pre exp(r1 / 2): softmax(r1 / 4 + r2 / 2).
  auto generator = make_generator(3);
  const int64_t n = 50;
  algorithms::TiltedScoreMatching<sde::VpCosine, FlatEpsNet> tuner(
      sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2), torch::randn({n, 1, 4, 4}, generator), 2,
      {.alpha = 1.0, .beta = 1.0});
  CHECK(torch::allclose(tuner.log_weights(), torch::full({n, 2}, -std::log(double(n)), torch::kDouble)));
  const torch::Tensor r1 = torch::randn({n, 2}, generator, torch::kDouble),
                      r2 = torch::randn({n, 2}, generator, torch::kDouble);
  const auto first = tuner.retilt(r1);
  CHECK(torch::allclose(tuner.log_weights(), torch::log_softmax(r1 / 2.0, 0), 1e-12, 1e-12));
  // The reported KL and effective samples are those of the weights.
  for (int64_t c = 0; c < 2; ++c) {
    const torch::Tensor w = tuner.log_weights().select(1, c).exp();
    CHECK(first[std::size_t(c)].kl == Approx((w * (w * double(n)).log()).sum().item<double>()).epsilon(1e-12));
    CHECK(first[std::size_t(c)].effective_samples == Approx(1.0 / w.square().sum().item<double>()).epsilon(1e-12));
  }
  tuner.retilt(r2);
  CHECK(torch::allclose(tuner.log_weights(), torch::log_softmax(r1 / 4.0 + r2 / 2.0, 0), 1e-12, 1e-12));

  // With beta = 0 it is metrics::tilted_optimum's tilt whatever came before.
  algorithms::TiltedScoreMatching<sde::VpCosine, FlatEpsNet> plain(sde::VpCosine{}, FlatEpsNet(16, 2),
                                                                   FlatEpsNet(16, 2), tuner.pool(), 2, {.alpha = 0.5});
  plain.retilt(r1);
  plain.retilt(r2);
  CHECK(torch::allclose(plain.log_weights().select(1, 1).exp(), metrics::tilted_optimum(r2.select(1, 1), 0.5).weights,
                        1e-12, 1e-12));

  // Bad input is refused with what was wrong.
  CHECK_THROWS_WITH(tuner.retilt(torch::zeros({n, 3}, torch::kDouble)), Catch::Contains("expected rewards [50, 2]"));
  CHECK_THROWS_WITH(tuner.retilt(torch::full({n, 2}, NAN, torch::kDouble)), Catch::Contains("must be finite"));
  CHECK_THROWS_WITH((algorithms::TiltedScoreMatching<sde::VpCosine, FlatEpsNet>(
                        sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2), tuner.pool(), 2, {.alpha = 0.0})),
                    Catch::Contains("alpha must be > 0"));
}

TEST_CASE("tilted score matching asks labels of its optimum's samples, each pair once", "[algorithms][tilt]") {
  auto generator = make_generator(5);
  const int64_t n = 6;
  const auto make = [&] {
    return algorithms::TiltedScoreMatching<sde::VpCosine, FlatEpsNet>(
        sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2), torch::zeros({n, 1, 4, 4}), 2, {.alpha = 1.0});
  };
  // Prompt 0's optimum puts 0.5, 0.3 and 0.2 on rows 0 to 2 (and about e^-30 of
  // that on the rest); prompt 1's is uniform. The first draw for prompt 0 is row i
  // with probability w_i: over 3,000 tuners, within 4 standard errors.
  const torch::Tensor rewards =
      torch::stack({torch::tensor({std::log(0.5), std::log(0.3), std::log(0.2), -30.0, -30.0, -30.0}, torch::kDouble),
                    torch::zeros({n}, torch::kDouble)},
                   1);
  std::vector<double> first(n, 0.0);
  const int draws = 3000;
  for (int k = 0; k < draws; ++k) {
    auto tuner = make();
    tuner.retilt(rewards);
    first[std::size_t(tuner.draw_queries(torch::zeros({1}, torch::kLong), generator).item<int64_t>())] += 1.0 / draws;
  }
  const std::vector<double> expected{0.5, 0.3, 0.2};
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("row " << i << " drawn first " << first[i] << " of the time");
    CHECK(std::abs(first[i] - expected[i]) < 4.0 * std::sqrt(expected[i] * (1.0 - expected[i]) / draws));
  }
  CHECK(first[3] + first[4] + first[5] == 0.0);

  // Within a call and across calls a (row, prompt) pair comes once, in z's order;
  // the rows a tilt all but excludes (weights that underflow: e^-30000) are still
  // drawn once the others are used up, and then the pool is refused by name.
  auto tuner = make();
  tuner.retilt(torch::stack(
      {torch::tensor({0.0, 0.0, -3e4, -3e4, -3e4, -3e4}, torch::kDouble), torch::zeros({n}, torch::kDouble)}, 1));
  const torch::Tensor z = torch::tensor({1, 0, 1, 0}, torch::kLong);
  const torch::Tensor rows = tuner.draw_queries(z, generator);
  REQUIRE(rows.size(0) == 4);
  const auto row = [&](int64_t i) { return rows[i].item<int64_t>(); };
  CHECK(((row(1) == 0 && row(3) == 1) || (row(1) == 1 && row(3) == 0)));  // prompt 0: its optimum's two rows
  CHECK(row(0) != row(2));
  const torch::Tensor rest = tuner.draw_queries(torch::zeros({4}, torch::kLong), generator);
  std::vector<int64_t> seen{row(1), row(3)};
  for (int64_t i = 0; i < 4; ++i) seen.push_back(rest[i].item<int64_t>());
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(tuner.asked().select(1, 0).all().item<bool>());
  CHECK(tuner.asked().select(1, 1).sum().item<int64_t>() == 2);
  CHECK_THROWS_WITH(tuner.draw_queries(torch::zeros({1}, torch::kLong), generator),
                    Catch::Contains("prompt 0 asks for 1 rows, but only 0 of the pool's 6"));
  CHECK_THROWS_WITH(tuner.draw_queries(torch::tensor({2}, torch::kLong), generator),
                    Catch::Contains("prompts must lie in [0, 2)"));
  CHECK_THROWS_WITH(tuner.draw_queries(torch::zeros({2}), generator), Catch::Contains("int64"));
}

TEST_CASE("tilted score matching distils the tilt of the pool into the network", "[algorithms][tilt]") {
  // The pretrained model's samples: 1x4x4 images at level -0.5 or +0.5 (equally
  // likely) plus pixel noise 0.1. Reward r(x, z) = log 0.9 where the level's sign
  // is the prompt's (z = 1: +, z = 0: -), log 0.1 otherwise; alpha = 1. The optimum
  // p_pre exp(r) / Z puts 0.9 of each prompt's mass on its level (on the pool: its
  // weights' share, within 0.01 of it). A network trained by the weighted
  // denoising loss must sample that share, not the pretrained 0.5 nor all of it.
  auto generator = make_generator(4);
  const int64_t n = 2000;
  const torch::Tensor level = torch::randint(2, {n}, generator, torch::kLong);
  const torch::Tensor pool =
      (level.to(torch::kFloat) - 0.5).view({-1, 1, 1, 1}) + 0.1 * torch::randn({n, 1, 4, 4}, generator);
  const torch::Tensor same = torch::stack({level.eq(0), level.eq(1)}, 1);
  const torch::Tensor rewards = torch::where(same, std::log(0.9), std::log(0.1)).to(torch::kDouble);
  algorithms::TiltedScoreMatching<sde::VpCosine, FlatEpsNet> tuner(
      sde::VpCosine{}, FlatEpsNet(16, 2), FlatEpsNet(16, 2), pool, 2,
      {.alpha = 1.0, .batch = 128, .denoising = {.learning_rate = 3e-3, .ema_decay = 0.99}});
  tuner.retilt(rewards);
  for (int64_t c = 0; c < 2; ++c) {
    const double share =
        (tuner.log_weights().select(1, c).exp() * same.select(1, c).to(torch::kDouble)).sum().item<double>();
    CHECK(std::abs(share - 0.9) < 0.01);
  }
  for (int step = 0; step < 2500; ++step) tuner.step(generator);

  torch::NoGradGuard no_grad;
  const auto score = tuner.trainer().score();
  const sde::VpCosine schedule;
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), 100);
  sde::IntegrateOptions options;
  options.record_x0 = false;
  options.generator = generator;
  for (const int64_t c : {0, 1}) {
    const int64_t m = 2000;
    const torch::Tensor x =
        sde::integrate(schedule, score, sde::Ddpm({.clip_x0 = 1.0}), grid,
                       sde::sample_prior(schedule, {m, 1, 4, 4}, generator), torch::full({m}, c, torch::kLong), options)
            .final_state;
    const torch::Tensor means = x.flatten(1).mean(1);
    const double share = (c == 1 ? means.gt(0) : means.lt(0)).to(torch::kDouble).mean().item<double>();
    // Binomial(2000, 0.9) has a standard error of 0.007; the rest is the network's:
    // a mixture's weights are the slowest part of a score to learn (1,500 steps give
    // 0.85 and 0.87, 2,500 give 0.86 and 0.88, 4,000 give 0.88 and 0.89), and
    // the pretrained share is 0.5, a collapse's 1.
    INFO("prompt " << c << ": share of its level " << share);
    CHECK(std::abs(share - 0.9) < 0.06);
  }
}

TEST_CASE("the classifier schedule warms up linearly and decays by a cosine", "[algorithms][classifier]") {
  algorithms::ClassifierTrainer<SmallCnn> trainer(SmallCnn(4),
                                                  {.steps = 110, .learning_rate = 0.2, .warmup_steps = 10});
  CHECK(trainer.learning_rate(0) == Approx(0.02));
  CHECK(trainer.learning_rate(9) == Approx(0.2));
  CHECK(trainer.learning_rate(10) == Approx(0.2));
  CHECK(trainer.learning_rate(60) == Approx(0.1));
  CHECK(trainer.learning_rate(110) == Approx(0.0).margin(1e-12));
}

TEST_CASE("augmentation flips and shifts each image, filling with the background", "[algorithms][classifier]") {
  auto generator = make_generator(1);
  const torch::Tensor images = torch::rand({64, 1, 5, 5}, generator);
  const torch::Tensor flipped = algorithms::augment_images(images, true, 0, -1.0, generator);
  int flips = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const bool same = torch::equal(flipped[i], images[i]);
    flips += !same;
    CHECK((same || torch::equal(flipped[i], images[i].flip({2}))));
  }
  CHECK(flips > 16);  // Binomial(64, 1/2): 32 expected, P(<= 16) < 1e-4
  CHECK(flips < 48);

  const torch::Tensor shifted = algorithms::augment_images(images, false, 2, -1.0, generator);
  for (int64_t i = 0; i < 64; ++i) {
    const torch::Tensor padded = torch::constant_pad_nd(images[i], {2, 2, 2, 2}, -1.0);
    bool found = false;
    for (int64_t dy = 0; dy <= 4 && !found; ++dy)
      for (int64_t dx = 0; dx <= 4 && !found; ++dx)
        found = torch::equal(shifted[i], padded.narrow(1, dy, 5).narrow(2, dx, 5));
    CHECK(found);
  }
}

TEST_CASE("classifier training separates a learnable problem", "[algorithms][classifier]") {
  auto generator = make_generator(2);
  const auto [train_images, train_labels] = squares(512, generator);
  const auto [test_images, test_labels] = squares(400, generator);
  SmallCnn model(4);
  algorithms::ClassifierTrainer<SmallCnn> trainer(
      model, {.steps = 150, .learning_rate = 0.05, .warmup_steps = 10, .flip = false, .crop_padding = 0});
  for (int step = 0; step < 150; ++step) {
    const torch::Tensor index = torch::randint(512, {64}, generator, torch::kLong);
    trainer.step(train_images.index_select(0, index), train_labels.index_select(0, index), generator);
  }
  const auto report = metrics::evaluate_classifier(model, test_images, test_labels, 64);
  INFO("test accuracy " << report.accuracy);
  CHECK(report.accuracy > 0.95);  // chance is 0.25
  CHECK(report.count == 400);
  CHECK(report.confusion.sum().item<int64_t>() == 400);
}

TEST_CASE("a noise-aware classifier trains on forward draws of its schedule", "[algorithms][classifier]") {
  // sde::forward_noise(schedule) is the schedule's forward draw, and the trainer feeds
  // every augmented batch through forward_noise, and the network sees what it
  // returns (NaN images give a NaN loss).
  const sde::VpCosine schedule;
  const torch::Tensor x = torch::randn({8, 1, 6, 6}, make_generator(3));
  const auto noise = sde::forward_noise(schedule);
  CHECK(torch::equal(noise(x, make_generator(9)), sde::forward_draw(schedule, x, make_generator(9)).x));

  auto generator = make_generator(2);
  const auto data = squares(64, generator);
  const torch::Tensor images = data.first, labels = data.second;
  SmallCnn model(4);
  int64_t calls = 0;
  algorithms::ClassifierTrainer<SmallCnn> trainer(
      model, {.steps = 3,
              .warmup_steps = 1,
              .flip = false,
              .crop_padding = 0,
              .forward_noise = [&](const torch::Tensor& batch, const c10::optional<at::Generator>&) {
                ++calls;
                CHECK(torch::equal(batch, images));
                return torch::full_like(batch, std::nan(""));
              }});
  for (int step = 0; step < 3; ++step) CHECK(std::isnan(trainer.step(images, labels, generator).loss.item<double>()));
  CHECK(calls == 3);
}

TEST_CASE("the classification report counts exactly", "[metrics][classifier]") {
  const torch::Tensor probabilities =
      torch::tensor({{0.9, 0.1, 0.0}, {0.2, 0.7, 0.1}, {0.6, 0.3, 0.1}, {0.1, 0.1, 0.8}, {0.1, 0.8, 0.1}});
  const torch::Tensor labels = torch::tensor({0, 1, 1, 2, 1}, torch::kLong);
  const auto report = metrics::classification_report(probabilities, labels);
  CHECK(report.accuracy == Approx(4.0 / 5.0));
  CHECK(report.class_accuracy[0] == Approx(1.0));
  CHECK(report.class_accuracy[1] == Approx(2.0 / 3.0));
  CHECK(report.class_accuracy[2] == Approx(1.0));
  CHECK(torch::equal(report.confusion, torch::tensor({1, 0, 0, 1, 2, 0, 0, 0, 1}, torch::kLong).view({3, 3})));
  CHECK_THROWS_WITH(metrics::classification_report(probabilities, torch::tensor({0, 1, 3, 0, 0}, torch::kLong)),
                    Catch::Contains("labels must lie in [0, 3)"));
}
