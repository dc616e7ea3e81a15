#pragma once
// How good a generator's samples are, as the q-learning experiments report it:
// the mean reward and the kNN KL divergence to the data, each as a mean with its
// 95% t-interval over independent batches of generated samples.

#include <concepts>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/metrics/knn_kl.hpp"
#include "diffctl/metrics/paired_comparison.hpp"

namespace diffctl::metrics {

struct SampleQuality {
  MeanInterval reward;      // mean of h over a batch
  MeanInterval kl;          // KL(generated batch || data), nats: the papers' figure; blind to missed modes
  MeanInterval forward_kl;  // KL(data || generated batch), nats: large where the samples miss data
};

struct SampleQualityOptions {
  int64_t batches = 100;
  int64_t batch_size = 300;
  KnnKlOptions knn = {};
};

// draw(n) returns n generated samples [n, d]; reward(y) their rewards [n]. The KL
// of each batch is taken against `reference`: a data tensor [m, d] (the same for
// every batch, e.g. the training set), or a callable reference(n) returning a new
// data set for each batch (fresh data, so that a model that reproduces its
// training points is not mistaken for one that learned the distribution).
template <class Draw, class Reward, class Reference>
SampleQuality sample_quality(Draw&& draw, Reward&& reward, Reference&& reference, SampleQualityOptions options = {}) {
  require(options.batches >= 2 && options.batch_size >= 2,
          "sample_quality: need at least 2 batches of at least 2 samples, found ", options.batches, " of ",
          options.batch_size);
  std::vector<double> rewards, kls, forward_kls;
  for (int64_t b = 0; b < options.batches; ++b) {
    const torch::Tensor y = draw(options.batch_size);
    rewards.push_back(torch::Tensor(reward(y)).to(torch::kDouble).mean().item<double>());
    torch::Tensor data;
    if constexpr (std::invocable<Reference&, int64_t>) data = reference(options.batch_size);
    else data = reference;
    kls.push_back(knn_kl_divergence(y, data, options.knn));
    forward_kls.push_back(knn_kl_divergence(data, y, options.knn));
  }
  return {mean_interval(rewards), mean_interval(kls), mean_interval(forward_kls)};
}

}  // namespace diffctl::metrics
