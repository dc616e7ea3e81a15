#pragma once
// A tuned drift's difference from a reference drift, scaled: score = reference +
// scale * (tuned - reference). When the tuned model is the reference tilted by
// exp(r / alpha) (what SEIKO's objective and TiltedScoreMatching aim at), its
// score differs from the reference's by grad_x log h_t, h_t = E_ref[exp(r / alpha) |
// x_t]; the scaled difference is grad_x log h_t^scale, the guidance that
// classifier-free guidance applies between a conditional and an unconditional
// mode. Scale 1 is the tuned model, 0 the reference; above 1 it sharpens the
// tilt through the network's own generalisation instead of through fewer
// effective samples of a sharper objective (the control, and with it the
// path KL per step, grows as scale^2 where the difference is coherent).
//
//   const models::GuidedDrift drift(tuned, pretrained, 1.5);

#include <cmath>
#include <utility>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"

namespace diffctl::models {

template <DriftModel Tuned, DriftModel Reference>
class GuidedDrift {
 public:
  GuidedDrift(Tuned tuned, Reference reference, double scale)
      : tuned_(std::move(tuned)), reference_(std::move(reference)), scale_(scale) {
    require(std::isfinite(scale) && scale >= 0.0, "GuidedDrift: the scale must be finite and >= 0, found ", scale);
  }
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    if (scale_ == 1.0) return tuned_.score(t, x, z);  // the tuned model itself, bit for bit and one network pass
    const torch::Tensor reference = reference_.score(t, x, z);
    if (scale_ == 0.0) return reference;
    return reference + scale_ * (tuned_.score(t, x, z) - reference);
  }

 private:
  Tuned tuned_;
  Reference reference_;
  double scale_;
};

}  // namespace diffctl::models
