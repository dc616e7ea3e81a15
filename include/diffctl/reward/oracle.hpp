#pragma once
// The oracle: the expensive ground-truth reward of online fine-tuning (in practice a
// human rating; here a strong classifier or an analytic function), answered with
// label noise and paid for per query.
//
//   reward::Oracle oracle(reward::ClassifierReward<models::ResNet18>(strong),
//                         {.noise_std = 0.05, .budget = 4096, .seed = 1});
//   torch::Tensor y = oracle.query(x, z);   // r(x, z) + eps, counts x.size(0) queries
//   oracle.record(feedback, x, z, round);   // the same, the labels stored in the dataset
//
// Every query counts against the budget; a request that would exceed it is refused
// whole, before anything is answered, so no label is ever paid for and dropped.
// The noise has its own generator, and state()/restore() carry the count and that
// generator across a restart (the feedback dataset stores them with the labels).

#include <concepts>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/runtime.hpp"

namespace diffctl::reward {

// Whether a classifier's reward is p(z | x) or log p(z | x).
enum class RewardScale { probability, log_probability };

// p(z | x) (or its log) from logits [..., K] and classes z broadcastable to the
// logits' leading shape (z [B] for logits [B, K], or [M, B] with stacked heads
// [M, B, K]) -> the leading shape.
inline torch::Tensor class_reward(const torch::Tensor& logits, const torch::Tensor& z, RewardScale scale) {
  require(z.defined() && z.dim() >= 1 && z.scalar_type() == torch::kLong,
          "class reward: z must be int64 class indices [B], found ",
          z.defined() ? std::string(toString(z.scalar_type())) : std::string("undefined"), " ",
          z.defined() ? z.sizes() : torch::IntArrayRef{});
  require(logits.dim() >= 2 && logits.dim() > z.dim() && logits.size(-2) == z.size(-1), "class reward: ", z.size(-1),
          " classes z for logits ", logits.sizes(), " (expected [..., B, K] with B = ", z.size(-1), ")");
  const int64_t classes = logits.size(-1);
  // A device-side range check would synchronise; on the CPU it is free.
  if (z.device().is_cpu() && z.numel() > 0) {
    const auto [low, high] = torch::aminmax(z);
    require(low.item<int64_t>() >= 0 && high.item<int64_t>() < classes, "class reward: z must lie in [0, ", classes,
            "), found values in [", low.item<int64_t>(), ", ", high.item<int64_t>(), "]");
  }
  const torch::Tensor index = z.to(logits.device()).expand(logits.sizes().slice(0, logits.dim() - 1)).unsqueeze(-1);
  const torch::Tensor log_p = torch::log_softmax(logits, -1).gather(-1, index).squeeze(-1);
  return scale == RewardScale::probability ? log_p.exp() : log_p;
}

// r(x, z) = p(z | x) under a classifier (a module holder mapping images to logits),
// or log p(z | x). The classifier is put in evaluation mode. Differentiable in x.
template <class Net>
class ClassifierReward {
 public:
  explicit ClassifierReward(Net classifier, RewardScale scale = RewardScale::probability)
      : classifier_(std::move(classifier)), scale_(scale) {
    classifier_->eval();
  }

  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& z) const {
    require(z.defined(), "classifier reward: needs the prompted classes z");
    require(z.dim() == 1 && z.size(0) == x.size(0), "classifier reward: ", x.size(0), " samples but z is ", z.sizes());
    return class_reward(classifier_.ptr()->forward(x), z, scale_);
  }

  Net& classifier() { return classifier_; }
  RewardScale scale() const { return scale_; }

 private:
  Net classifier_;
  RewardScale scale_;
};

struct OracleOptions {
  double noise_std = 0.0;  // sigma of the Gaussian label noise eps
  // Most queries the oracle answers in its life; none: unlimited.
  std::optional<int64_t> budget = std::nullopt;
  std::uint64_t seed = 0;  // the noise generator's seed
};

// What a restart needs to continue an oracle: queries answered so far and the
// noise generator's state (CPU generator bytes).
struct OracleState {
  int64_t queries = 0;
  torch::Tensor generator_state{};
};

// Thrown when a query would exceed the oracle's budget.
class BudgetExhausted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <RewardFunction Reward>
class Oracle {
 public:
  explicit Oracle(Reward reward, OracleOptions options = {})
      : reward_(std::move(reward)), options_(options), generator_(make_generator(options.seed)) {
    require(std::isfinite(options.noise_std) && options.noise_std >= 0.0,
            "oracle: noise_std must be finite and >= 0, found ", options.noise_std);
    require(!options.budget || *options.budget >= 0, "oracle: budget must be >= 0, found ", options.budget.value_or(0));
  }

  // y = r(x, z) + eps for the B samples of x [B, ...]; B queries. Refused whole
  // (BudgetExhausted) when fewer than B remain. No gradient flows through y.
  torch::Tensor query(const torch::Tensor& x, const torch::Tensor& z) {
    require(x.defined() && x.dim() >= 1 && x.size(0) >= 1, "oracle: x must be a non-empty batch [B, ...]");
    const int64_t batch = x.size(0);
    if (options_.budget && queries_ + batch > *options_.budget)
      throw BudgetExhausted("oracle: budget exhausted: " + std::to_string(batch) + " queries asked, " +
                            std::to_string(*options_.budget - queries_) + " of " + std::to_string(*options_.budget) +
                            " left");
    torch::Tensor truth = ground_truth(x, z);
    require(truth.dim() == 1 && truth.size(0) == batch, "oracle: the reward must give [", batch, "] values, gave ",
            truth.sizes());
    torch::Tensor y = truth.to(torch::kDouble);
    if (options_.noise_std > 0.0)
      y = y + options_.noise_std * torch::randn({batch}, generator_, torch::kDouble).to(y.device());
    queries_ += batch;
    return y;
  }

  // The noiseless r(x, z), for measuring an experiment (oracle reward of the
  // generated samples). Not a query: it is not counted and draws no noise.
  torch::Tensor ground_truth(const torch::Tensor& x, const torch::Tensor& z) const {
    torch::NoGradGuard no_grad;
    return torch::Tensor(reward_(x, z)).detach();
  }

  int64_t queries() const { return queries_; }
  std::optional<int64_t> remaining() const {
    return options_.budget ? std::optional<int64_t>(*options_.budget - queries_) : std::nullopt;
  }
  const OracleOptions& options() const { return options_; }
  Reward& reward() { return reward_; }

  // Asks about x [B, ...] under z and appends the labels, with this oracle's state
  // after answering, to `data` (a FeedbackDataset; on disk when it is bound): the
  // one call a round makes, so a paid-for label is stored before anything else
  // happens. Returns the labels [B].
  template <class Dataset>
  torch::Tensor record(Dataset& data, const torch::Tensor& x, const torch::Tensor& z, int64_t round) {
    const torch::Tensor y = query(x, z);
    data.append(x, z, y, round, state());
    return y;
  }
  // The labels record() stores are there at once: nothing to wait for.
  template <class Dataset>
  void wait(Dataset&, int64_t) const {}

  OracleState state() const { return {queries_, generator_.get_state()}; }
  void restore(const OracleState& state) {
    require(state.queries >= 0 && (!options_.budget || state.queries <= *options_.budget), "oracle: cannot restore ",
            state.queries, " queries answered under a budget of ",
            options_.budget.value_or(std::numeric_limits<int64_t>::max()));
    require(state.generator_state.defined(), "oracle: restoring needs the noise generator's state");
    generator_.set_state(state.generator_state);
    queries_ = state.queries;
  }

 private:
  Reward reward_;
  OracleOptions options_;
  at::Generator generator_;
  int64_t queries_ = 0;
};

}  // namespace diffctl::reward
