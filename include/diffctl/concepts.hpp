#pragma once
// The contracts of diffctl's components. Algorithms are templates over these
// concepts, so a wrong combination fails to compile with the concept's name.
//
// Time: generation time t runs over [0, T], t = 0 is noise and t = T is data; the
// forward (noising) process is indexed by s = T - t. Tensors are batch-first;
// conditions z are int64 class indices [B], or an undefined tensor when
// unconditional.

#include <concepts>
#include <span>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "diffctl/sde/transition.hpp"

namespace diffctl {

namespace io {
struct Checkpoint;
}
namespace reward {
class FeedbackDataset;
}

// The forward process dx = f(s) x ds + g(s) dW on s in [0, horizon()], with
// marginals x_s = alpha(s) x_0 + sigma(s) eps. Every argument is forward time s;
// alpha is dimensionless, sigma has the units of x, drift_coef(s) = f(s) is a rate
// (1/time) and diffusion(s) = g(s) has units of x / sqrt(time). The schedule's
// quantities obey g^2 = d(sigma^2)/ds - 2 f sigma^2 and f = d(log alpha)/ds.
template <class S>
concept NoiseSchedule = requires(const S& schedule, double s) {
  { schedule.horizon() } -> std::convertible_to<double>;
  { schedule.alpha(s) } -> std::convertible_to<double>;
  { schedule.sigma(s) } -> std::convertible_to<double>;
  { schedule.drift_coef(s) } -> std::convertible_to<double>;
  { schedule.diffusion(s) } -> std::convertible_to<double>;
};

// The model behind the reverse-time drift: the score grad_x log p_t(x | z) of the
// marginal at generation time t, same shape as x. Each solver derives its drift
// from it and the schedule (reverse SDE: -f x + g^2 score; probability flow:
// -f x + g^2 score / 2), so one model serves every solver.
template <class M>
concept DriftModel = requires(const M& model, double t, const torch::Tensor& x,
                              const torch::Tensor& z) {
  { model.score(t, x, z) } -> std::same_as<torch::Tensor>;
};

// One step of the reverse process from generation time t to t_next > t, as the
// Gaussian transition N(mean, noise_std^2 I) (see Transition).
template <class Solver, class Schedule, class Model>
concept SdeSolver =
    NoiseSchedule<Schedule> && DriftModel<Model> &&
    requires(const Solver& solver, const Schedule& schedule, const Model& model,
             double t, double t_next, const torch::Tensor& x, const torch::Tensor& z) {
      { solver.transition(schedule, model, t, t_next, x, z) } -> std::same_as<Transition>;
    };

// A drift model that can also take one time per sample, t [B]: many steps of a
// chain in one call of its network. Optional; fine-tuning batches its steps with
// it and otherwise calls score() step by step.
template <class M>
concept TimeBatchedDrift = DriftModel<M> && requires(const M& model, const torch::Tensor& t,
                                                     const torch::Tensor& x, const torch::Tensor& z) {
  { model.score_at(t, x, z) } -> std::same_as<torch::Tensor>;
};

// A drift model whose network can be fine-tuned: an independent copy (same
// weights, new tensors) and the module that holds its parameters
// (models::EpsilonScore, algorithms::PolicyScore).
template <class D>
concept TunableDrift = DriftModel<D> && requires(const D& drift) {
  { drift.snapshot() } -> std::same_as<D>;
  { drift.network().ptr()->parameters() } -> std::same_as<std::vector<torch::Tensor>>;
};

// A reward r(x, z) -> [B] of final states x and conditions z (undefined when
// unconditional): a classifier's probability, an analytic reward, an oracle.
template <class F>
concept RewardFunction = requires(const F& reward, const torch::Tensor& x, const torch::Tensor& z) {
  { reward(x, z) } -> std::convertible_to<torch::Tensor>;
};

// The control strategy nu: the impulse u = nu(t, x, z) applied to the state at a
// selected time t (x jumps by u), same shape as x and in the units of x.
template <class P>
concept ControlPolicy = requires(const P& policy, double t, const torch::Tensor& x,
                                 const torch::Tensor& z) {
  { policy.control(t, x, z) } -> std::same_as<torch::Tensor>;
};

// A control policy steered by the reward model: control(t, x, z, guidance) takes the
// displacement that the reward model's gradient proposes over the control's span
// (the fine-tuning algorithm computes it, see ContinuousSeiko) and returns the
// control in the same units, e.g. a gain times the guidance plus a learned
// correction (policy::Guided). guided() says whether it reads the guidance at all
// (a guidance gain fixed at zero does not), so that it is computed only when used.
template <class P>
concept GuidedControl = requires(const P& policy, double t, const torch::Tensor& x,
                                 const torch::Tensor& z, const torch::Tensor& guidance) {
  { policy.control(t, x, z, guidance) } -> std::same_as<torch::Tensor>;
  { policy.guided() } -> std::convertible_to<bool>;
};

// A policy that fine-tuning can train: its parameters, an independent copy (the
// previous round's policy) and its entries in a round's checkpoint.
template <class P>
concept TrainablePolicy = (ControlPolicy<P> || GuidedControl<P>) &&
                          requires(P& policy, const P& const_policy, io::Checkpoint& checkpoint,
                                   const std::string& prefix) {
                            { const_policy.parameters() } -> std::same_as<std::vector<torch::Tensor>>;
                            { const_policy.snapshot() } -> std::same_as<P>;
                            policy.add_to(checkpoint, prefix);
                          };

// A control policy whose control is held (policy::Held): set at a control time
// t_k, it is added to the drift until the next measured time instead of making
// the state jump.
template <class P>
concept HeldControl = (ControlPolicy<P> || GuidedControl<P>) && requires { requires P::holds_control; };

// The measurement selection strategy mu: from the generation times of a
// hallucinated trajectory [R] and the reward model's uncertainty there [R, B],
// a bool mask [R, B] of the (time, sample) pairs that receive a control.
template <class M>
concept MeasurementSelection = requires(const M& mss, std::span<const double> times,
                                        const torch::Tensor& uncertainty) {
  { mss.select(times, uncertainty) } -> std::same_as<torch::Tensor>;
};

// A reward model with uncertainty, fitted to labelled feedback of its own dataset
// type: mean(x, z) is the estimate r_hat [B], uncertainty(x, z) the
// standard-deviation-like spread g_hat [B] >= 0 (what measurement selection reads),
// and optimistic(x, z) the reward fine-tuning maximises (r_hat plus the model's
// exploration bonus), all in the reward's units.
template <class R>
concept UncertainReward =
    requires(R& reward, const typename R::dataset_type& data, const torch::Tensor& x,
             const torch::Tensor& z) {
      reward.fit(data);
      { reward.mean(x, z) } -> std::same_as<torch::Tensor>;
      { reward.uncertainty(x, z) } -> std::same_as<torch::Tensor>;
      { reward.optimistic(x, z) } -> std::same_as<torch::Tensor>;
    };

// Where a round's labels come from. record(data, x, z, round) asks about the B
// samples x [B, ...] under prompts z and stores them in the feedback dataset (with
// their labels, or as pending rows for a labeller outside the process); wait(data,
// round) returns once every row asked in that round has its label (or throws);
// ground_truth(x, z) is the noiseless reward [B] for measuring samples, not a query
// (NaN where it is unknown); queries() counts the labels asked so far.
template <class O>
concept FeedbackOracle = requires(O& oracle, const O& const_oracle, reward::FeedbackDataset& data,
                                  const torch::Tensor& x, const torch::Tensor& z, int64_t round) {
  oracle.record(data, x, z, round);
  oracle.wait(data, round);
  { const_oracle.ground_truth(x, z) } -> std::same_as<torch::Tensor>;
  { const_oracle.queries() } -> std::convertible_to<int64_t>;
};

// The KL regularizer of the fine-tuning objective: the penalty [B], in nats, that
// one step of the fine-tuned process pays for departing from the same step of the
// pretrained model and of the previous round's model.
template <class R>
concept Regularizer = requires(const R& regularizer, const Transition& tuned,
                               const Transition& pretrained, const Transition& previous) {
  { regularizer.penalty(tuned, pretrained, previous) } -> std::same_as<torch::Tensor>;
};

}  // namespace diffctl
