#pragma once
// How good a generator's samples are, as the q-learning experiments report it:
// the mean reward and the kNN KL divergence to the data, each as a mean with a 95%
// confidence interval over independent batches of generated samples.

#include <cmath>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/metrics/knn_kl.hpp"

namespace diffctl::metrics {

struct MeanCi {
  double mean = 0.0;
  double ci95 = 0.0;  // half-width: mean +- ci95, normal approximation
};

inline MeanCi mean_ci95(const std::vector<double>& values) {
  require(values.size() >= 2, "mean_ci95: need at least 2 values, found ", values.size());
  const torch::Tensor v = torch::tensor(values, torch::kDouble);
  return {v.mean().item<double>(),
          1.96 * v.std().item<double>() / std::sqrt(static_cast<double>(values.size()))};
}

struct SampleQuality {
  MeanCi reward;  // mean of h over a batch
  MeanCi kl;      // KL(generated batch || data), nats
};

struct SampleQualityOptions {
  int64_t batches = 100;
  int64_t batch_size = 300;
  KnnKlOptions knn = {};
};

// draw(n) returns n generated samples [n, d]; reward(y) their rewards [n].
template <class Draw, class Reward>
SampleQuality sample_quality(Draw&& draw, Reward&& reward, const torch::Tensor& data,
                             SampleQualityOptions options = {}) {
  require(options.batches >= 2 && options.batch_size >= 2,
          "sample_quality: need at least 2 batches of at least 2 samples, found ", options.batches,
          " of ", options.batch_size);
  std::vector<double> rewards, kls;
  for (int64_t b = 0; b < options.batches; ++b) {
    const torch::Tensor y = draw(options.batch_size);
    rewards.push_back(torch::Tensor(reward(y)).to(torch::kDouble).mean().item<double>());
    kls.push_back(knn_kl_divergence(y, data, options.knn));
  }
  return {mean_ci95(rewards), mean_ci95(kls)};
}

}  // namespace diffctl::metrics
