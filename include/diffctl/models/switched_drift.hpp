#pragma once
// One drift until a generation time, another after: a fine-tuned model that
// steers only while the noise is high (where a prompt's class is decided) and then
// hands over to the pretrained one, so that the path KL to the pretrained model
// accrues only before the switch. A control applied on [0, until) alone is the
// simplest choice of control times.
//
//   const models::SwitchedDrift drift(tuned, pretrained, 0.5 * schedule.horizon());

#include <cmath>
#include <utility>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"

namespace diffctl::models {

template <DriftModel Early, DriftModel Late>
class SwitchedDrift {
 public:
  SwitchedDrift(Early early, Late late, double until)
      : early_(std::move(early)), late_(std::move(late)), until_(until) {
    require(std::isfinite(until), "SwitchedDrift: the switch time must be finite, found ", until);
  }
  // A solver's step from t uses the drift of t.
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    return t < until_ ? early_.score(t, x, z) : late_.score(t, x, z);
  }

 private:
  Early early_;
  Late late_;
  double until_;
};

}  // namespace diffctl::models
