#pragma once
// The analytic test case: data N(m, sd^2 I) in 2-D. Every noised marginal is
// N(alpha m, v I) with v(s) = alpha(s)^2 sd^2 + sigma(s)^2, so the score, the
// probability-flow map and the mean response to an impulse are all closed form.

#include <cmath>

#include <torch/torch.h>

#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/schedules.hpp"

namespace diffctl::testing {

template <NoiseSchedule Schedule>
struct GaussianCase {
  Schedule schedule;
  torch::Tensor mean = torch::tensor({1.5, -0.5}, torch::kDouble);
  double sd = 0.5;

  models::GaussianMixtureScore<Schedule> model() const {
    return models::GaussianMixtureScore<Schedule>::gaussian(schedule, mean, sd);
  }
  // Variance of the marginal at generation time t.
  double variance(double t) const {
    const double s = schedule.horizon() - t;
    const double a = schedule.alpha(s), sg = schedule.sigma(s);
    return a * a * sd * sd + sg * sg;
  }
  double alpha(double t) const { return schedule.alpha(schedule.horizon() - t); }
  // n exact draws from the marginal at generation time t.
  torch::Tensor draw(double t, int64_t n, std::uint64_t seed) const {
    return model().sample(t, n, make_generator(seed), torch::kDouble).first;
  }
  // The exact probability-flow map from time t to time t_end.
  torch::Tensor flow(const torch::Tensor& x, double t, double t_end) const {
    return alpha(t_end) * mean + std::sqrt(variance(t_end) / variance(t)) * (x - alpha(t) * mean);
  }
};

}  // namespace diffctl::testing
