#pragma once
// The contracts of diffctl's components. Algorithms are templates over these
// concepts, so a wrong combination fails to compile with the concept's name.
//
// Time: generation time t runs over [0, T], t = 0 is noise and t = T is data; the
// forward (noising) process is indexed by s = T - t. Tensors are batch-first;
// conditions z are int64 class indices [B], or an undefined tensor when
// unconditional.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/sde/transition.hpp"

namespace diffctl {

// The types the contracts mention; their headers define them.
struct TrainOutcome;
namespace io {
struct Checkpoint;
}
namespace reward {
class FeedbackDataset;
struct MemberFitOptions;
}  // namespace reward
namespace distributed {
class Group;
}
namespace models {
class TimeStateMlp;
}
namespace algorithms {
struct QLearningOptions;
struct EpisodeNoise;
struct EpisodeStats;
template <class Values, class Total>
struct EpisodeRollout;
template <class Values>
struct EpisodeTerms;
}  // namespace algorithms

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
concept DriftModel = requires(const M& model, double t, const torch::Tensor& x, const torch::Tensor& z) {
  { model.score(t, x, z) } -> std::same_as<torch::Tensor>;
};

// One step of the reverse process from generation time t to t_next > t, as the
// Gaussian transition N(mean, noise_std^2 I) (see Transition).
template <class Solver, class Schedule, class Model>
concept SdeSolver = NoiseSchedule<Schedule> && DriftModel<Model> &&
    requires(const Solver& solver, const Schedule& schedule, const Model& model, double t, double t_next,
             const torch::Tensor& x, const torch::Tensor& z) {
  { solver.transition(schedule, model, t, t_next, x, z) } -> std::same_as<Transition>;
};

// A drift model that can also take one time per sample, t [B]: many steps of a
// chain in one call of its network. Optional; fine-tuning batches its steps with
// it and otherwise calls score() step by step.
template <class M>
concept TimeBatchedDrift = DriftModel<M> &&
    requires(const M& model, const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& z) {
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
concept ControlPolicy = requires(const P& policy, double t, const torch::Tensor& x, const torch::Tensor& z) {
  { policy.control(t, x, z) } -> std::same_as<torch::Tensor>;
};

// A control policy steered by the reward model: control(t, x, z, guidance) takes the
// displacement that the reward model's gradient proposes over the control's span
// (the fine-tuning algorithm computes it, see ContinuousSeiko) and returns the
// control in the same units, e.g. a gain times the guidance plus a learned
// correction (policy::Guided). guided() says whether it reads the guidance at all
// (a guidance gain fixed at zero does not), so that it is computed only when used.
template <class P>
concept GuidedControl = requires(const P& policy, double t, const torch::Tensor& x, const torch::Tensor& z,
                                 const torch::Tensor& guidance) {
  { policy.control(t, x, z, guidance) } -> std::same_as<torch::Tensor>;
  { policy.guided() } -> std::convertible_to<bool>;
};

// A policy that fine-tuning can train: its parameters, an independent copy (the
// previous round's policy) and its entries in a round's checkpoint.
template <class P>
concept TrainablePolicy = (ControlPolicy<P> || GuidedControl<P>)&&requires(P& policy, const P& const_policy,
                                                                           io::Checkpoint& checkpoint,
                                                                           const std::string& prefix) {
  { const_policy.parameters() } -> std::same_as<std::vector<torch::Tensor>>;
  { const_policy.snapshot() } -> std::same_as<P>;
  policy.add_to(checkpoint, prefix);
};

// A control policy whose control is held (policy::Held): set at a control time
// t_k, it is added to the drift until the next measured time instead of making
// the state jump.
template <class P>
concept HeldControl = (ControlPolicy<P> || GuidedControl<P>)&&requires {
  requires P::holds_control;
};

// The measurement selection strategy mu: from the generation times of a
// hallucinated trajectory [R] and the reward model's uncertainty there [R, B],
// a bool mask [R, B] of the (time, sample) pairs that receive a control.
template <class M>
concept MeasurementSelection = requires(const M& mss, std::span<const double> times, const torch::Tensor& uncertainty) {
  { mss.select(times, uncertainty) } -> std::same_as<torch::Tensor>;
};

// A reward model with uncertainty, fitted to labelled feedback: fit(D) trains it
// on the feedback dataset, refresh(D) rebuilds what it derives from D after its
// weights were restored (a checkpoint); mean(x, z) is the estimate r_hat [B],
// uncertainty(x, z) the standard-deviation-like spread g_hat [B] >= 0 (what
// measurement selection reads), optimistic(x, z) the reward fine-tuning maximises
// (r_hat plus the model's exploration bonus), estimate(x, z) all three from one
// pass (.mean, .uncertainty, .optimistic), all in the reward's units; add_to puts
// its trained state into a round's checkpoint.
template <class R>
concept UncertainReward = requires(R& reward, const reward::FeedbackDataset& data, const torch::Tensor& x,
                                   const torch::Tensor& z, io::Checkpoint& checkpoint) {
  reward.fit(data);
  reward.refresh(data);
  { reward.mean(x, z) } -> std::same_as<torch::Tensor>;
  { reward.uncertainty(x, z) } -> std::same_as<torch::Tensor>;
  { reward.optimistic(x, z) } -> std::same_as<torch::Tensor>;
  { reward.estimate(x, z).mean } -> std::convertible_to<torch::Tensor>;
  { reward.estimate(x, z).uncertainty } -> std::convertible_to<torch::Tensor>;
  { reward.estimate(x, z).optimistic } -> std::convertible_to<torch::Tensor>;
  reward.add_to(checkpoint);
};

// A reward model of the noisy state that is told the time: mean(t, x_t, z) and
// uncertainty(t, x_t, z) estimate E[r(x_T, z) | x_t] at generation time t and its
// spread. ContinuousSeiko (SeikoOptions::reward_of_noisy_state) calls them where the
// reward model has them, and mean(x_t, z) otherwise (a noise-aware image classifier
// reads the noise level from x_t itself).
template <class R>
concept TimeAwareReward = UncertainReward<R> &&
    requires(R& reward, double t, const torch::Tensor& x, const torch::Tensor& z) {
  { reward.mean(t, x, z) } -> std::same_as<torch::Tensor>;
  { reward.uncertainty(t, x, z) } -> std::same_as<torch::Tensor>;
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
concept Regularizer = requires(const R& regularizer, const Transition& tuned, const Transition& pretrained,
                               const Transition& previous) {
  { regularizer.penalty(tuned, pretrained, previous) } -> std::same_as<torch::Tensor>;
};

// What the integrator asks at every grid point k (time t, state x(t-)): the jump to
// apply there, or an undefined tensor for none (sde::integrate). Fixed impulses are
// one source; a feedback control at the times a selection strategy picked is another.
template <class F>
concept ImpulseSource = requires(const F& source, std::size_t k, double t, const torch::Tensor& x) {
  { source(k, t, x) } -> std::convertible_to<torch::Tensor>;
};

// A module holder (TORCH_MODULE) whose module maps (x [B, ...], time [B] float,
// labels [B] int64 or undefined) to a tensor shaped like x: the noise predictor
// that models::EpsilonScore turns into a score and DenoisingTrainer trains.
template <class Net>
concept EpsilonNetwork = std::derived_from<typename Net::ContainedType, torch::nn::Module> &&
    requires(const Net& net, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y) {
  { net.ptr()->forward(x, t, y) } -> std::convertible_to<torch::Tensor>;
};

// The members of a bootstrap ensemble (reward::BootstrapEnsemble), as one type that
// predicts for all M at once. predict: x [B, ...], z [B] -> [M, B]; device: where
// the members compute; fit: trains member m on D with sample weights weights[m] [N]
// (a member whose weights are all zero is left as it is) and returns each member's
// loss at its last step [M]; add_to: the trained state, for checkpoints.
template <class S>
concept EnsembleMembers = requires(S& members, const S& const_members, const reward::FeedbackDataset& data,
                                   const torch::Tensor& tensor, const reward::MemberFitOptions& options,
                                   at::Generator& generator, io::Checkpoint& checkpoint, const std::string& prefix) {
  { const_members.size() } -> std::convertible_to<int64_t>;
  { const_members.device() } -> std::same_as<torch::Device>;
  { const_members.predict(tensor, tensor) } -> std::same_as<torch::Tensor>;
  { members.fit(data, tensor, options, generator) } -> std::same_as<torch::Tensor>;
  members.add_to(checkpoint, prefix);
};

// Members that a group of processes can fit between them: each rank fits the
// members it owns, then every member's trained state goes from its owner to all
// (broadcast_member(m, owner, group)). Optional: other members are fitted whole on
// every rank.
template <class S>
concept SpreadableMembers = EnsembleMembers<S> && requires(S& members, const distributed::Group& group) {
  members.broadcast_member(int64_t{0}, 0, group);
};

// Members that also expose the penultimate features phi(x) [B, F] of a frozen
// network (for the feature-covariance UCB bonus).
template <class S>
concept MembersWithFeatures = EnsembleMembers<S> && requires(const S& members, const torch::Tensor& x) {
  { members.features(x) } -> std::same_as<torch::Tensor>;
};

// Members that predict for several conditions from one reading of x:
// predict_each(x [B, ...], conditions [P]) -> [M, B, P], column p what
// predict(x, conditions[p] for every sample) gives. Optional: the ensemble asks
// other members once per condition.
template <class S>
concept MembersForEachCondition = EnsembleMembers<S> && requires(const S& members, const torch::Tensor& tensor) {
  { members.predict_each(tensor, tensor) } -> std::same_as<torch::Tensor>;
};

// How an ensemble turns its members' predictions [M, B] of x into the reward
// fine-tuning maximises [B] (reward::optimism): it may read the members (their
// features) and draw from the ensemble's generator (Thompson sampling).
template <class O, class Members>
concept OptimismRule = requires(O& rule, const torch::Tensor& predictions, const torch::Tensor& x,
                                const Members& members, at::Generator& generator) {
  { rule(predictions, x, members, generator) } -> std::convertible_to<torch::Tensor>;
};

// How each member of an ensemble weighs the N samples of D: weights(M, N, seed,
// generator) -> [M, N] (reward::BootstrapResample, reward::BernoulliMasks).
template <class R>
concept ResamplingScheme = requires(const R& scheme, int64_t members, int64_t n, std::uint64_t seed,
                                    at::Generator& generator) {
  { scheme.weights(members, n, seed, generator) } -> std::same_as<torch::Tensor>;
};

// What algorithms::QLearning needs of a backend for its episodes' Problem
// (algorithms::EpisodeProblem): its networks built from (state_dim, classes,
// options); simulate(problem, noise), the episode's trajectories with their
// running and terminal rewards; terms(), J and log pi per step and sample;
// update(v, w), an optimiser step on the gradient of sum(v J) + sum(w log pi);
// totals over processes; its weights as TimeStateMlp modules (sampling,
// checkpoints) and back; the networks as it holds them; its optimiser's
// learning rate (schedules). Values holds per-(step, sample) numbers, Total a sum.
template <class B, class Problem>
concept QLearningBackend = std::constructible_from<B, int64_t, int64_t, const algorithms::QLearningOptions&> &&
    requires(B& backend, const B& const_backend, const Problem& problem, const algorithms::EpisodeNoise& noise,
             const typename B::Values& weights, const std::vector<typename B::Total>& parts,
             const models::TimeStateMlp& network) {
  {
    backend.simulate(problem, noise)
    } -> std::same_as<algorithms::EpisodeRollout<typename B::Values, typename B::Total>>;
  { backend.terms() } -> std::same_as<algorithms::EpisodeTerms<typename B::Values>>;
  backend.update(weights, weights);
  { const_backend.totals(parts) } -> std::same_as<std::vector<double>>;
  { const_backend.networks() } -> std::same_as<std::pair<models::TimeStateMlp, models::TimeStateMlp>>;
  backend.assign(network, network);
  backend.set_learning_rate(1e-3);
  backend.policy();
  backend.value();
};

// A step's statistics with their figures by name (algorithms::EpisodeStats,
// FineTuneStats, SeikoRound), for progress lines and logs (callbacks.hpp).
template <class S>
concept NamedFields = requires(const S& stats) {
  { stats.fields() } -> std::same_as<std::vector<std::pair<std::string, double>>>;
};

// A callback of train() (callbacks.hpp) for steps whose statistics are Stats: it
// has at least one of begin(total steps), step(step, stats) and end(outcome).
template <class C, class Stats>
concept TrainingCallback = requires(C& callback, int64_t step, const Stats& stats) {
  callback.step(step, stats);
}
|| requires(C& callback, int64_t total) { callback.begin(total); }
|| requires(C& callback, const TrainOutcome& outcome) { callback.end(outcome); };

}  // namespace diffctl
