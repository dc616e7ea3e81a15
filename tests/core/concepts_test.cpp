// The concepts accept the library's components and reject near misses. (That a
// wrong combination fails to compile, naming the concept, is shown by the
// compile-fail cases in tests/cmake.)

#include <catch2/catch.hpp>

#include <span>
#include <vector>

#include "diffctl/concepts.hpp"
#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"

using namespace diffctl;

namespace {

using Gaussian = models::GaussianMixtureScore<sde::VpLinear>;

struct ScheduleWithoutDiffusion {
  double horizon() const { return 1.0; }
  double alpha(double) const { return 1.0; }
  double sigma(double) const { return 1.0; }
  double drift_coef(double) const { return 0.0; }
};

struct ScoreOfWrongType {
  double score(double, const torch::Tensor&, const torch::Tensor&) const { return 0.0; }
};

struct ZeroControl {
  torch::Tensor control(double, const torch::Tensor& x, const torch::Tensor&) const { return torch::zeros_like(x); }
};

struct EveryTime {
  torch::Tensor select(std::span<const double>, const torch::Tensor& uncertainty) const {
    return torch::ones_like(uncertainty, torch::kBool);
  }
};

// A reward model of constant value: everything ContinuousSeiko calls.
struct ConstantReward {
  struct Estimate {
    torch::Tensor mean, uncertainty, optimistic;
  };
  double level = 0.5;
  void fit(const reward::FeedbackDataset&) {}
  void refresh(const reward::FeedbackDataset&) {}
  torch::Tensor mean(const torch::Tensor& x, const torch::Tensor&) const { return torch::full({x.size(0)}, level); }
  torch::Tensor uncertainty(const torch::Tensor& x, const torch::Tensor&) const { return torch::zeros({x.size(0)}); }
  torch::Tensor optimistic(const torch::Tensor& x, const torch::Tensor& z) { return mean(x, z); }
  Estimate estimate(const torch::Tensor& x, const torch::Tensor& z) {
    return {mean(x, z), uncertainty(x, z), mean(x, z)};
  }
  void add_to(io::Checkpoint&) {}
};

// The same without refresh(): once a static_assert passed and SEIKO failed deep
// inside; now the concept says it.
struct RewardWithoutRefresh {
  struct Estimate {
    torch::Tensor mean, uncertainty, optimistic;
  };
  void fit(const reward::FeedbackDataset&) {}
  torch::Tensor mean(const torch::Tensor& x, const torch::Tensor&) const { return x; }
  torch::Tensor uncertainty(const torch::Tensor& x, const torch::Tensor&) const { return x; }
  torch::Tensor optimistic(const torch::Tensor& x, const torch::Tensor&) { return x; }
  Estimate estimate(const torch::Tensor& x, const torch::Tensor&) { return {x, x, x}; }
  void add_to(io::Checkpoint&) {}
};

struct MeanGapPenalty {
  torch::Tensor penalty(const Transition& tuned, const Transition& pretrained, const Transition&) const {
    return (tuned.mean - pretrained.mean).square().flatten(1).sum(1);
  }
};

}  // namespace

TEST_CASE("concepts accept the library's components and reject near misses", "[concepts]") {
  STATIC_REQUIRE(NoiseSchedule<sde::VpLinear>);
  STATIC_REQUIRE(NoiseSchedule<sde::VpCosine>);
  STATIC_REQUIRE(NoiseSchedule<sde::Ve>);
  STATIC_REQUIRE(NoiseSchedule<sde::OrnsteinUhlenbeck>);
  STATIC_REQUIRE_FALSE(NoiseSchedule<ScheduleWithoutDiffusion>);

  STATIC_REQUIRE(DriftModel<Gaussian>);
  STATIC_REQUIRE_FALSE(DriftModel<ScoreOfWrongType>);
  STATIC_REQUIRE_FALSE(DriftModel<sde::VpLinear>);

  STATIC_REQUIRE(SdeSolver<sde::EulerMaruyama, sde::VpLinear, Gaussian>);
  STATIC_REQUIRE(SdeSolver<sde::ProbabilityFlowEuler, sde::VpLinear, Gaussian>);
  STATIC_REQUIRE(SdeSolver<sde::Heun, sde::Ve, models::GaussianMixtureScore<sde::Ve>>);
  STATIC_REQUIRE(SdeSolver<sde::Ddim, sde::VpCosine, Gaussian>);
  STATIC_REQUIRE(SdeSolver<sde::Ddpm, sde::OrnsteinUhlenbeck, Gaussian>);
  STATIC_REQUIRE_FALSE(SdeSolver<sde::Heun, ScheduleWithoutDiffusion, Gaussian>);
  STATIC_REQUIRE_FALSE(SdeSolver<sde::Heun, sde::VpLinear, ScoreOfWrongType>);
  STATIC_REQUIRE_FALSE(SdeSolver<sde::VpLinear, sde::VpLinear, Gaussian>);

  STATIC_REQUIRE(ControlPolicy<ZeroControl>);
  STATIC_REQUIRE_FALSE(ControlPolicy<Gaussian>);
  STATIC_REQUIRE(MeasurementSelection<EveryTime>);
  STATIC_REQUIRE_FALSE(MeasurementSelection<ZeroControl>);
  STATIC_REQUIRE(UncertainReward<ConstantReward>);
  STATIC_REQUIRE_FALSE(UncertainReward<RewardWithoutRefresh>);
  STATIC_REQUIRE(Regularizer<MeanGapPenalty>);
  STATIC_REQUIRE_FALSE(Regularizer<ZeroControl>);
}
