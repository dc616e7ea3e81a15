#pragma once
// Where a KL-regularised objective would take the sampler, measured without
// fine-tuning. Over all distributions p, E_p[r] - alpha KL(p || p_pre) is
// maximised by the tilt p*(x) = p_pre(x) exp(r(x) / alpha) / Z (Gibbs' variational
// principle). From N samples of p_pre, self-normalised importance weights
//   w_i = exp(r_i / alpha) / sum_j exp(r_j / alpha)
// estimate expectations under p* (say the oracle's accuracy there), and
// sum_i w_i log(N w_i) its KL to p_pre. That estimate is at most log N: one near
// log N, or few effective samples 1 / sum_i w_i^2, says that the tilt is sharper
// than N samples resolve. So a reward model is judged by the optimum of the
// objective it defines, apart from how close an optimiser gets to it.
//
//   const auto tilt = metrics::tilted_optimum(r_hat, alpha);   // r_hat [N] at samples of p_pre
//   const double accuracy = (tilt.weights * correct).sum().item<double>();

#include <cmath>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::metrics {

struct TiltedOptimum {
  torch::Tensor weights;           // [N] in double, summing to 1
  torch::Tensor log_weights;       // [N] their logarithms, finite where a weight underflows to 0
  double kl = 0.0;                 // KL(p* || p_pre), nats (estimate, at most log N)
  double effective_samples = 0.0;  // 1 / sum w_i^2, between 1 and N
};

// The tilt of N samples of p_pre by their rewards r [N] at weight alpha > 0.
inline TiltedOptimum tilted_optimum(const torch::Tensor& reward, double alpha) {
  require(reward.defined() && reward.dim() == 1 && reward.size(0) >= 1,
          "tilted optimum: expected rewards [N] of N >= 1 samples, found ",
          reward.defined() ? reward.sizes() : torch::IntArrayRef{});
  require(std::isfinite(alpha) && alpha > 0.0, "tilted optimum: alpha must be finite and > 0, found ", alpha);
  const torch::Tensor r = reward.detach().to(torch::kCPU, torch::kDouble);
  require(torch::isfinite(r).all().item<bool>(), "tilted optimum: the rewards must be finite");
  const torch::Tensor log_w = torch::log_softmax(r / alpha, 0);
  TiltedOptimum tilt;
  tilt.log_weights = log_w;
  tilt.weights = log_w.exp();
  const double n = double(r.size(0));
  tilt.kl = (tilt.weights * (log_w + std::log(n))).sum().item<double>();
  tilt.effective_samples = 1.0 / tilt.weights.square().sum().item<double>();
  return tilt;
}

}  // namespace diffctl::metrics
