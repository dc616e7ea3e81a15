#pragma once
// The learned initial distribution of a fine-tuned sampler: x(0) = m + e^l xi with
// xi ~ N(0, I), m of one sample's shape and l a scalar. It starts at the
// schedule's prior N(0, sigma(T)^2 I) and keeps that prior and the previous
// round's (m, l), so that the objective can charge its KL to both (closed form,
// objective::gaussian_kl).

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/objective/path_kl.hpp"
#include "diffctl/runtime.hpp"

namespace diffctl::sde {

class LearnedGaussianInitial {
 public:
  // The prior N(0, prior_std^2 I) over samples of `sample_shape`, on `device`.
  LearnedGaussianInitial(std::vector<int64_t> sample_shape, double prior_std, torch::Device device = torch::kCPU)
      : sample_shape_(std::move(sample_shape)) {
    require(!sample_shape_.empty(), "initial distribution: the sample shape is empty");
    require(prior_std > 0.0 && std::isfinite(prior_std), "initial distribution: the prior's std must be > 0, found ",
            prior_std);
    const auto options = torch::TensorOptions(torch::kFloat).device(device);
    mean_ = torch::zeros(sample_shape_, options);
    log_std_ = torch::full({}, std::log(prior_std), options);
    prior_mean_ = mean_.clone();
    prior_log_std_ = log_std_.clone();
    previous_mean_ = mean_.clone();
    previous_log_std_ = log_std_.clone();
  }

  // The schedule's own prior, N(0, sigma(T)^2 I).
  template <NoiseSchedule Schedule>
  static LearnedGaussianInitial prior_of(const Schedule& schedule, std::vector<int64_t> sample_shape,
                                         torch::Device device = torch::kCPU) {
    return LearnedGaussianInitial(std::move(sample_shape), schedule.sigma(schedule.horizon()), device);
  }

  // n draws [n, sample shape], differentiable in m and l while they are trainable.
  torch::Tensor draw(int64_t n, at::Generator& generator) const {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
    return mean_ + log_std_.exp() * standard_normal(shape, generator, mean_.options().requires_grad(false));
  }

  // KL of one draw's law to the prior and to the previous round's (scalars).
  torch::Tensor kl_to_prior() const { return objective::gaussian_kl(mean_, log_std_, prior_mean_, prior_log_std_); }
  torch::Tensor kl_to_previous() const {
    return objective::gaussian_kl(mean_, log_std_, previous_mean_, previous_log_std_);
  }

  // m and l, for an optimiser; set_trainable(true) makes draws differentiable in them.
  std::vector<torch::Tensor> parameters() const { return {mean_, log_std_}; }
  void set_trainable(bool trainable) {
    mean_.requires_grad_(trainable);
    log_std_.requires_grad_(trainable);
  }

  // The round is over: its (m, l) becomes the previous round's.
  void end_round() {
    previous_mean_ = mean_.detach().clone();
    previous_log_std_ = log_std_.detach().clone();
  }

  // Registers (m, l) and the previous round's in a checkpoint, under
  // <prefix>initial_mean, <prefix>initial_log_std, <prefix>previous_initial_mean
  // and <prefix>previous_initial_log_std.
  void add_to(io::Checkpoint& checkpoint, const std::string& prefix = "") {
    checkpoint.tensors.emplace_back(prefix + "initial_mean", &mean_);
    checkpoint.tensors.emplace_back(prefix + "initial_log_std", &log_std_);
    checkpoint.tensors.emplace_back(prefix + "previous_initial_mean", &previous_mean_);
    checkpoint.tensors.emplace_back(prefix + "previous_initial_log_std", &previous_log_std_);
  }

  const torch::Tensor& mean() const { return mean_; }
  const torch::Tensor& log_std() const { return log_std_; }
  const std::vector<int64_t>& sample_shape() const { return sample_shape_; }

 private:
  std::vector<int64_t> sample_shape_;
  torch::Tensor mean_, log_std_, prior_mean_, prior_log_std_, previous_mean_, previous_log_std_;
};

}  // namespace diffctl::sde
