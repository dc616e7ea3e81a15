#pragma once
// Continuous-time SEIKO: online fine-tuning of a pretrained diffusion model with a
// feedback budget, controls applied only where the reward model is unsure.
//
// Round i = 1..K:
//   1. prompts z, x(0) ~ d^(i-1) = N(m, e^{2l} I);
//   2. hallucinate: run the sampler of round i-1 without control, recording x_t and
//      the Tweedie estimate x0_hat(x_t) on the measurement grid, and evaluate the
//      ensemble's uncertainty g_hat(x0_hat(x_t), z) there (or g_hat(x_t, z), for a
//      reward model of the noisy state);
//   3. the measurement selection strategy (Mss) picks the control times t_k;
//   4. run the controlled sampler: impulses u_k = nu(t_k, x(t_k), z) at those times,
//      or (HeldControl) the drift u_k / D_k until the next measured time; a
//      GuidedControl policy also gets the reward model's guidance there, the
//      displacement D_k g^2 grad_x r_hat(x0_hat(x(t_k)), z) (see guidance());
//   5. ask the oracle about x_T and store the labels (FeedbackDataset: on disk);
//   6. refit the bootstrap ensemble on all labels;
//   7. maximise E[optimistic reward(x_T, z)] - alpha KL(p || p_pre) - beta KL(p || p^(i-1))
//      over the policy's parameters, the drift's (all or a named subset) and the
//      initial distribution's m and l, by backpropagation through the controlled
//      sampler (truncated to the last steps if asked) with AdamW and gradient
//      clipping. Control times are re-selected for every batch (steps 1-3 with the
//      current model and ensemble).
// Every round ends with a checkpoint (policy, drift, initial distribution, the
// previous round's copies, ensemble, generator); a resumed run asks the oracle
// only for labels its dataset does not yet hold.
//
// Variants are types: the Mss (mss::EveryStep is discrete SEIKO, mss::TopK the
// continuous default), the reward ensemble's optimism rule (mean + std, max,
// Thompson, feature UCB, greedy), the policy and the solver. A non-adaptive run
// is one round with the whole budget (SeikoOptions::queries_per_round = {total}).
//
// Data parallel over a distributed::Group: every batch of trajectories (a
// sampling chunk, an optimisation batch) is drawn whole from the shared generator
// (prompts, initial states, every step's noise) and each rank integrates its
// shard of the rows; samples are gathered, rank 0 asks the oracle and stores the
// labels once, the others read them from the store (or receive them, for a
// dataset in memory), every rank refits the ensemble on the same data, and the
// objective's gradients are summed over ranks. So N processes reproduce one (up
// to the order of float sums), except for the Thompson optimism rule, whose
// draws each rank makes for its own rows. Rank 0 writes the checkpoints.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/algorithms/gradient_clipping.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/io/progress.hpp"
#include "diffctl/mss/selection.hpp"
#include "diffctl/objective/path_kl.hpp"
#include "diffctl/reward/feedback_dataset.hpp"
#include "diffctl/reward/oracle.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/control_schedule.hpp"
#include "diffctl/sde/initial_distribution.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/time_grid.hpp"

namespace diffctl::algorithms {

// Thrown when a round's optimisation diverges (its objective became NaN or
// infinite): the round's result is not usable, and a caller that checkpoints after
// each round still has the previous round's.
class Diverged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SeikoOptions {
  // Oracle queries of each round; the number of rounds is its length.
  std::vector<int64_t> queries_per_round{64, 128, 256, 512};
  int64_t batch = 64;            // trajectories per optimisation step
  int64_t optimize_steps = 100;  // optimisation steps per round
  double learning_rate = 1e-3;   // AdamW, fresh moments each round
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  // Record (and allow control at) every measure_every-th grid point before T.
  int64_t measure_every = 1;
  // Backpropagate through the last backprop_steps steps only (bounded memory).
  std::optional<std::size_t> backprop_steps = std::nullopt;
  bool learn_initial = true;  // tune the initial distribution's mean and log-std
  // Drift parameters to tune, by name prefix ("" tunes them all); empty: none.
  std::vector<std::string> tune_drift{};
  int64_t classes = 0;  // prompts z uniform over [0, classes); 0: unconditional
  // c^2 of the Gaussian prior behind a GuidedControl's guidance (see guidance()):
  // the data's variance per coordinate, about 1 for data scaled to unit variance.
  double guidance_prior_variance = 1.0;
  // The reward model reads the noisy state x_t itself (its members trained on draws
  // of the forward process: r_hat(x_t, z) estimates E[r(x_T, z) | x_t]) instead of
  // the Tweedie estimate x0_hat(x_t): the Mss's uncertainty is read at x_t, and the
  // guidance is r_hat's own gradient there, with no Jacobian of x0_hat to
  // approximate (classifier guidance with a noise-aware classifier).
  bool reward_of_noisy_state = false;
  int64_t eval_samples = 256;  // samples measured at the end of each round
  int64_t chunk = 256;         // samples per sampling call / oracle query
  std::uint64_t seed = 0;
  bool show_progress = true;
};

// What a round reports (rounds.csv of the demo).
struct SeikoRound {
  int64_t round = 0;
  int64_t queries_total = 0;
  double oracle_reward_mean = 0.0;    // noiseless r(x_T, z) of fresh samples (not queries)
  double ensemble_reward_mean = 0.0;  // r_hat on the same samples
  double uncertainty_mean = 0.0;      // g_hat on the same samples
  double kl_to_pretrained = 0.0;      // path KL + initial KL, nats per sample
  double control_points_mean = 0.0;   // controls per trajectory
  double objective = 0.0;             // the last optimisation step's objective
  double seconds = 0.0;
  // By name (after the round), for progress lines and logs (callbacks.hpp).
  std::vector<std::pair<std::string, double>> fields() const {
    return {{"queries_total", double(queries_total)},
            {"oracle_reward_mean", oracle_reward_mean},
            {"ensemble_reward_mean", ensemble_reward_mean},
            {"uncertainty_mean", uncertainty_mean},
            {"kl_to_pretrained", kl_to_pretrained},
            {"control_points_mean", control_points_mean},
            {"objective", objective},
            {"seconds", seconds}};
  }
};

// Samples of the tuned model with their measurements.
struct SeikoSamples {
  torch::Tensor x;                 // x_T [B, ...]
  torch::Tensor z;                 // prompts [B] or undefined
  torch::Tensor kl_to_pretrained;  // [B] path + initial KL (when asked)
  torch::Tensor controls;          // [B] control points per sample
};

template <NoiseSchedule Schedule, DriftModel Drift, TrainablePolicy Policy, MeasurementSelection Mss, class Solver,
          UncertainReward Reward, Regularizer Reg = objective::PathKl>
  requires SdeSolver<Solver, Schedule, Drift>
class ContinuousSeiko {
 public:
  // grid: the sampler's time grid; sample_shape: one sample's shape ([d] or [C, H, W]).
  ContinuousSeiko(Schedule schedule, sde::TimeGrid grid, std::vector<int64_t> sample_shape, Drift pretrained,
                  Policy policy, Reward reward, SeikoOptions options = {}, Mss mss = Mss(), Solver solver = Solver(),
                  Reg regularizer = Reg(), torch::Device device = torch::kCPU, distributed::Group group = {})
      : schedule_(std::move(schedule)),
        grid_(std::move(grid)),
        sample_shape_(std::move(sample_shape)),
        pretrained_(std::move(pretrained)),
        tuned_(copy_of(pretrained_)),
        previous_(copy_of(pretrained_)),
        policy_(std::move(policy)),
        previous_policy_(frozen(policy_.snapshot())),
        reward_(std::move(reward)),
        options_(std::move(options)),
        mss_(std::move(mss)),
        solver_(std::move(solver)),
        regularizer_(std::move(regularizer)),
        device_(device),
        group_(std::move(group)),
        generator_(make_generator(options_.seed)),
        initial_(sde::LearnedGaussianInitial::prior_of(schedule_, sample_shape_, device_)) {
    require(!options_.queries_per_round.empty(), "SEIKO: queries_per_round needs at least one round");
    for (const int64_t q : options_.queries_per_round)
      require(q >= 1, "SEIKO: every round needs >= 1 query, found ", q);
    require(options_.batch >= 1 && options_.optimize_steps >= 0 && options_.learning_rate > 0.0 &&
                options_.max_grad_norm > 0.0 && options_.measure_every >= 1 && options_.classes >= 0 &&
                options_.eval_samples >= 1 && options_.chunk >= 1 && options_.guidance_prior_variance > 0.0,
            "SEIKO: options need batch, eval_samples, chunk, measure_every >= 1, optimize_steps >= 0, "
            "learning_rate, max_grad_norm and guidance_prior_variance > 0, classes >= 0");
    require(grid_.steps() >= 1 && std::abs(grid_.horizon() - schedule_.horizon()) <= 1e-12 * schedule_.horizon(),
            "SEIKO: the grid must span the schedule's horizon T = ", schedule_.horizon());
    // Control times: measurement grid points that precede a noisy step.
    for (std::size_t k = 0; k < grid_.steps(); k += static_cast<std::size_t>(options_.measure_every))
      measure_index_.push_back(k);
    for (const std::size_t k : measure_index_) measure_times_.push_back(grid_[k]);
    if constexpr (TunableDrift<Drift>) {
      for (auto& p : pretrained_.network()->parameters()) p.requires_grad_(false);
      for (auto& p : previous_.network()->parameters()) p.requires_grad_(false);
      for (auto& item : tuned_.network()->named_parameters()) {
        const bool tune = std::any_of(options_.tune_drift.begin(), options_.tune_drift.end(),
                                      [&](const std::string& prefix) { return item.key().starts_with(prefix); });
        item.value().requires_grad_(tune);
        if (tune) drift_parameters_.push_back(item.value());
      }
      require(options_.tune_drift.empty() || !drift_parameters_.empty(),
              "SEIKO: no drift parameter starts with the prefixes of tune_drift");
    } else {
      require(options_.tune_drift.empty(), "SEIKO: tune_drift needs a drift model with a network (TunableDrift)");
    }
    // Every rank starts from rank 0's policy; rank 0 alone shows progress.
    group_.broadcast_values(policy_.parameters());
    group_.broadcast_values(previous_policy_.parameters());
    if (!group_.is_main()) options_.show_progress = false;
  }

  // Runs round rounds_done() + 1: feedback, ensemble refit, optimisation.
  template <FeedbackOracle Oracle>
  SeikoRound run_round(Oracle& oracle, reward::FeedbackDataset& feedback) {
    require(rounds_done_ < rounds(), "SEIKO: all ", rounds(), " rounds are done");
    const auto start = std::chrono::steady_clock::now();
    const int64_t round = rounds_done_ + 1;
    collect_feedback(oracle, feedback, round);
    reward_.fit(feedback);
    const double objective = optimize(round);
    // The tuned model becomes the previous round's.
    previous_policy_ = frozen(policy_.snapshot());
    if constexpr (TunableDrift<Drift>) {
      previous_ = tuned_.snapshot();
      for (auto& p : previous_.network()->parameters()) p.requires_grad_(false);
    }
    initial_.end_round();
    rounds_done_ = round;

    SeikoRound report = evaluate(oracle);
    report.round = round;
    report.objective = objective;
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

  // Measures the current model on eval_samples fresh samples (round 0: before any),
  // the prompts spread evenly over the classes; last_evaluation() keeps them.
  template <FeedbackOracle Oracle>
  SeikoRound evaluate(Oracle& oracle) {
    torch::NoGradGuard no_grad;
    SeikoRound report;
    report.round = rounds_done_;
    report.queries_total = oracle.queries();
    const int64_t n = options_.eval_samples;
    const torch::Tensor prompts =
        options_.classes > 0 ? torch::arange(n, torch::kLong) % options_.classes : torch::Tensor{};
    last_evaluation_ = sample(n, /*with_kl=*/true, prompts);
    const SeikoSamples& samples = last_evaluation_;
    const auto estimate = reward_.estimate(samples.x, samples.z);
    report.oracle_reward_mean = oracle.ground_truth(samples.x, samples.z).mean().template item<double>();
    report.ensemble_reward_mean = estimate.mean.mean().template item<double>();
    report.uncertainty_mean = estimate.uncertainty.mean().template item<double>();
    report.kl_to_pretrained = samples.kl_to_pretrained.mean().template item<double>();
    report.control_points_mean = samples.controls.mean().template item<double>();
    return report;
  }

  // n samples of the tuned model (controls where the Mss puts them), without
  // gradients, for prompts drawn uniformly or the given ones [n]; with_kl adds
  // each sample's KL to the pretrained model.
  SeikoSamples sample(int64_t n, bool with_kl = false, const torch::Tensor& prompts = {}) {
    require(!prompts.defined() || (options_.classes > 0 && prompts.dim() == 1 && prompts.size(0) == n),
            "SEIKO: prompts must be [", n, "] class indices of a conditional run");
    torch::NoGradGuard no_grad;
    std::vector<SeikoSamples> parts;
    for (int64_t begin = 0; begin < n; begin += options_.chunk) {
      const int64_t count = std::min(options_.chunk, n - begin);
      const torch::Tensor z_all = prompts.defined() ? prompts.narrow(0, begin, count).to(device_) : draw_prompts(count);
      const torch::Tensor x_all = initial_.draw(count, generator_);
      const torch::Tensor z = group_.local_rows(z_all), x_init = group_.local_rows(x_all);
      const torch::Tensor mask = select_controls(x_init, z, count);
      auto run = controlled_run(x_init, z, mask, false, with_kl, count);
      const int64_t rows = x_init.size(0);
      parts.push_back({group_.all_gather_rows(run.x), z_all,
                       with_kl ? group_.all_gather_rows(run.kl_pretrained + initial_.kl_to_prior().expand({rows}))
                               : torch::Tensor{},
                       group_.all_gather_rows(mask.sum(0).to(torch::kFloat))});
    }
    const auto cat = [&](auto member) {
      std::vector<torch::Tensor> all;
      for (const auto& p : parts)
        if ((p.*member).defined()) all.push_back(p.*member);
      return all.empty() ? torch::Tensor{} : torch::cat(all);
    };
    return {cat(&SeikoSamples::x), cat(&SeikoSamples::z), cat(&SeikoSamples::kl_to_pretrained),
            cat(&SeikoSamples::controls)};
  }

  // A round's checkpoint: everything a resumed run needs besides the dataset.
  void save(const std::filesystem::path& path) {
    if (group_.is_main()) {
      io::Checkpoint checkpoint = checkpoint_entries();
      checkpoint.step = rounds_done_;
      io::save_checkpoint(path, checkpoint);
    }
    group_.barrier();  // every rank may read it from here on
  }

  // Restores a checkpoint written by save() and rebuilds what the ensemble derives
  // from the dataset; returns the rounds done.
  int64_t load(const std::filesystem::path& path, const reward::FeedbackDataset& feedback) {
    io::Checkpoint checkpoint = checkpoint_entries();
    rounds_done_ = io::load_checkpoint(path, checkpoint);
    require(rounds_done_ >= 0 && rounds_done_ <= rounds(), "SEIKO: checkpoint ", path.string(), " is at round ",
            rounds_done_, " of a run with ", rounds(), " rounds");
    if (!feedback.empty()) reward_.refresh(feedback);
    return rounds_done_;
  }

  // The number of samples evaluate() measures from now on.
  void set_eval_samples(int64_t n) {
    require(n >= 1, "SEIKO: eval_samples must be >= 1, found ", n);
    options_.eval_samples = n;
  }
  // The samples of the last evaluate() (or run_round()).
  const SeikoSamples& last_evaluation() const { return last_evaluation_; }
  int64_t rounds() const { return static_cast<int64_t>(options_.queries_per_round.size()); }
  int64_t rounds_done() const { return rounds_done_; }
  Policy& policy() { return policy_; }
  Reward& reward() { return reward_; }
  Drift& tuned_drift() { return tuned_; }
  const sde::LearnedGaussianInitial& initial() const { return initial_; }
  const SeikoOptions& options() const { return options_; }
  at::Generator& generator() { return generator_; }
  const distributed::Group& group() const { return group_; }

 private:
  struct Run {
    torch::Tensor x;              // x_T
    torch::Tensor penalty;        // [B] the regularizer's path penalty
    torch::Tensor kl_pretrained;  // [B] path KL to the pretrained model (when asked)
  };

  static Policy frozen(Policy policy) {
    for (auto& p : policy.parameters()) p.requires_grad_(false);
    return policy;
  }

  static Drift copy_of(const Drift& drift) {
    if constexpr (TunableDrift<Drift>) return drift.snapshot();
    else return drift;
  }

  template <FeedbackOracle Oracle>
  void collect_feedback(Oracle& oracle, reward::FeedbackDataset& feedback, int64_t round) {
    const int64_t wanted = options_.queries_per_round[static_cast<std::size_t>(round - 1)];
    // A run stopped mid-round kept the rows it asked about: only the rest are asked.
    reward::RoundQueries queries(feedback, round);
    const int64_t labelled_before = feedback.size();
    io::Progress progress("seiko round " + std::to_string(round) + " feedback", wanted);
    for (int64_t have = 0; have < wanted;) {
      const int64_t count = std::min(options_.chunk, wanted - have);
      const SeikoSamples samples = sample(count);
      if (group_.is_main()) queries.ask(oracle, samples.x, samples.z);
      have += count;
      if (options_.show_progress) progress.update(have);
    }
    if (group_.is_main()) oracle.wait(feedback, round);
    share_feedback(feedback, labelled_before, round);
  }

  // Gives every rank rank 0's labels: a dataset bound to a file reads them from the
  // store (a filesystem every rank sees), one in memory receives them.
  void share_feedback(reward::FeedbackDataset& feedback, int64_t labelled_before, int64_t round) {
    if (group_.alone()) return;
    group_.barrier();  // rank 0's rows are stored
    if (!feedback.file().empty()) {
      if (!group_.is_main()) feedback.refresh();
    } else {
      torch::Tensor count = torch::tensor({feedback.size() - labelled_before}, torch::kLong);
      group_.broadcast(count);
      const int64_t n = count.item<int64_t>();
      if (n > 0) {
        std::vector<int64_t> shape{n};
        shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
        const bool main = group_.is_main();
        torch::Tensor x =
            main ? feedback.x().narrow(0, labelled_before, n).contiguous() : torch::empty(shape, torch::kFloat);
        torch::Tensor y =
            main ? feedback.y().narrow(0, labelled_before, n).contiguous() : torch::empty({n}, torch::kDouble);
        torch::Tensor z;
        if (options_.classes > 0)
          z = main ? feedback.z().narrow(0, labelled_before, n).contiguous() : torch::empty({n}, torch::kLong);
        group_.broadcast(x);
        group_.broadcast(y);
        if (z.defined()) group_.broadcast(z);
        if (!main) feedback.append(x, z, y, round);
      }
    }
    const torch::Tensor sizes = group_.all_reduce_sum(torch::tensor({feedback.size()}, torch::kLong));
    require(sizes.item<int64_t>() == feedback.size() * group_.size(), group_.label(), "SEIKO round ", round,
            ": the ranks hold different feedback (", feedback.size(),
            " labels here); every rank must use the same "
            "feedback store, on a filesystem all of them see");
  }

  double optimize(int64_t round) {
    std::vector<torch::Tensor> parameters = policy_.parameters();
    parameters.insert(parameters.end(), drift_parameters_.begin(), drift_parameters_.end());
    if (options_.learn_initial)
      for (const torch::Tensor& p : initial_.parameters()) parameters.push_back(p);
    if (parameters.empty() || options_.optimize_steps == 0) return 0.0;
    initial_.set_trainable(options_.learn_initial);
    torch::optim::AdamW optimizer(
        parameters, torch::optim::AdamWOptions(options_.learning_rate).weight_decay(options_.weight_decay));
    io::Progress progress("seiko round " + std::to_string(round) + " optimise", options_.optimize_steps);
    torch::Tensor objective;
    // Steps whose objective was not finite, counted where the objective lives and
    // read once at the end (no host sync per step).
    torch::Tensor diverged_steps = torch::zeros({}, torch::TensorOptions(torch::kLong).device(device_));
    for (int64_t step = 0; step < options_.optimize_steps; ++step) {
      // A control that blew up in an earlier step breaks this step's trajectories.
      try {
        // The batch drawn whole, this rank's rows integrated; sums over the rows
        // divided by the whole batch, so that summed over ranks they are its means.
        const int64_t batch = options_.batch;
        const torch::Tensor z = group_.local_rows(draw_prompts(batch));
        const torch::Tensor x_init = group_.local_rows(initial_.draw(batch, generator_));
        torch::Tensor mask;
        {
          torch::NoGradGuard no_grad;
          mask = select_controls(x_init.detach(), z, batch);
        }
        const Run run = controlled_run(x_init, z, mask, true, false, batch);
        const torch::Tensor reward = reward_.optimistic(run.x, z).sum() / double(batch);
        torch::Tensor penalty = run.penalty.sum() / double(batch);
        if constexpr (requires { regularizer_.initial_penalty(penalty, penalty); })
          if (options_.learn_initial)  // once over the ranks
            penalty = penalty + regularizer_.initial_penalty(initial_.kl_to_prior(), initial_.kl_to_previous()) /
                                    double(group_.size());
        const torch::Tensor shard_objective = reward - penalty;
        optimizer.zero_grad();
        (-shard_objective).backward();
        group_.all_reduce_gradients(parameters);
        objective = group_.all_reduce_sum(shard_objective.detach());
        diverged_steps += torch::isfinite(objective).logical_not();
        clip_grad_norm(parameters, options_.max_grad_norm);
        optimizer.step();
      } catch (const sde::NonFiniteState& error) {
        throw Diverged(diffctl::detail::concat(
            "SEIKO round ", round, ": diverged at optimisation step ", step + 1, " of ", options_.optimize_steps, " (",
            error.what(), "); a lower learning rate than ", options_.learning_rate, " or a larger alpha may help"));
      }
      if (options_.show_progress) progress.update(step + 1);
    }
    initial_.set_trainable(false);
    const int64_t diverged = diverged_steps.template item<int64_t>();
    if (diverged > 0)
      throw Diverged(diffctl::detail::concat("SEIKO round ", round, ": diverged, the objective NaN or infinite in ",
                                             diverged, " of its ", options_.optimize_steps,
                                             " optimisation steps; a lower learning rate than ", options_.learning_rate,
                                             " or a larger alpha may help"));
    return objective.template item<double>();
  }

  torch::Tensor draw_prompts(int64_t n) {
    if (options_.classes == 0) return {};
    return torch::randint(options_.classes, {n}, generator_, torch::kLong).to(device_);
  }

  // Steps 2-3: hallucinate without control with the current drift, read the
  // ensemble's uncertainty at the Tweedie estimates, let the Mss choose.
  // x_init holds this rank's rows of a batch of `batch`.
  torch::Tensor select_controls(const torch::Tensor& x_init, const torch::Tensor& z, int64_t batch) {
    sde::IntegrateOptions options = noise_of_rows(batch);
    options.record_times = measure_times_;
    options.record_x0 = !options_.reward_of_noisy_state;
    // A step without noise has no density, so a control before it would cost no KL:
    // such times never get one.
    std::vector<bool> noiseless(grid_.size(), false);
    options.on_step = [&](const sde::StepRecord& r) { noiseless[r.k] = r.step.noise_std <= 0.0; };
    const sde::Trajectory hallucination = sde::integrate(schedule_, tuned_, solver_, grid_, x_init, z, options);
    std::vector<torch::Tensor> uncertainty;
    for (std::size_t r = 0; r < measure_times_.size(); ++r)
      uncertainty.push_back(options_.reward_of_noisy_state
                                ? noisy_state_uncertainty(measure_times_[r], hallucination.states[r], z)
                                : reward_.uncertainty(hallucination.x0_estimates[r], z));
    torch::Tensor mask = mss_.select(measure_times_, torch::stack(uncertainty));
    require(mask.scalar_type() == torch::kBool &&
                mask.sizes() == torch::IntArrayRef({int64_t(measure_times_.size()), x_init.size(0)}),
            "SEIKO: the measurement selection returned ", mask.sizes(), " ", mask.scalar_type(), ", expected bool [",
            measure_times_.size(), ", ", x_init.size(0), "]");
    bool any_noisy = false;
    for (std::size_t r = 0; r < measure_index_.size(); ++r) {
      if (noiseless[measure_index_[r]]) mask[static_cast<int64_t>(r)].fill_(false);
      else any_noisy = true;
    }
    require(any_noisy,
            "SEIKO: the sampler is deterministic at every measured time; it needs a stochastic "
            "solver (Euler-Maruyama, DDPM, DDIM with eta > 0)");
    return mask;
  }

  // Step 4 (and 7's forward pass): the controlled sampler, with the regularizer's
  // path penalty and, when asked, the path KL to the pretrained model. An impulse
  // acts at its measured time; a held control (HeldControl) on every step until
  // the next measured time.
  Run controlled_run(const torch::Tensor& x_init, const torch::Tensor& z, const torch::Tensor& mask, bool with_grad,
                     bool with_kl, int64_t batch) {
    constexpr bool held = HeldControl<Policy>;
    // Which measured row acts on each step and on which samples, and each
    // control's span D (to the next measured time, or to T): how long a held
    // control lasts, and the span over which guidance proposes its displacement.
    const sde::ControlSchedule plan(grid_, measure_index_, mask, held);
    const auto per_sample = [](const torch::Tensor& m, const torch::Tensor& like) {
      std::vector<int64_t> shape(static_cast<std::size_t>(like.dim()), 1);
      shape[0] = like.size(0);
      return m.to(like.dtype()).view(shape);
    };

    // Each controlled row's control and the previous round's, set at its measured
    // time: an impulse u there, or the drift u / D held for the D until the next
    // measured time (the same displacement u over the interval, at the same scale
    // of the policy's output, for |u|^2 / (2 sigma^2 D) nats instead of
    // |u|^2 / (2 sigma^2 h)).
    std::vector<torch::Tensor> control(measure_index_.size()), previous_control(measure_index_.size());
    const auto set_controls = [&](std::size_t k, double t, const torch::Tensor& x) {
      if (!plan.starts_row(k)) return;
      const std::size_t row = static_cast<std::size_t>(plan.row_of(k));
      const torch::Tensor on = per_sample(mask[static_cast<int64_t>(row)], x) / (held ? plan.span(row) : 1.0);
      if constexpr (GuidedControl<Policy>) {
        const torch::Tensor g = policy_.guided() || previous_policy_.guided()
                                    ? guidance(t, plan.span(row), x, z, plan.samples_of_row(row))
                                    : torch::zeros_like(x, x.options().requires_grad(false));
        previous_control[row] = previous_policy_.control(t, x, z, g) * on;
        control[row] = policy_.control(t, x, z, g) * on;
      } else {
        previous_control[row] = previous_policy_.control(t, x, z) * on;
        control[row] = policy_.control(t, x, z) * on;
      }
    };
    const auto impulses = [&](std::size_t k, double t, const torch::Tensor& x) -> torch::Tensor {
      if (held || !plan.controlled(k)) return {};
      set_controls(k, t, x);
      return control[static_cast<std::size_t>(plan.row_of(k))];
    };

    Run run;
    run.penalty = torch::zeros({x_init.size(0)}, x_init.options().requires_grad(false));
    if (with_kl) run.kl_pretrained = torch::zeros({x_init.size(0)}, x_init.options().requires_grad(false));
    sde::IntegrateOptions options = noise_of_rows(batch);
    options.record_x0 = false;
    options.with_grad = with_grad;
    options.backprop_steps = options_.backprop_steps;
    if (held)
      options.added_drift = [&](std::size_t k, double t, const torch::Tensor& x) -> torch::Tensor {
        if (!plan.controlled(k)) return {};
        set_controls(k, t, x);
        return control[static_cast<std::size_t>(plan.row_of(k))];
      };
    constexpr bool drift_tuned = TunableDrift<Drift>;
    const bool drift_changes = drift_tuned && !drift_parameters_.empty();
    options.on_step = [&](const sde::StepRecord& r) {
      // With the drift untouched, a sample without a control at this step makes the
      // pretrained step: it costs no KL, and the reference models skip it.
      if (!plan.controlled(r.k) && !drift_changes) return;
      torch::Tensor rows;
      if (!drift_changes) rows = plan.samples(r.k);
      const auto pick = [&](const torch::Tensor& t) {
        return rows.defined() && t.defined() ? t.index_select(0, rows) : t;
      };
      const torch::Tensor from = pick(r.before_impulse), zs = pick(z);
      const Transition tuned{pick(r.step.mean), r.step.noise_std, {}};
      // The previous round's control: its impulse moved the state the step starts
      // from; its held drift moves the step's mean.
      const torch::Tensor& previous_u =
          plan.controlled(r.k) ? previous_control[static_cast<std::size_t>(plan.row_of(r.k))] : torch::Tensor{};
      const bool jumped = !held && previous_u.defined();
      auto [pretrained, previous] =
          reference_steps(r.t, r.t_next, from, jumped ? from + pick(previous_u) : from, zs, drift_changes);
      if (held && previous_u.defined() && r.step.noise_std > 0.0)
        previous.mean = previous.mean + pick(previous_u) * (r.t_next - r.t);
      const auto add = [&](const torch::Tensor& total, const torch::Tensor& part) {
        return rows.defined() ? total.index_add(0, rows, part) : total + part;
      };
      run.penalty = add(run.penalty, regularizer_.penalty(tuned, pretrained, previous));
      if (with_kl) run.kl_pretrained = add(run.kl_pretrained, objective::transition_kl(tuned, pretrained).detach());
    };
    run.x = sde::integrate(schedule_, tuned_, solver_, grid_, x_init, z, impulses, options).final_state;
    return run;
  }

  // The displacement that the reward model proposes over a control's span D at
  // generation time t, for the samples `rows` of x (zero elsewhere):
  //   G = D g(s)^2 J(s) grad r_hat(x0_hat(t, x), z),   s = T - t,
  // the optimal drift g^2 grad_x log E[exp(r / alpha) | x_t] of the objective, with
  // that expectation taken at the Tweedie estimate x0_hat (as DPS does; 1 / alpha
  // is left to the policy's gain). J = d x0_hat / d x_t is the posterior covariance
  // times alpha / sigma^2. DPS differentiates it through the score network, whose
  // Jacobian is poor where the noise dominates, and 1 / alpha amplifies its error
  // there (the Fashion-MNIST demo spent 6e5 nats per sample at its first
  // evaluation with it).
  // Here the posterior is that of a Gaussian prior with variance c^2 per coordinate
  // (SeikoOptions::guidance_prior_variance), J = alpha c^2 / (alpha^2 c^2 + sigma^2):
  // 1 / alpha at low noise, vanishing as the noise takes over. G is an input of the
  // policy, not differentiated by fine-tuning; the previous round's policy gets the
  // same G.
  // A reward model of the noisy state (SeikoOptions::reward_of_noisy_state) is
  // differentiated at x_t itself: G = D g(s)^2 grad_x r_hat(x_t, z).
  torch::Tensor guidance(double t, double span, const torch::Tensor& x, const torch::Tensor& z,
                         const torch::Tensor& rows) {
    torch::Tensor g = torch::zeros_like(x, x.options().requires_grad(false));
    if (rows.numel() == 0) return g;
    const torch::Tensor at = x.detach().index_select(0, rows);
    const torch::Tensor zs = z.defined() ? z.index_select(0, rows) : z;
    const double s = sde::forward_time(schedule_, t), diffusion = schedule_.diffusion(s);
    const double alpha = schedule_.alpha(s), sigma = schedule_.sigma(s), c2 = options_.guidance_prior_variance;
    const double jacobian = options_.reward_of_noisy_state ? 1.0 : alpha * c2 / (alpha * alpha * c2 + sigma * sigma);
    torch::Tensor read;
    if (options_.reward_of_noisy_state) {
      read = at.clone();
    } else {
      torch::NoGradGuard no_grad;
      read = sde::x0_from_score(schedule_, s, at, tuned_.score(t, at, zs));
    }
    const torch::AutoGradMode enable(true);
    read.requires_grad_(true);
    const torch::Tensor mean = options_.reward_of_noisy_state ? noisy_state_mean(t, read, zs) : reward_.mean(read, zs);
    const torch::Tensor gradient = torch::autograd::grad({mean.sum()}, {read})[0];
    return g.index_copy(0, rows, (span * diffusion * diffusion * jacobian) * gradient.detach());
  }

  // The reward model of the noisy state at generation time t: told the time where
  // it takes it (TimeAwareReward), else reading x_t alone.
  torch::Tensor noisy_state_mean(double t, const torch::Tensor& x, const torch::Tensor& z) {
    if constexpr (TimeAwareReward<Reward>) return reward_.mean(t, x, z);
    else return reward_.mean(x, z);
  }
  torch::Tensor noisy_state_uncertainty(double t, const torch::Tensor& x, const torch::Tensor& z) {
    if constexpr (TimeAwareReward<Reward>) return reward_.uncertainty(t, x, z);
    else return reward_.uncertainty(x, z);
  }

  // Integration options whose noise comes from the run's generator, drawn for the
  // whole batch of `batch` rows and kept for this rank's shard of them.
  sde::IntegrateOptions noise_of_rows(int64_t batch) const {
    sde::IntegrateOptions options;
    options.generator = generator_;
    sde::draw_noise_of_batch(options, batch, group_);
    return options;
  }

  // The pretrained and previous-round models' steps from `from` and `from_previous`.
  // While the drift is untouched both models are the pretrained network, so one
  // call on the two batches stacked serves both: half the calls on small batches.
  std::pair<Transition, Transition> reference_steps(double t, double t_next, const torch::Tensor& from,
                                                    const torch::Tensor& from_previous, const torch::Tensor& z,
                                                    bool drift_changes) const {
    if (drift_changes)
      return {solver_.transition(schedule_, pretrained_, t, t_next, from, z),
              solver_.transition(schedule_, previous_, t, t_next, from_previous, z)};
    const int64_t n = from.size(0);
    const Transition both = solver_.transition(schedule_, pretrained_, t, t_next, torch::cat({from, from_previous}),
                                               z.defined() ? torch::cat({z, z}) : z);
    return {Transition{both.mean.narrow(0, 0, n), both.noise_std, {}},
            Transition{both.mean.narrow(0, n, n), both.noise_std, {}}};
  }

  io::Checkpoint checkpoint_entries() {
    io::Checkpoint checkpoint;
    policy_.add_to(checkpoint, "");
    previous_policy_.add_to(checkpoint, "previous_");
    if constexpr (TunableDrift<Drift>) {
      checkpoint.modules.emplace_back("drift", tuned_.network().ptr().get());
      checkpoint.modules.emplace_back("previous_drift", previous_.network().ptr().get());
    }
    initial_.add_to(checkpoint);
    checkpoint.generators.emplace_back("seiko", generator_);
    reward_.add_to(checkpoint);
    return checkpoint;
  }

  Schedule schedule_;
  sde::TimeGrid grid_;
  std::vector<int64_t> sample_shape_;
  Drift pretrained_, tuned_, previous_;
  Policy policy_, previous_policy_;
  Reward reward_;
  SeikoOptions options_;
  Mss mss_;
  Solver solver_;
  Reg regularizer_;
  torch::Device device_;
  distributed::Group group_;
  at::Generator generator_;
  std::vector<std::size_t> measure_index_;
  std::vector<double> measure_times_;
  std::vector<torch::Tensor> drift_parameters_;
  sde::LearnedGaussianInitial initial_;  // x(0) ~ N(m, e^{2l} I), tuned in step 7
  int64_t rounds_done_ = 0;
  SeikoSamples last_evaluation_;
};

// The discrete-time SEIKO of the seed paper: a control at every step of the
// grid, the measurement selection that picks every time.
template <NoiseSchedule Schedule, DriftModel Drift, TrainablePolicy Policy, class Solver, UncertainReward Reward,
          Regularizer Reg = objective::PathKl>
  requires SdeSolver<Solver, Schedule, Drift>
using DiscreteSeiko = ContinuousSeiko<Schedule, Drift, Policy, mss::EveryStep, Solver, Reward, Reg>;

}  // namespace diffctl::algorithms
