// Prompt accuracy, diversity and per-class Frechet distance against cases with
// known answers.

#include <catch2/catch.hpp>

#include <cmath>
#include <utility>
#include <vector>

#include "diffctl/metrics/conditional_quality.hpp"
#include "diffctl/metrics/tilted_optimum.hpp"
#include "diffctl/runtime.hpp"

using namespace diffctl;

TEST_CASE("the Frechet distance has its closed form under a shift and a scaling", "[metrics][frechet]") {
  auto generator = make_generator(0);
  torch::Tensor a =
      torch::randn({200, 5}, generator, torch::kDouble) * torch::tensor({1.0, 2.0, 0.5, 1.0, 3.0}, torch::kDouble);
  a = a - a.mean(0);
  // Same covariance, means apart by c: |c|^2.
  const torch::Tensor shift = torch::tensor({1.0, -2.0, 0.0, 0.5, 0.0}, torch::kDouble);
  CHECK(metrics::frechet_distance(a, a + shift) == Approx(5.25).epsilon(1e-9));
  CHECK(metrics::frechet_distance(a, a) == Approx(0.0).margin(1e-9));
  // Zero means, covariance S against 4 S: Tr(S) + 4 Tr(S) - 2 Tr(2 S) = Tr(S).
  const double trace = (a.t().mm(a) / 199.0).trace().item<double>();
  CHECK(metrics::frechet_distance(a, 2.0 * a) == Approx(trace).epsilon(1e-9));
  CHECK_THROWS_WITH(metrics::frechet_distance(a, torch::zeros({3, 4})), Catch::Contains("[M, F]"));
}

TEST_CASE("the mean pairwise distance averages over distinct pairs", "[metrics][diversity]") {
  // 0, 1 and 3 on a line: distances 1, 3 and 2.
  CHECK(metrics::mean_pairwise_distance(torch::tensor({{0.0}, {1.0}, {3.0}})) == Approx(2.0));
  CHECK(metrics::mean_pairwise_distance(torch::ones({4, 3})) == 0.0);
}

TEST_CASE("conditional quality tells a faithful prompt from a collapsed one", "[metrics][conditional]") {
  auto generator = make_generator(1);
  const torch::Tensor real0 = torch::randn({60, 4}, generator, torch::kDouble);
  const torch::Tensor real1 = torch::randn({60, 4}, generator, torch::kDouble) + 3.0;
  const torch::Tensor real = torch::cat({real0, real1});
  const torch::Tensor labels = torch::cat({torch::zeros({60}, torch::kLong), torch::ones({60}, torch::kLong)});
  // Prompt 0: the real images of class 0 themselves, labelled 0. Prompt 1: ten
  // copies of one image, which the classifier calls class 0 with logits (2, 0).
  const torch::Tensor features = torch::cat({real0, real1[0].expand({10, 4})});
  const torch::Tensor prompts = torch::cat({torch::zeros({60}, torch::kLong), torch::ones({10}, torch::kLong)});
  const torch::Tensor logits =
      torch::cat({torch::tensor({{5.0, 0.0}}).expand({60, 2}), torch::tensor({{2.0, 0.0}}).expand({10, 2})});
  const auto quality = metrics::conditional_quality(logits, features, prompts, real, labels);
  REQUIRE(quality.prompts.size() == 2);
  const auto& faithful = quality.prompts[0];
  const auto& collapsed = quality.prompts[1];
  CHECK(faithful.count == 60);
  CHECK(faithful.accuracy == 1.0);
  CHECK(faithful.probability == Approx(1.0 / (1.0 + std::exp(-5.0))));
  CHECK(faithful.diversity == Approx(1.0));
  CHECK(faithful.frechet == Approx(0.0).margin(1e-9));
  CHECK(collapsed.accuracy == 0.0);
  CHECK(collapsed.probability == Approx(1.0 / (1.0 + std::exp(2.0))));
  CHECK(collapsed.diversity == 0.0);
  // One point against the class: the mean's offset plus the class's whole variance.
  const torch::Tensor centred = real1 - real1.mean(0);
  const double expected = (real1[0] - real1.mean(0)).square().sum().item<double>() +
                          (centred.t().mm(centred) / 59.0).trace().item<double>();
  CHECK(collapsed.frechet == Approx(expected).epsilon(1e-9));
  CHECK(quality.accuracy == 0.5);
  CHECK(quality.diversity == Approx(0.5));
  CHECK_THROWS_WITH(metrics::conditional_quality(logits, features, torch::full({70}, 2, torch::kLong), real, labels),
                    Catch::Contains("prompts must lie in [0, 2)"));
}

TEST_CASE("the tilted optimum of a linear reward on a Gaussian is the shifted Gaussian", "[metrics][tilt]") {
  // p_pre = N(0, 1), r(x) = mu x, alpha: p* = N(mu / alpha, 1), KL (mu / alpha)^2 / 2,
  // and the importance weights' effective share exp(-(mu / alpha)^2) of the samples.
  const int64_t n = 400000;
  const torch::Tensor x = torch::randn({n}, make_generator(8), torch::kDouble);
  for (const auto& [mu, alpha] : std::vector<std::pair<double, double>>{{0.5, 1.0}, {0.5, 0.5}}) {
    const double shift = mu / alpha;
    const metrics::TiltedOptimum tilt = metrics::tilted_optimum(mu * x, alpha);
    INFO("mu " << mu << ", alpha " << alpha << ": KL " << tilt.kl << ", effective samples " << tilt.effective_samples);
    CHECK((tilt.weights * x).sum().item<double>() == Approx(shift).margin(0.01));
    CHECK(tilt.kl == Approx(shift * shift / 2).margin(0.01));
    CHECK(tilt.effective_samples / double(n) == Approx(std::exp(-shift * shift)).epsilon(0.02));
  }
  // A constant reward leaves p_pre as it is; one sample far ahead takes all weight,
  // at the bound log N.
  const metrics::TiltedOptimum flat = metrics::tilted_optimum(torch::full({10}, 3.0), 0.1);
  CHECK(flat.kl == Approx(0.0).margin(1e-12));
  CHECK(flat.effective_samples == Approx(10.0));
  const metrics::TiltedOptimum sharp = metrics::tilted_optimum(torch::tensor({0.0, 0.0, 0.0, 10.0}), 0.01);
  CHECK(sharp.kl == Approx(std::log(4.0)));
  CHECK(sharp.effective_samples == Approx(1.0));
  // Its other weights underflow to 0; their logarithms stay exact: -1000 - log(1 + 3 e^-1000).
  CHECK(sharp.weights[0].item<double>() == 0.0);
  CHECK(sharp.log_weights[0].item<double>() == Approx(-1000.0));
  CHECK(sharp.log_weights[3].item<double>() == Approx(0.0).margin(1e-12));
  CHECK_THROWS_WITH(metrics::tilted_optimum(torch::ones({3}), 0.0), Catch::Contains("alpha must be finite and > 0"));
  CHECK_THROWS_WITH(metrics::tilted_optimum(torch::tensor({1.0, std::nan("")}), 1.0),
                    Catch::Contains("must be finite"));
  CHECK_THROWS_WITH(metrics::tilted_optimum(torch::ones({2, 2}), 1.0), Catch::Contains("expected rewards [N]"));
}
