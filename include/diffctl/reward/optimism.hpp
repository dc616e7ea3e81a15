#pragma once
// Optimism rules: how a bootstrap ensemble's member predictions [M, B] become the
// reward the fine-tuning objective maximises. Each is a type, chosen as a template
// parameter of the ensemble.
//
//   MeanPlusStd{c}   mean + c * std over members (default c = 1; the SEIKO bound)
//   MaxOfMembers     the largest member prediction (what SEIKO's code uses)
//   Thompson         one member drawn per trajectory (bootstrapped DQN)
//   Greedy           the mean, no bonus
//   FeatureUcb{c, l} mean + c * sqrt(phi^T (sum_D phi phi^T + l I)^-1 phi) on the
//                    penultimate features phi of a frozen network; the bonus
//                    shrinks as the dataset D grows
//
// All are differentiable in x (through the predictions and the features).

#include <cmath>
#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/reward/members.hpp"

namespace diffctl::reward {

// The ensemble mean [B] of predictions [M, B].
inline torch::Tensor member_mean(const torch::Tensor& predictions) { return predictions.mean(0); }

// The unbiased standard deviation (1 / (M - 1)) over members [B]. A floor of 1e-12
// under the variance keeps the gradient finite where the members agree exactly.
inline torch::Tensor member_std(const torch::Tensor& predictions) {
  return (predictions.var(0, /*unbiased=*/true) + 1e-12).sqrt();
}

namespace optimism {

struct MeanPlusStd {
  double c = 1.0;
  template <class Members>
  torch::Tensor operator()(const torch::Tensor& predictions, const torch::Tensor&, const Members&,
                           at::Generator&) const {
    return member_mean(predictions) + c * member_std(predictions);
  }
};

struct MaxOfMembers {
  template <class Members>
  torch::Tensor operator()(const torch::Tensor& predictions, const torch::Tensor&, const Members&,
                           at::Generator&) const {
    return predictions.amax(0);
  }
};

// Each sample of the batch (one trajectory) is judged by one member, drawn
// uniformly per call from the ensemble's generator.
struct Thompson {
  template <class Members>
  torch::Tensor operator()(const torch::Tensor& predictions, const torch::Tensor&, const Members&,
                           at::Generator& generator) const {
    const torch::Tensor drawn =
        torch::randint(predictions.size(0), {1, predictions.size(1)}, generator, torch::kLong).to(predictions.device());
    return predictions.gather(0, drawn).squeeze(0);
  }
};

struct Greedy {
  template <class Members>
  torch::Tensor operator()(const torch::Tensor& predictions, const torch::Tensor&, const Members&,
                           at::Generator&) const {
    return member_mean(predictions);
  }
};

class FeatureUcb {
 public:
  explicit FeatureUcb(double c = 1.0, double lambda = 1.0) : c_(c), lambda_(lambda) {
    require(std::isfinite(c) && c >= 0.0, "feature UCB: c must be >= 0, found ", c);
    require(std::isfinite(lambda) && lambda > 0.0, "feature UCB: lambda must be > 0, found ", lambda);
  }

  // Rebuilds the Gram matrix from the features [N, F] of the whole dataset. (It is
  // a function of the dataset, so a restart rebuilds it rather than storing it.)
  void observe(const torch::Tensor& features) {
    const torch::Tensor phi = features.detach().to(torch::kDouble);
    const torch::Tensor gram = phi.t().mm(phi) + lambda_ * torch::eye(phi.size(1), phi.options());
    cholesky_ = torch::linalg_cholesky(gram);
  }

  template <MembersWithFeatures Members>
  torch::Tensor operator()(const torch::Tensor& predictions, const torch::Tensor& x, const Members& members,
                           at::Generator&) const {
    return member_mean(predictions) + bonus(members.features(x)).to(predictions.dtype());
  }

  // c * sqrt(phi^T A^-1 phi) for features [B, F]; before any observe(), A = lambda I.
  torch::Tensor bonus(const torch::Tensor& features) const {
    const torch::Tensor phi = features.to(torch::kDouble);
    if (!cholesky_.defined()) return c_ * (phi.square().sum(1) / lambda_ + 1e-24).sqrt();
    require(phi.size(1) == cholesky_.size(0), "feature UCB: features have ", phi.size(1),
            " dimensions, the Gram matrix ", cholesky_.size(0));
    // |L^-1 phi|^2 = phi^T A^-1 phi with A = L L^T.
    const torch::Tensor solved = torch::linalg_solve_triangular(cholesky_.to(phi.device()), phi.t(), /*upper=*/false);
    return c_ * (solved.square().sum(0) + 1e-24).sqrt();
  }

 private:
  double c_, lambda_;
  torch::Tensor cholesky_;
};

}  // namespace optimism
}  // namespace diffctl::reward
