#pragma once
// DDPO and DPOK on the Eigen backend: the same iterations as policy_gradient.hpp's,
// the same function of the same noise, with the networks as EigenMlp and the
// gradients of the losses written out by hand, for the small networks and
// batches of the low-dimensional problems on the CPU:
//
//   Ddpo<Schedule, PolicyScore, Reward, sde::EulerMaruyama, EigenBackend<float>> ddpo(
//       schedule, PolicyScore(pretrained_network), reward, chain_shape(pretrained_network), options);
//
// Per iteration the policy runs forward once over every (t_k, Y_k) of the batch
// while the chains are simulated (those activations serve the first gradient
// step), then forward and backward as one product per layer over all N B columns.
//
// Gradients, with mean_k = keep_k Y_k + push_k mu(t_k, Y_k) and
// log p = -|Y_{k+1} - mean_k|^2 / (2 std_k^2) + const:
//   d log p / d mu = push_k (Y_{k+1} - mean_k) / std_k^2;
//   DDPO, loss -sum_k mean_b min(r A, clip(r) A), r = exp(log p - log p_old):
//     d loss / d log p = -r A / B where r A <= clip(r) A (the unclipped term is
//     the smaller, or they agree), 0 where the clipped term is the smaller;
//   DPOK, policy loss -sum_k mean_b (w h - V) log p + kl_weight sum_k mean_b KL_k,
//     KL_k = |mean_k - mean_k^pre|^2 / (2 std_k^2), and value loss mean (V - w h)^2.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

#include <Eigen/Dense>
#include <torch/torch.h>

#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/qlearning_eigen.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/eigen_mlp.hpp"

namespace diffctl::algorithms {

// The Euler-Maruyama steps on `grid`, Y_{k+1} = keep Y_k + push mu(t_k, Y_k) +
// noise_std N(0, I), read off the solver.
template <NoiseSchedule Schedule>
std::vector<AffineStep> euler_steps(const Schedule& schedule, const sde::TimeGrid& grid) {
  std::vector<AffineStep> steps;
  for (std::size_t k = 0; k < grid.steps(); ++k)
    steps.push_back(affine_step(schedule, sde::EulerMaruyama{}, grid[k], grid[k + 1]));
  return steps;
}

namespace detail {

// What the Eigen DDPO and DPOK share: the pretrained network and the copy they
// fine-tune, the chains and their buffers, the transition means and densities,
// the policy's backward pass and sampling from it.
template <NoiseSchedule Schedule, RewardFunction Reward, class Scalar>
class EigenPolicyFineTuning {
 public:
  using Network = models::EigenMlp<Scalar>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

  template <class Solver = sde::EulerMaruyama>
  torch::Tensor sample(int64_t n, const torch::Tensor& z, at::Generator& generator,
                       const Solver& solver = Solver()) const {
    return sample_policy(schedule_, policy_.to_torch(), grid_, n, z, generator, solver);
  }
  Network& policy() { return policy_; }
  void set_learning_rate(double learning_rate) {
    check_learning_rate(learning_rate);
    adam_.learning_rate = learning_rate;
  }

 protected:
  EigenPolicyFineTuning(Schedule schedule, const models::TimeStateMlp& pretrained, Reward reward,
                        const ChainShape& shape, double dt, int64_t batch, double learning_rate)
      : schedule_(std::move(schedule)),
        reward_(std::move(reward)),
        grid_(grid_with_step(schedule_, dt)),
        steps_(euler_steps(schedule_, grid_)),
        batch_(batch),
        pretrained_(Network::from(pretrained)),
        policy_(Network::from(pretrained)) {
    require(batch >= 2, "fine-tuning: batch must be >= 2, found ", batch);
    const ChainShape expected = chain_shape(pretrained);
    require(shape.sample == expected.sample && shape.classes == expected.classes,
            "fine-tuning: the chain shape does not match the policy network's (state_dim ",
            pretrained->options().state_dim, ", classes ", pretrained->options().classes, ")");
    adam_.learning_rate = learning_rate;
    const Eigen::Index n = Eigen::Index(steps_.size()) * batch, d = dim(), h = policy_.options().hidden;
    input_.resize(policy_.input_dim(), n);
    states_.resize(d, n + batch);
    for (Matrix* m : {&a1_, &a2_, &reference_a1_, &reference_a2_}) m->resize(h, n);
    for (Matrix* m : {&dz1_, &dz2_}) m->resize(h, std::min(n, Network::kBlock));
    for (Matrix* m : {&mu_, &means_, &reference_means_, &grad_means_}) m->resize(d, n);
    reward_values_.resize(batch);
    for (Row* row : {&log_probs_, &kl_, &weights_}) row->resize(n);
  }

  Eigen::Index dim() const { return policy_.options().state_dim; }
  Eigen::Index columns() const { return Eigen::Index(steps_.size()) * batch_; }

  // A batch of chains from the current policy (states_, input_ and the policy's
  // activations and outputs a1_, a2_, mu_ for every column) and its terminal
  // rewards [B] into reward_values_, from `generator` in the LibTorch backend's
  // order: the classes, the prior, each step's noise.
  void simulate(at::Generator& generator) {
    const auto options = torch::TensorOptions(torch::CppTypeToScalarType<Scalar>::value);
    const Eigen::Index d = dim(), batch = batch_;
    const int64_t classes = policy_.options().classes;
    z_ = classes > 0 ? torch::randint(classes, {batch}, generator, torch::kLong) : torch::Tensor{};
    const int64_t* z = z_.defined() ? z_.template data_ptr<int64_t>() : nullptr;
    const torch::Tensor prior = sde::sample_prior(schedule_, {batch, d}, generator, options);
    states_.leftCols(batch) = Eigen::Map<const Matrix>(prior.template data_ptr<Scalar>(), d, batch);
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const torch::Tensor normals = standard_normal({batch, d}, generator, options);
      const Eigen::Index at = Eigen::Index(k) * batch;
      auto input = input_.middleCols(at, batch);
      policy_.fill_input(Scalar(grid_[k]), states_.middleCols(at, batch), z, input);
      auto mu = mu_.middleCols(at, batch);
      policy_.forward(input, a1_.middleCols(at, batch), a2_.middleCols(at, batch), mu);
      states_.middleCols(at + batch, batch) =
          Scalar(steps_[k].keep) * states_.middleCols(at, batch) + Scalar(steps_[k].push) * mu +
          Scalar(steps_[k].noise_std) * Eigen::Map<const Matrix>(normals.template data_ptr<Scalar>(), d, batch);
    }
    const torch::Tensor final_states = torch::from_blob(states_.data() + columns() * d, {batch, d}, options);
    const torch::Tensor reward = torch::Tensor(reward_(final_states, z_)).detach().to(options).contiguous();
    require(reward.numel() == batch, "fine-tuning: the reward must give [", batch, "] values, found ", reward.sizes());
    reward_values_ = Eigen::Map<const Row>(reward.template data_ptr<Scalar>(), batch);
  }

  // mu_ (and the activations) from the current weights, all columns in one pass.
  void forward_policy() { policy_.forward(input_, a1_, a2_, mu_); }

  // out = keep Y + push mu per step (out may be mu).
  void means_of(const Matrix& mu, Matrix& out) const {
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const Eigen::Index at = Eigen::Index(k) * batch_;
      out.middleCols(at, batch_) =
          Scalar(steps_[k].keep) * states_.middleCols(at, batch_) + Scalar(steps_[k].push) * mu.middleCols(at, batch_);
    }
  }

  // means_ = keep Y + push mu_ per step.
  void compute_means() { means_of(mu_, means_); }

  // The pretrained model's transition means at the chains' states, into reference_means_.
  void compute_reference_means() {
    pretrained_.forward(input_, reference_a1_, reference_a2_, reference_means_);
    means_of(reference_means_, reference_means_);
  }

  // log p(Y_{k+1} | Y_k) [N B] under means_, into out.
  void log_probs(Row& out) const {
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const Eigen::Index at = Eigen::Index(k) * batch_;
      const double sd = steps_[k].noise_std;
      const double normaliser = double(dim()) * (std::log(sd) + 0.5 * std::log(2.0 * std::numbers::pi));
      out.segment(at, batch_) =
          (Scalar(-0.5 / (sd * sd)) * residual(k).colwise().squaredNorm().array() - Scalar(normaliser)).matrix();
    }
  }

  // The per-step KL [N B] of means_ to reference_means_, into out.
  void kl_to_pretrained(Row& out) const {
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const Eigen::Index at = Eigen::Index(k) * batch_;
      const double sd = steps_[k].noise_std;
      out.segment(at, batch_) =
          Scalar(0.5 / (sd * sd)) *
          (means_.middleCols(at, batch_) - reference_means_.middleCols(at, batch_)).colwise().squaredNorm();
    }
  }

  // Y_{k+1} - mean_k for step k [d, B].
  auto residual(std::size_t k) const {
    const Eigen::Index at = Eigen::Index(k) * batch_;
    return states_.middleCols(at + batch_, batch_) - means_.middleCols(at, batch_);
  }

  // Fills grad_means_ with per-column weights w (d loss / d log p) times
  // d log p / d mean = (Y' - mean) / std^2, plus kl_weight (d loss / d KL = kl_weight / B)
  // times d KL / d mean = (mean - mean^pre) / std^2 when kl_weight > 0.
  void set_mean_gradients(const Row& log_prob_weights, double kl_weight) {
    for (std::size_t k = 0; k < steps_.size(); ++k) {
      const Eigen::Index at = Eigen::Index(k) * batch_;
      const Scalar precision = Scalar(1.0 / (steps_[k].noise_std * steps_[k].noise_std));
      auto grad = grad_means_.middleCols(at, batch_);
      grad = (residual(k).array().rowwise() * (precision * log_prob_weights.segment(at, batch_)).array()).matrix();
      if (kl_weight > 0.0)
        grad += Scalar(kl_weight * precision / double(batch_)) *
                (means_.middleCols(at, batch_) - reference_means_.middleCols(at, batch_));
    }
  }

  // The policy's gradients from grad_means_ (d mean / d mu = push), then Adam.
  void step_policy() {
    for (std::size_t k = 0; k < steps_.size(); ++k)
      grad_means_.middleCols(Eigen::Index(k) * batch_, batch_) *= Scalar(steps_[k].push);
    policy_.backward(input_, a1_, a2_, grad_means_, dz2_, dz1_);
    policy_.adam_step(adam_);
  }

  Schedule schedule_;
  Reward reward_;
  sde::TimeGrid grid_;
  std::vector<AffineStep> steps_;
  int64_t batch_;
  Network pretrained_, policy_;
  models::EigenAdamOptions adam_;
  torch::Tensor z_;                                   // the current batch's classes (or undefined)
  Matrix input_;                                      // [1 + d + classes, N B]: (t_k, Y_k, one-hot z)
  Matrix states_;                                     // [d, (N + 1) B]: Y_0 .. Y_N
  Matrix a1_, a2_, reference_a1_, reference_a2_;      // [hidden, N B]
  Matrix dz1_, dz2_;                                  // backward scratch
  Matrix mu_, means_, reference_means_, grad_means_;  // [d, N B]
  Row reward_values_;                                 // [B]: the batch's terminal rewards
  Row log_probs_, kl_, weights_;                      // [N B]: per (step, sample)
};

}  // namespace detail

template <NoiseSchedule Schedule, RewardFunction Reward, class Scalar>
class Ddpo<Schedule, PolicyScore, Reward, sde::EulerMaruyama, EigenBackend<Scalar>>
    : public detail::EigenPolicyFineTuning<Schedule, Reward, Scalar> {
  using Base = detail::EigenPolicyFineTuning<Schedule, Reward, Scalar>;
  using Row = typename Base::Row;

 public:
  Ddpo(Schedule schedule, const PolicyScore& pretrained, Reward reward, const ChainShape& shape,
       DdpoOptions options = {}, sde::EulerMaruyama = {})
      : Base(std::move(schedule), pretrained.network(), std::move(reward), shape, options.dt, options.batch,
             options.learning_rate),
        options_(options) {
    check_ddpo_options(options);
    require(options.group.alone(), "Ddpo: the Eigen backend runs in one process; a run of ", options.group.size(),
            " processes needs the LibTorch backend");
    advantage_.resize(this->batch_);
    old_log_probs_.resize(this->columns());
  }

  FineTuneStats train_iteration(at::Generator& generator) {
    this->simulate(generator);
    const Row& reward = this->reward_values_;
    const double mean = double(reward.mean());
    const double spread = std::sqrt((reward.array() - Scalar(mean)).square().sum() / double(reward.size() - 1));
    advantage_ = ((reward.array() - Scalar(mean)) / Scalar(spread + 1e-8)).matrix();
    const Eigen::Index batch = this->batch_, n = this->columns();
    this->compute_means();
    this->log_probs(old_log_probs_);
    this->compute_reference_means();
    this->kl_to_pretrained(this->kl_);
    const double kl = double(this->kl_.sum()) / double(batch);
    double loss = 0.0;
    int64_t clipped_terms = 0;
    for (int64_t epoch = 0; epoch < options_.inner_epochs; ++epoch) {
      if (epoch > 0) {
        this->forward_policy();
        this->compute_means();
      }
      this->log_probs(this->log_probs_);
      loss = 0.0;
      for (Eigen::Index c = 0; c < n; ++c) {
        const double a = double(advantage_(c % batch));
        const double ratio = std::exp(double(this->log_probs_(c)) - double(old_log_probs_(c)));
        const double clipped = std::clamp(ratio, 1.0 - options_.clip, 1.0 + options_.clip);
        const bool clip_active = clipped * a < ratio * a;
        clipped_terms += clip_active;
        loss -= std::min(ratio * a, clipped * a) / double(batch);
        this->weights_(c) = clip_active ? Scalar(0) : Scalar(-ratio * a / double(batch));
      }
      this->set_mean_gradients(this->weights_, 0.0);
      this->step_policy();
    }
    return {mean, kl, loss, double(clipped_terms) / double(n * options_.inner_epochs)};
  }

 private:
  DdpoOptions options_;
  Row advantage_, old_log_probs_;  // [B], [N B]
};

template <NoiseSchedule Schedule, RewardFunction Reward, class Scalar>
class Dpok<Schedule, PolicyScore, Reward, sde::EulerMaruyama, EigenBackend<Scalar>>
    : public detail::EigenPolicyFineTuning<Schedule, Reward, Scalar> {
  using Base = detail::EigenPolicyFineTuning<Schedule, Reward, Scalar>;
  using Row = typename Base::Row;
  using Matrix = typename Base::Matrix;
  using Network = typename Base::Network;

 public:
  Dpok(Schedule schedule, const PolicyScore& pretrained, Reward reward, const ChainShape& shape,
       DpokOptions options = {}, sde::EulerMaruyama = {})
      : Base(std::move(schedule), pretrained.network(), std::move(reward), shape, options.dt, options.batch,
             options.learning_rate),
        options_(options),
        value_(Network::from(models::TimeStateMlp(value_network_options(shape, options.value_hidden)))) {
    check_dpok_options(options);
    require(options.group.alone(), "Dpok: the Eigen backend runs in one process; a run of ", options.group.size(),
            " processes needs the LibTorch backend");
    const Eigen::Index n = this->columns(), h = value_.options().hidden;
    for (Matrix* m : {&value_a1_, &value_a2_}) m->resize(h, n);
    baseline_.resize(1, n);
    grad_baseline_.resize(n);
  }

  FineTuneStats train_iteration(at::Generator& generator) {
    this->simulate(generator);
    const Row& reward = this->reward_values_;
    const Eigen::Index batch = this->batch_, n = this->columns();
    value_.forward(this->input_, value_a1_, value_a2_, baseline_);
    this->compute_means();
    this->compute_reference_means();
    this->log_probs(this->log_probs_);
    this->kl_to_pretrained(this->kl_);
    double policy_loss = 0.0;
    for (Eigen::Index c = 0; c < n; ++c) {
      const double gap = double(Scalar(options_.reward_weight) * reward(c % batch)) - double(baseline_(0, c));
      policy_loss += (-gap * double(this->log_probs_(c)) + options_.kl_weight * double(this->kl_(c))) / double(batch);
      this->weights_(c) = Scalar(-gap / double(batch));
      grad_baseline_(c) = Scalar(-2.0 * gap / double(n));
    }
    this->set_mean_gradients(this->weights_, options_.kl_weight);
    value_.backward(this->input_, value_a1_, value_a2_, grad_baseline_, this->dz2_, this->dz1_);
    value_.adam_step(this->adam_);
    this->step_policy();
    return {double(reward.mean()), double(this->kl_.sum()) / double(batch), policy_loss};
  }

  Network& value() { return value_; }

 private:
  DpokOptions options_;
  Network value_;
  Matrix value_a1_, value_a2_, baseline_;  // [hidden, N B], [1, N B]
  Row grad_baseline_;                      // [N B]
};

}  // namespace diffctl::algorithms
