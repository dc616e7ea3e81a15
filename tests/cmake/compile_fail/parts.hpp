#pragma once
// Complete components for the compile-fail cases: each case combines these with
// one component that misses what the algorithm calls (and has it when compiled
// with DIFFCTL_CHECK_COMPLETE, the positive control).

#include <cmath>
#include <utility>

#include <diffctl/diffctl.hpp>

namespace parts {

struct Schedule {
  double horizon() const { return 1.0; }
  double alpha(double s) const { return std::exp(-s); }
  double sigma(double s) const { return std::sqrt(-std::expm1(-2.0 * s)); }
  double drift_coef(double) const { return -1.0; }
  double diffusion(double) const { return std::sqrt(2.0); }
};

// The score of N(0, I) under Schedule (an Ornstein-Uhlenbeck process from it).
struct Model {
  torch::Tensor score(double, const torch::Tensor& x, const torch::Tensor&) const { return -x; }
};

struct Reward {
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor&) const { return x.sum(1); }
};

using Oracle = diffctl::reward::Oracle<Reward>;
using Members = diffctl::reward::ModuleMembers<torch::nn::Sequential, diffctl::reward::ScalarReadout>;
using Ensemble = diffctl::reward::BootstrapEnsemble<Members>;

inline diffctl::sde::TimeGrid grid() { return diffctl::sde::TimeGrid::uniform(Schedule{}.horizon(), 10); }

// One round of continuous SEIKO on 2-D states with the given components.
template <class Policy, class Selection, class RewardModel, class Regularizer = diffctl::objective::PathKl,
          class FeedbackOracle = Oracle>
diffctl::algorithms::SeikoRound seiko_round(Policy policy, Selection selection, RewardModel reward_model,
                                            FeedbackOracle& oracle, diffctl::reward::FeedbackDataset& feedback,
                                            Regularizer regularizer = {}) {
  diffctl::algorithms::ContinuousSeiko<Schedule, Model, Policy, Selection, diffctl::sde::EulerMaruyama, RewardModel,
                                       Regularizer>
      seiko(Schedule{}, grid(), {2}, Model{}, std::move(policy), std::move(reward_model), {}, std::move(selection), {},
            std::move(regularizer));
  return seiko.run_round(oracle, feedback);
}

}  // namespace parts
