#pragma once
// The members of a bootstrap reward ensemble, as one type that predicts for all M
// members at once and fits each member on its own weighting of the feedback data.
//
// - ModuleMembers<Net, Readout>: M whole networks (a ResNet18 per member started
//   from the weak classifier, or M small MLPs on the low-dimensional problems).
// - SharedBackboneHeads<Backbone, Readout>: one frozen feature network and M linear
//   heads stacked into one tensor, so a prediction is one backbone pass and one
//   batched product, and a fit trains heads on features computed once (cheap on a
//   CPU).
//
// A readout turns a network's output into a reward in the oracle's units:
// ClassReadout (p(z | x) or log p(z | x) from logits) or ScalarReadout.
//
// Fitting is regularised empirical risk minimisation, member by member:
//   mean over a weighted resample of D of (r_m(x) - y)^2  +  l2 * ||theta_m - a_m||^2,
// with a_m = 0, or with MemberFitOptions::anchored the member's parameters when it
// was built (anchored ensembles: each member stays near its own prior draw where the
// data say nothing, so members copied from the weak classifier keep what it knows
// instead of decaying toward uniform predictions, and keep their disagreement);
// by Adam with a cosine-decayed learning rate (so a fit ends at a minimum rather
// than jittering around it). When the batch is at least |D|, each step uses the
// exact weighted loss over all of D; otherwise minibatches are drawn in proportion
// to the member's weights (bootstrap counts or masks). Networks stay in evaluation
// mode (BatchNorm keeps the statistics it was trained with: feedback batches are
// small and not i.i.d. images of the data).

#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/models/module_copy.hpp"
#include "diffctl/reward/feedback_dataset.hpp"
#include "diffctl/reward/oracle.hpp"

namespace diffctl::reward {

// p(z | x) or log p(z | x) from a classifier's logits [..., B, K].
struct ClassReadout {
  RewardScale scale = RewardScale::probability;
  torch::Tensor operator()(const torch::Tensor& logits, const torch::Tensor& z) const {
    return class_reward(logits, z, scale);
  }
};

// The network's single output [..., B, 1] as the reward; z is not used.
struct ScalarReadout {
  torch::Tensor operator()(const torch::Tensor& output, const torch::Tensor&) const {
    require(output.dim() >= 2 && output.size(-1) == 1, "scalar readout: expected outputs [..., B, 1], found ",
            output.sizes());
    return output.squeeze(-1);
  }
};

struct MemberFitOptions {
  int64_t steps = 200;          // Adam steps per member and fit
  int64_t batch = 64;           // samples per step, drawn with replacement by weight; >= |D|: all of D
  double learning_rate = 1e-3;  // at the first step, decayed to 0 by a cosine
  double l2 = 1e-4;             // lambda of lambda * ||theta - anchor||^2
  bool anchored = false;        // anchor: the member's initial parameters (false: 0)
  // A reward model of the noisy state: when set, members are fitted on forward
  // draws x_s of each labelled x (sde::forward_noise(schedule)) with the label
  // of x, so that a member's r_hat(x_s) estimates E[r(x, z) | x_s]. Heads on a
  // shared backbone see noisy_copies draws of every sample (features computed once);
  // whole networks a fresh draw of each minibatch at every step.
  std::function<torch::Tensor(const torch::Tensor&, const c10::optional<at::Generator>&)> input_noise{};
  int64_t noisy_copies = 8;
};

namespace detail {

inline void check_fit_inputs(const FeedbackDataset& data, const torch::Tensor& weights, int64_t members,
                             const MemberFitOptions& options) {
  require(!data.empty(), "reward ensemble: cannot fit on an empty feedback dataset");
  require(weights.dim() == 2 && weights.size(0) == members && weights.size(1) == data.size(),
          "reward ensemble: expected member weights [", members, ", ", data.size(), "], found ", weights.sizes());
  require(options.steps >= 0 && options.batch >= 1 && options.learning_rate > 0.0 && options.l2 >= 0.0 &&
              options.noisy_copies >= 1,
          "reward ensemble: fit options need steps >= 0, batch >= 1, noisy_copies >= 1, learning_rate > 0 and "
          "l2 >= 0");
}

// Minibatch indices [M, batch] drawn with probability proportional to each
// member's weights; rows of idle members (all-zero weights) draw uniformly.
inline torch::Tensor draw_minibatches(const torch::Tensor& weights, const torch::Tensor& active, int64_t batch,
                                      at::Generator& generator) {
  const torch::Tensor rows = torch::where(active.unsqueeze(1), weights, torch::ones_like(weights));
  return torch::multinomial(rows, batch, /*replacement=*/true, generator);
}

inline void set_cosine_rate(torch::optim::Optimizer& optimizer, double peak, int64_t step, int64_t steps) {
  const double rate =
      0.5 * peak * (1.0 + std::cos(std::numbers::pi * double(step) / double(std::max<int64_t>(1, steps))));
  for (auto& group : optimizer.param_groups()) group.options().set_lr(rate);
}

// The minibatch of every member at `step`: indices [M, b] into D and the loss
// weights [M, b] (the member's sample weights over all of D when b = |D|, else 1).
struct Minibatches {
  torch::Tensor index, weight;
};

inline Minibatches minibatches(const torch::Tensor& weights, const torch::Tensor& active, int64_t batch, int64_t steps,
                               at::Generator& generator) {
  const int64_t members = weights.size(0), n = weights.size(1);
  if (batch >= n) {
    const torch::Tensor rows = torch::where(active.unsqueeze(1), weights, torch::ones_like(weights));
    return {torch::arange(n, torch::kLong).repeat({members, steps}),
            (rows / rows.sum(1, true) * double(n)).to(torch::kFloat).repeat({1, steps})};
  }
  return {draw_minibatches(weights, active, batch * steps, generator), torch::ones({members, batch * steps})};
}

// sum_i ||parameters_i - anchors_i||^2 (anchors empty: 0).
inline torch::Tensor squared_distance(const std::vector<torch::Tensor>& parameters,
                                      const std::vector<torch::Tensor>& anchors) {
  torch::Tensor total = torch::zeros({}, parameters.front().options());
  for (std::size_t i = 0; i < parameters.size(); ++i)
    total = total + (anchors.empty() ? parameters[i] : parameters[i] - anchors[i]).square().sum();
  return total;
}

inline std::vector<torch::Tensor> detached_copies(const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> copies;
  for (const auto& p : parameters) copies.push_back(p.detach().clone());
  return copies;
}

}  // namespace detail

template <class Net, class Readout = ClassReadout>
class ModuleMembers {
 public:
  // M >= 2 networks of one architecture, on one device. `reference`, when given,
  // is the frozen network whose features() serve the feature-covariance bonus
  // (the weak classifier the members started from).
  explicit ModuleMembers(std::vector<Net> members, Readout readout = {}, Net reference = nullptr)
      : members_(std::move(members)), readout_(std::move(readout)), reference_(std::move(reference)) {
    require(members_.size() >= 2, "reward ensemble: needs at least 2 members, found ", members_.size());
    for (auto& member : members_) {
      freeze(member);
      anchors_.push_back(detail::detached_copies(member->parameters()));
    }
    if (!reference_.is_empty()) freeze(reference_);
  }

  // M copies of `prototype` (say the weak classifier). With jitter > 0, each copy's
  // last layer (its final parameters, weight and bias) gets Gaussian noise of
  // jitter times that tensor's standard deviation, so the members disagree before
  // any feedback. The prototype itself is not changed; a frozen copy of it is kept
  // as the feature reference.
  static ModuleMembers copies_of(const Net& prototype, int64_t count, double jitter, at::Generator& generator,
                                 Readout readout = {}) {
    require(count >= 2, "reward ensemble: needs at least 2 members, found ", count);
    require(jitter >= 0.0 && std::isfinite(jitter), "reward ensemble: jitter must be >= 0, found ", jitter);
    std::vector<Net> members;
    for (int64_t m = 0; m < count; ++m) {
      Net copy = models::clone_module(prototype);
      if (jitter > 0.0) {
        torch::NoGradGuard no_grad;
        auto parameters = copy->parameters();
        for (std::size_t i = parameters.size() >= 2 ? parameters.size() - 2 : 0; i < parameters.size(); ++i) {
          torch::Tensor& p = parameters[i];
          const double scale = p.numel() > 1 ? p.std().template item<double>() : 0.0;
          p.add_(jitter * (scale > 0.0 ? scale : 1.0) *
                 torch::randn(p.sizes(), generator, torch::kFloat).to(p.device(), p.scalar_type()));
        }
      }
      members.push_back(std::move(copy));
    }
    return ModuleMembers(std::move(members), std::move(readout), models::clone_module(prototype));
  }

  int64_t size() const { return static_cast<int64_t>(members_.size()); }
  torch::Device device() const { return members_.front()->parameters().front().device(); }

  torch::Tensor predict(const torch::Tensor& x, const torch::Tensor& z) const {
    std::vector<torch::Tensor> outputs;
    outputs.reserve(members_.size());
    for (const auto& member : members_) outputs.push_back(readout_(member.ptr()->forward(x), z));
    return torch::stack(outputs);
  }

  torch::Tensor features(const torch::Tensor& x) const requires requires(typename Net::Impl& impl) {
    impl.features(std::declval<const torch::Tensor&>());
  }
  {
    require(!reference_.is_empty(), "reward ensemble: these members have no reference network for features");
    return reference_.ptr()->features(x);
  }

  torch::Tensor fit(const FeedbackDataset& data, const torch::Tensor& weights, const MemberFitOptions& options,
                    at::Generator& generator) {
    detail::check_fit_inputs(data, weights, size(), options);
    const torch::Tensor active = weights.sum(1).gt(0);
    if (options.steps == 0) return torch::full({size()}, std::nan(""), torch::kDouble);
    const int64_t batch = std::min(options.batch, data.size());
    const auto [index, loss_weight] = detail::minibatches(weights, active, options.batch, options.steps, generator);
    const auto device = this->device();
    std::vector<torch::Tensor> last_loss;
    for (int64_t m = 0; m < size(); ++m) {
      Net& member = members_[static_cast<std::size_t>(m)];
      if (!active[m].template item<bool>()) {
        last_loss.push_back(torch::full({}, std::nan(""), torch::kDouble));
        continue;
      }
      auto parameters = member->parameters();
      for (auto& p : parameters) p.requires_grad_(true);
      torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(options.learning_rate));
      torch::Tensor loss;
      for (int64_t step = 0; step < options.steps; ++step) {
        detail::set_cosine_rate(optimizer, options.learning_rate, step, options.steps);
        const torch::Tensor rows = index[m].narrow(0, step * batch, batch);
        torch::Tensor x = data.x().index_select(0, rows).to(device);
        if (options.input_noise) x = options.input_noise(x, generator);
        const torch::Tensor z = data.z().defined() ? data.z().index_select(0, rows).to(device) : torch::Tensor{};
        const torch::Tensor y = data.y().index_select(0, rows).to(device, torch::kFloat);
        const torch::Tensor w = loss_weight[m].narrow(0, step * batch, batch).to(device);
        const torch::Tensor error = readout_(member->forward(x), z) - y;
        const auto& anchor = options.anchored ? anchors_[static_cast<std::size_t>(m)] : std::vector<torch::Tensor>{};
        loss = (w * error.square()).mean() + options.l2 * detail::squared_distance(parameters, anchor);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
      }
      freeze(member);
      last_loss.push_back(loss.detach().to(torch::kCPU, torch::kDouble));
    }
    return torch::stack(last_loss);
  }

  void add_to(io::Checkpoint& checkpoint, const std::string& prefix) {
    for (std::size_t m = 0; m < members_.size(); ++m) {
      checkpoint.modules.emplace_back(prefix + "member_" + std::to_string(m), members_[m].ptr().get());
      for (std::size_t i = 0; i < anchors_[m].size(); ++i)
        checkpoint.tensors.emplace_back(prefix + "member_" + std::to_string(m) + "_anchor_" + std::to_string(i),
                                        &anchors_[m][i]);
    }
  }

  std::vector<Net>& networks() { return members_; }

  // Member m's weights (parameters and buffers) from rank `owner` to every rank.
  void broadcast_member(int64_t m, int owner, const distributed::Group& group) {
    auto& member = *members_[static_cast<std::size_t>(m)];
    std::vector<torch::Tensor> tensors = member.parameters();
    for (const auto& b : member.buffers()) tensors.push_back(b);
    group.broadcast_values(tensors, owner);
  }

 private:
  static void freeze(Net& net) {
    net->eval();
    for (auto& p : net->parameters()) p.requires_grad_(false);
  }

  std::vector<Net> members_;
  std::vector<std::vector<torch::Tensor>> anchors_;  // each member's parameters when built
  Readout readout_;
  Net reference_;
};

template <class Backbone, class Readout = ClassReadout>
class SharedBackboneHeads {
 public:
  // backbone: a module holder whose network has features(x) -> [B, F]; it is
  // copied and frozen. weight [M, K, F] and bias [M, K]: the M stacked linear heads.
  SharedBackboneHeads(const Backbone& backbone, torch::Tensor weight, torch::Tensor bias, Readout readout = {})
      : backbone_(models::clone_module(backbone)),
        weight_(weight.detach().clone()),
        bias_(bias.detach().clone()),
        anchor_weight_(weight_.clone()),
        anchor_bias_(bias_.clone()),
        readout_(std::move(readout)) {
    require(weight_.dim() == 3 && weight_.size(0) >= 2, "reward ensemble: head weights must be [M >= 2, K, F], found ",
            weight_.sizes());
    require(bias_.dim() == 2 && bias_.size(0) == weight_.size(0) && bias_.size(1) == weight_.size(1),
            "reward ensemble: head biases must be [", weight_.size(0), ", ", weight_.size(1), "], found ",
            bias_.sizes());
    backbone_->eval();
    for (auto& p : backbone_->parameters()) p.requires_grad_(false);
  }

  // M copies of a linear head (say the weak classifier's final layer) on top of its
  // backbone, each perturbed by Gaussian noise of jitter times the head's weight
  // (and bias) standard deviation.
  static SharedBackboneHeads copies_of(const Backbone& backbone, const torch::nn::Linear& head, int64_t count,
                                       double jitter, at::Generator& generator, Readout readout = {}) {
    require(count >= 2, "reward ensemble: needs at least 2 members, found ", count);
    require(jitter >= 0.0 && std::isfinite(jitter), "reward ensemble: jitter must be >= 0, found ", jitter);
    torch::NoGradGuard no_grad;
    const auto stacked = [&](const torch::Tensor& p) {
      std::vector<int64_t> repeats(static_cast<std::size_t>(p.dim()) + 1, 1);
      repeats[0] = count;
      torch::Tensor copies = p.detach().unsqueeze(0).repeat(repeats);
      const double scale = p.numel() > 1 ? p.std().template item<double>() : 0.0;
      if (jitter > 0.0)
        copies += jitter * (scale > 0.0 ? scale : 1.0) *
                  torch::randn(copies.sizes(), generator, torch::kFloat).to(p.device(), p.scalar_type());
      return copies;
    };
    return SharedBackboneHeads(backbone, stacked(head->weight), stacked(head->bias), std::move(readout));
  }

  // M freshly initialised heads with K outputs on F features: uniform in
  // +-1/sqrt(F), LibTorch's default for a linear layer.
  static SharedBackboneHeads random(const Backbone& backbone, int64_t count, int64_t outputs, int64_t features,
                                    at::Generator& generator, Readout readout = {}) {
    require(count >= 2 && outputs >= 1 && features >= 1, "reward ensemble: needs at least 2 members with",
            " outputs >= 1 and features >= 1, found ", count, ", ", outputs, ", ", features);
    const double bound = 1.0 / std::sqrt(double(features));
    const auto uniform = [&](std::vector<int64_t> shape) {
      return (torch::rand(shape, generator, torch::kFloat) * 2.0 - 1.0) * bound;
    };
    const auto device =
        backbone->parameters().empty() ? torch::Device(torch::kCPU) : backbone->parameters().front().device();
    return SharedBackboneHeads(backbone, uniform({count, outputs, features}).to(device),
                               uniform({count, outputs}).to(device), std::move(readout));
  }

  int64_t size() const { return weight_.size(0); }
  torch::Device device() const { return weight_.device(); }

  torch::Tensor features(const torch::Tensor& x) const { return backbone_.ptr()->features(x); }

  torch::Tensor predict(const torch::Tensor& x, const torch::Tensor& z) const { return readout_(outputs(x), z); }

  // Predictions [M, B, P] of x [B, ...] under each of the conditions [P], from one
  // pass of the backbone.
  torch::Tensor predict_each(const torch::Tensor& x, const torch::Tensor& conditions) const {
    const torch::Tensor all = outputs(x);
    std::vector<torch::Tensor> each;
    for (int64_t c = 0; c < conditions.size(0); ++c) each.push_back(readout_(all, conditions[c].expand({x.size(0)})));
    return torch::stack(each, 2);
  }

  torch::Tensor fit(const FeedbackDataset& data, const torch::Tensor& weights, const MemberFitOptions& options,
                    at::Generator& generator) {
    detail::check_fit_inputs(data, weights, size(), options);
    const torch::Tensor active = weights.sum(1).gt(0);
    if (options.steps == 0 || !active.any().template item<bool>())
      return torch::full({size()}, std::nan(""), torch::kDouble);
    const auto device = weight_.device();
    // Noisy: copy c of sample i is row c N + i of phi, y and z; a minibatch row i
    // stands for all its copies (the loss is their mean).
    const int64_t n = data.size(), copies = options.input_noise ? options.noisy_copies : 1;
    const torch::Tensor phi = dataset_features(data, device, options, generator);  // [copies N, F], computed once
    const torch::Tensor y = data.y().to(device, torch::kFloat).repeat({copies});
    const torch::Tensor z = data.z().defined() ? data.z().to(device).repeat({copies}) : torch::Tensor{};
    const torch::Tensor mask = active.to(device, torch::kFloat);
    const auto [cpu_index, cpu_weight] = detail::minibatches(weights, active, options.batch, options.steps, generator);
    // [M, steps b] -> [M, steps copies b]: each step's b rows, then their copies.
    const int64_t drawn = std::min(options.batch, n), batch = drawn * copies;
    const torch::Tensor offsets = torch::arange(copies, torch::kLong).mul(n).view({1, 1, copies, 1});
    const auto with_copies = [&](const torch::Tensor& t, bool shift) {
      const torch::Tensor rows = t.reshape({size(), options.steps, 1, drawn}).expand({-1, -1, copies, -1});
      return (shift ? rows + offsets : rows).reshape({size(), -1});
    };
    const torch::Tensor index = with_copies(cpu_index, true).to(device),
                        loss_weight = with_copies(cpu_weight, false).to(device);

    torch::Tensor weight = weight_.clone().requires_grad_(true), bias = bias_.clone().requires_grad_(true);
    torch::optim::Adam optimizer({weight, bias}, torch::optim::AdamOptions(options.learning_rate));
    torch::Tensor per_member;
    for (int64_t step = 0; step < options.steps; ++step) {
      detail::set_cosine_rate(optimizer, options.learning_rate, step, options.steps);
      const torch::Tensor rows = index.narrow(1, step * batch, batch);  // [M, b]
      const torch::Tensor x = phi.index_select(0, rows.flatten()).view({size(), batch, -1});
      const torch::Tensor zb = z.defined() ? z.index_select(0, rows.flatten()).view_as(rows) : torch::Tensor{};
      const torch::Tensor error =
          readout_(heads(x, weight, bias), zb) - y.index_select(0, rows.flatten()).view_as(rows);
      const torch::Tensor w = loss_weight.narrow(1, step * batch, batch);
      const torch::Tensor dw = options.anchored ? weight - anchor_weight_ : weight;
      const torch::Tensor db = options.anchored ? bias - anchor_bias_ : bias;
      per_member = (w * error.square()).mean(1) + options.l2 * (dw.square().sum({1, 2}) + db.square().sum(1));
      // Members are independent: the sum's gradient is each member's own.
      const torch::Tensor loss = (per_member * mask).sum();
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    {
      torch::NoGradGuard no_grad;
      const torch::Tensor keep = active.to(device).view({size(), 1, 1});
      weight_ = torch::where(keep, weight.detach(), weight_);
      bias_ = torch::where(keep.view({size(), 1}), bias.detach(), bias_);
    }
    return torch::where(active, per_member.detach().to(torch::kCPU, torch::kDouble),
                        torch::full({size()}, std::nan(""), torch::kDouble));
  }

  void add_to(io::Checkpoint& checkpoint, const std::string& prefix) {
    checkpoint.tensors.emplace_back(prefix + "head_weight", &weight_);
    checkpoint.tensors.emplace_back(prefix + "head_bias", &bias_);
    checkpoint.tensors.emplace_back(prefix + "head_anchor_weight", &anchor_weight_);
    checkpoint.tensors.emplace_back(prefix + "head_anchor_bias", &anchor_bias_);
  }

  const torch::Tensor& head_weight() const { return weight_; }
  const torch::Tensor& head_bias() const { return bias_; }

  // Head m from rank `owner` to every rank.
  void broadcast_member(int64_t m, int owner, const distributed::Group& group) {
    group.broadcast_values({weight_[m], bias_[m]}, owner);
  }

 private:
  // Every head's outputs [M, B, K] for x.
  torch::Tensor outputs(const torch::Tensor& x) const {
    return heads(features(x).unsqueeze(0).expand({size(), -1, -1}), weight_, bias_);
  }

  // features [M, B, F] through the stacked heads -> outputs [M, B, K].
  static torch::Tensor heads(const torch::Tensor& features, const torch::Tensor& weight, const torch::Tensor& bias) {
    return torch::baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2));
  }

  // Features of D's samples [N, F], or (input_noise) of noisy_copies forward draws
  // of them, copy after copy [copies N, F].
  torch::Tensor dataset_features(const FeedbackDataset& data, torch::Device device, const MemberFitOptions& options,
                                 at::Generator& generator) const {
    torch::NoGradGuard no_grad;
    constexpr int64_t kChunk = 256;
    std::vector<torch::Tensor> chunks;
    const int64_t copies = options.input_noise ? options.noisy_copies : 1;
    for (int64_t c = 0; c < copies; ++c)
      for (int64_t start = 0; start < data.size(); start += kChunk) {
        torch::Tensor x = data.x().narrow(0, start, std::min(kChunk, data.size() - start)).to(device);
        if (options.input_noise) x = options.input_noise(x, generator);
        chunks.push_back(features(x));
      }
    return torch::cat(chunks);
  }

  Backbone backbone_;
  torch::Tensor weight_, bias_;
  torch::Tensor anchor_weight_, anchor_bias_;  // the heads when built
  Readout readout_;
};

}  // namespace diffctl::reward
