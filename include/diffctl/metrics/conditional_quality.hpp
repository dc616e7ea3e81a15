#pragma once
// Whether class-prompted samples meet their prompts without collapsing, in a
// classifier's terms (the oracle's logits and penultimate features). Per prompt:
//
//   accuracy     the share of samples the classifier labels as the prompt (argmax);
//   probability  the mean probability it gives the prompt;
//   diversity    the mean pairwise distance between the samples' features, over the
//                same for real images of that class: 1 is as varied as the data,
//                near 0 is near copies of one image;
//   frechet      the Frechet distance between Gaussians fitted to the samples' and
//                the real images' features of the class (FID's formula, per class
//                and in the classifier's own features).
//
// The aggregates are means over the prompts present. Mode collapse shows as a high
// accuracy with a low diversity and a large Frechet distance.

#include <cmath>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::metrics {

// The Frechet distance between the Gaussians fitted to two sets of features
// [N, F] and [M, F] (N, M >= 2): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)),
// with the trace of the square root from the eigenvalues of S_a^(1/2) S_b S_a^(1/2).
inline double frechet_distance(const torch::Tensor& a, const torch::Tensor& b) {
  require(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1) && a.size(0) >= 2 && b.size(0) >= 2,
          "frechet_distance: expected features [N, F] and [M, F] with N, M >= 2, found ", a.sizes(), " and ",
          b.sizes());
  const torch::Tensor x = a.to(torch::kCPU, torch::kDouble), y = b.to(torch::kCPU, torch::kDouble);
  const torch::Tensor mean_x = x.mean(0), mean_y = y.mean(0);
  const auto covariance = [](const torch::Tensor& f, const torch::Tensor& mean) {
    const torch::Tensor centred = f - mean;
    return centred.t().mm(centred) / double(f.size(0) - 1);
  };
  const torch::Tensor cov_x = covariance(x, mean_x), cov_y = covariance(y, mean_y);
  const auto [values, vectors] = torch::linalg_eigh(cov_x);
  const torch::Tensor root_x = vectors.mm(torch::diag(values.clamp_min(0.0).sqrt())).mm(vectors.t());
  const torch::Tensor middle = root_x.mm(cov_y).mm(root_x);
  const double trace_root =
      torch::linalg_eigvalsh(0.5 * (middle + middle.t())).clamp_min(0.0).sqrt().sum().item<double>();
  return (mean_x - mean_y).square().sum().item<double>() + cov_x.trace().item<double>() + cov_y.trace().item<double>() -
         2.0 * trace_root;
}

// The mean Euclidean distance between distinct members of a set of features [N, F], N >= 2.
inline double mean_pairwise_distance(const torch::Tensor& features) {
  require(features.dim() == 2 && features.size(0) >= 2,
          "mean_pairwise_distance: expected features [N, F] with N >= 2, found ", features.sizes());
  const torch::Tensor f = features.to(torch::kCPU, torch::kDouble);
  const double n = double(f.size(0));
  return torch::cdist(f, f).sum().item<double>() / (n * (n - 1.0));
}

struct PromptQuality {
  int64_t prompt = 0;
  int64_t count = 0;  // samples with this prompt
  double accuracy = 0.0, probability = 0.0, diversity = 0.0, frechet = 0.0;
};

struct ConditionalQuality {
  double accuracy = 0.0, probability = 0.0, diversity = 0.0, frechet = 0.0;  // means over the prompts
  std::vector<PromptQuality> prompts;
};

// Samples' classifier logits [N, K] and features [N, F] with their prompts [N];
// the features [M, F] and labels [M] of real images. Every prompt present needs at
// least 2 samples and 2 real images of its class.
inline ConditionalQuality conditional_quality(const torch::Tensor& logits, const torch::Tensor& features,
                                              const torch::Tensor& prompts, const torch::Tensor& real_features,
                                              const torch::Tensor& real_labels) {
  require(logits.dim() == 2 && features.dim() == 2 && prompts.dim() == 1 && logits.size(0) == prompts.size(0) &&
              features.size(0) == prompts.size(0),
          "conditional_quality: expected logits [N, K], features [N, F] and prompts [N], found ", logits.sizes(), ", ",
          features.sizes(), " and ", prompts.sizes());
  require(real_features.dim() == 2 && real_features.size(1) == features.size(1) && real_labels.dim() == 1 &&
              real_labels.size(0) == real_features.size(0),
          "conditional_quality: expected real features [M, ", features.size(1), "] and labels [M], found ",
          real_features.sizes(), " and ", real_labels.sizes());
  const torch::Tensor z = prompts.to(torch::kCPU, torch::kLong), labels = real_labels.to(torch::kCPU, torch::kLong);
  const torch::Tensor probabilities = torch::softmax(logits.to(torch::kCPU, torch::kDouble), 1);
  const torch::Tensor f = features.to(torch::kCPU, torch::kDouble),
                      real = real_features.to(torch::kCPU, torch::kDouble);
  const int64_t classes = logits.size(1);
  require(z.numel() == 0 || (z.min().item<int64_t>() >= 0 && z.max().item<int64_t>() < classes),
          "conditional_quality: prompts must lie in [0, ", classes, ")");
  ConditionalQuality quality;
  for (int64_t c = 0; c < classes; ++c) {
    const torch::Tensor mine = (z == c).nonzero().squeeze(1);
    if (mine.numel() == 0) continue;
    const torch::Tensor theirs = (labels == c).nonzero().squeeze(1);
    require(mine.numel() >= 2 && theirs.numel() >= 2, "conditional_quality: prompt ", c, " has ", mine.numel(),
            " samples and ", theirs.numel(), " real images; each needs at least 2");
    PromptQuality q;
    q.prompt = c;
    q.count = mine.numel();
    const torch::Tensor p = probabilities.index_select(0, mine);
    q.accuracy = (p.argmax(1) == c).to(torch::kDouble).mean().item<double>();
    q.probability = p.select(1, c).mean().item<double>();
    const torch::Tensor sample_features = f.index_select(0, mine), real_class = real.index_select(0, theirs);
    q.diversity = mean_pairwise_distance(sample_features) / mean_pairwise_distance(real_class);
    q.frechet = frechet_distance(sample_features, real_class);
    quality.prompts.push_back(q);
  }
  require(!quality.prompts.empty(), "conditional_quality: no samples");
  for (const PromptQuality& q : quality.prompts) {
    const double share = 1.0 / double(quality.prompts.size());
    quality.accuracy += share * q.accuracy;
    quality.probability += share * q.probability;
    quality.diversity += share * q.diversity;
    quality.frechet += share * q.frechet;
  }
  return quality;
}

}  // namespace diffctl::metrics
