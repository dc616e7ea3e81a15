#pragma once
// A noise-prediction network as a DriftModel. Image diffusion networks (the UNet)
// predict the noise eps in x_s = alpha(s) x0 + sigma(s) eps; the SDE core wants the
// score, which is -eps / sigma(s). The network sees forward time s as
// `time_scale * s`: with the default 1000 a VP schedule on s in [0, 1] feeds the
// same range as the discrete step index 0..999 of DDPM-style code, so weights
// trained that way keep their meaning.

#include <concepts>
#include <cstdint>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/module_copy.hpp"
#include "diffctl/sde/schedules.hpp"

namespace diffctl::models {

struct EpsilonScoreOptions {
  double time_scale = 1000.0;
  // Classifier-free guidance: eps = (1 + w) eps(x, z) - w eps(x, null_label). A
  // network trained with label dropout has an extra class index for "no label";
  // w = 0 (the default) is the plain conditional model and needs no null label.
  double guidance = 0.0;
  int64_t null_label = -1;
};

// The network's input for forward time s: time_scale * s for every sample.
inline torch::Tensor network_time(double time_scale, double s, const torch::Tensor& x) {
  return torch::full({x.size(0)}, time_scale * s, x.options());
}

template <NoiseSchedule Schedule, EpsilonNetwork Net>
class EpsilonScore {
 public:
  EpsilonScore(Schedule schedule, Net net, EpsilonScoreOptions options = {})
      : schedule_(std::move(schedule)), net_(std::move(net)), options_(options) {
    require(options_.time_scale > 0.0, "EpsilonScore: time_scale must be > 0, found ", options_.time_scale);
    require(options_.guidance == 0.0 || options_.null_label >= 0, "EpsilonScore: guidance ", options_.guidance,
            " needs the network's null label (trained with label dropout)");
  }

  // The predicted noise at forward time s.
  torch::Tensor epsilon(double s, const torch::Tensor& x, const torch::Tensor& z) const {
    const torch::Tensor time = network_time(options_.time_scale, s, x);
    torch::Tensor eps = net_.ptr()->forward(x, time, z);
    if (options_.guidance != 0.0 && z.defined()) {
      const torch::Tensor unconditional = net_.ptr()->forward(x, time, torch::full_like(z, options_.null_label));
      eps = (1.0 + options_.guidance) * eps - options_.guidance * unconditional;
    }
    return eps;
  }

  // The score at generation time t (forward time s = T - t); undefined at s = 0,
  // where sigma vanishes, which the solvers never ask for.
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    const double s = sde::forward_time(schedule_, t);
    return sde::score_from_epsilon(schedule_, s, epsilon(s, x, z));
  }

  const Net& network() const { return net_; }
  // An independent copy (same weights, new tensors): the fine-tuned model and the
  // previous round's next to the pretrained one.
  EpsilonScore snapshot() const { return EpsilonScore(schedule_, models::clone_module(net_), options_); }
  const Schedule& schedule() const { return schedule_; }

 private:
  Schedule schedule_;
  Net net_;
  EpsilonScoreOptions options_;
};

// A drift inside a conditional pipeline that passes the prompts z on only when
// the model is conditional: an unconditional model fine-tuned so that control
// alone meets the prompts sees none (the reward and the control still do). A
// model trained with label dropout (classifier-free guidance) is unconditional
// under its null label: given null_label >= 0, an unconditional PromptedDrift
// passes that label for every sample instead of none.
template <class Drift>
class PromptedDrift {
 public:
  PromptedDrift(Drift drift, bool conditional, int64_t null_label = -1)
      : drift_(std::move(drift)), conditional_(conditional), null_label_(null_label) {}
  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    if (conditional_) return drift_.score(t, x, z);
    if (null_label_ < 0) return drift_.score(t, x, torch::Tensor{});
    return drift_.score(t, x, torch::full({x.size(0)}, null_label_, x.options().dtype(torch::kLong)));
  }
  PromptedDrift snapshot() const requires requires(const Drift& d) { d.snapshot(); }
  { return PromptedDrift(drift_.snapshot(), conditional_, null_label_); }
  decltype(auto) network() const requires requires(const Drift& d) { d.network(); }
  { return drift_.network(); }
  bool conditional() const { return conditional_; }

 private:
  Drift drift_;
  bool conditional_;
  int64_t null_label_;
};

}  // namespace diffctl::models
