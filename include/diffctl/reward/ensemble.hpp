#pragma once
// The bootstrap ensemble: the UncertainReward of continuous SEIKO. M members, each
// fitted to its own bootstrap resample of the feedback dataset D, give
//
//   mean        r_hat(x, z) = (1 / M) sum_m r_m(x, z)
//   uncertainty g_hat(x, z) = sqrt( 1 / (M - 1) sum_m (r_m - r_hat)^2 )
//   optimistic  the reward the fine-tuning maximises, by the Optimism rule
//
//   auto members = reward::SharedBackboneHeads<models::ResNet18>::copies_of(weak, weak->fc(), 4, 0.1, gen);
//   reward::BootstrapEnsemble<decltype(members)> ensemble(std::move(members), {.seed = 3});
//   ensemble.fit(feedback);                       // after every round's labels
//   auto [mean, std, optimistic] = ensemble.estimate(x, z);
//
// Resampling is a policy type: BootstrapResample (N draws with replacement from
// D's N samples) or BernoulliMasks (bootstrapped DQN: each sample enters each
// member with probability p, fixed per sample as D grows). Both are seeded from the
// ensemble's seed and D's size, so a refit after a restart draws the same
// resamples and minibatches as the run that was interrupted.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/concepts.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/reward/feedback_dataset.hpp"
#include "diffctl/reward/members.hpp"
#include "diffctl/reward/optimism.hpp"
#include "diffctl/runtime.hpp"

namespace diffctl::reward {

// Sample weights [M, N]: member m's count of each of D's samples in a resample of
// N draws with replacement.
struct BootstrapResample {
  torch::Tensor weights(int64_t members, int64_t n, std::uint64_t, at::Generator& generator) const {
    const torch::Tensor draws = torch::randint(n, {members, n}, generator, torch::kLong);
    return torch::zeros({members, n}, torch::kDouble).scatter_add_(1, draws, torch::ones({members, n}, torch::kDouble));
  }
};

// Sample weights [M, N] in {0, 1}: sample i enters member m with probability p, by
// a hash of (seed, m, i), so a sample keeps its masks as the dataset grows.
struct BernoulliMasks {
  double p = 0.5;
  torch::Tensor weights(int64_t members, int64_t n, std::uint64_t seed, at::Generator&) const {
    require(p > 0.0 && p <= 1.0, "Bernoulli masks: p must lie in (0, 1], found ", p);
    torch::Tensor masks = torch::empty({members, n}, torch::kDouble);
    auto* out = masks.data_ptr<double>();
    for (int64_t m = 0; m < members; ++m)
      for (int64_t i = 0; i < n; ++i) {
        const std::uint64_t h = mix_seeds(mix_seeds(seed, std::uint64_t(m)), std::uint64_t(i));
        out[m * n + i] = double(h >> 11) * 0x1.0p-53 < p ? 1.0 : 0.0;
      }
    return masks;
  }
};

struct EnsembleOptions {
  MemberFitOptions fit{};
  std::uint64_t seed = 0;  // resamples, minibatches and Thompson draws
  // The processes that fit the members between them (member m on rank m % size),
  // with members that can be spread (SpreadableMembers); one process by default.
  distributed::Group group{};
};

// mean, uncertainty and optimistic reward [B] from one pass of the members.
struct RewardEstimate {
  torch::Tensor mean, uncertainty, optimistic;
};

struct EnsembleFitReport {
  torch::Tensor member_loss;  // [M], each member's loss at its last step (NaN: not fitted)
  int64_t samples = 0;        // |D|
  double seconds = 0.0;
};

template <EnsembleMembers Members, class Optimism = optimism::MeanPlusStd,
          ResamplingScheme Resampling = BootstrapResample>
  requires OptimismRule<Optimism, Members>
class BootstrapEnsemble {
 public:
  explicit BootstrapEnsemble(Members members, EnsembleOptions options = {}, Optimism optimism = {},
                             Resampling resampling = {})
      : members_(std::move(members)),
        options_(options),
        optimism_(std::move(optimism)),
        resampling_(std::move(resampling)),
        thompson_(make_generator(mix_seeds(options.seed, 0x7470ull))) {
    require(members_.size() >= 2, "reward ensemble: needs M >= 2 members for an uncertainty, found ", members_.size());
  }

  // Refits every member on its own resample of D (warm-started from its current
  // weights) and refreshes what the optimism rule derives from D.
  EnsembleFitReport fit(const FeedbackDataset& data) {
    require(!data.empty(), "reward ensemble: cannot fit on an empty feedback dataset");
    const auto start = std::chrono::steady_clock::now();
    at::Generator generator = make_generator(mix_seeds(options_.seed, std::uint64_t(data.size())));
    const torch::Tensor weights = resampling_.weights(size(), data.size(), options_.seed, generator);
    EnsembleFitReport report{fit_members(data, weights, generator), data.size(), 0.0};
    refresh(data);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

  // Rebuilds the state the optimism rule derives from D (the feature Gram matrix
  // of FeatureUcb), e.g. after the members were restored from a checkpoint.
  void refresh(const FeedbackDataset& data) {
    if constexpr (requires(Optimism & o, const torch::Tensor& t) { o.observe(t); }) {
      torch::NoGradGuard no_grad;
      constexpr int64_t kChunk = 256;
      std::vector<torch::Tensor> features;
      const auto device = members_.device();
      for (int64_t start = 0; start < data.size(); start += kChunk)
        features.push_back(
            members_.features(data.x().narrow(0, start, std::min(kChunk, data.size() - start)).to(device)));
      optimism_.observe(torch::cat(features));
    }
  }

  // Member predictions [M, B] for x [B, ...] and z [B] (undefined: unconditional).
  torch::Tensor predictions(const torch::Tensor& x, const torch::Tensor& z) const { return members_.predict(x, z); }

  torch::Tensor mean(const torch::Tensor& x, const torch::Tensor& z) const { return member_mean(predictions(x, z)); }
  torch::Tensor uncertainty(const torch::Tensor& x, const torch::Tensor& z) const {
    return member_std(predictions(x, z));
  }
  torch::Tensor optimistic(const torch::Tensor& x, const torch::Tensor& z) {
    return optimism_(predictions(x, z), x, members_, thompson_);
  }
  // The optimistic reward of x [B, ...] under each of the conditions [P] (say
  // every class, to tilt one pool of samples toward each prompt): [B, P], what P
  // calls of optimistic(x, z) give, in their order (the same Thompson draws).
  // Members that predict for several conditions at once (MembersForEachCondition:
  // heads on a shared backbone) read x once instead of P times.
  torch::Tensor optimistic_each(const torch::Tensor& x, const torch::Tensor& conditions) {
    return each_condition(x, conditions, [&](const torch::Tensor& p) { return optimism_(p, x, members_, thompson_); });
  }
  // The members' mean reward of x under each of the conditions: [B, P] (the greedy
  // reward, e.g. for the model a run delivers after exploring optimistically).
  torch::Tensor mean_each(const torch::Tensor& x, const torch::Tensor& conditions) const {
    return each_condition(x, conditions, [](const torch::Tensor& p) { return member_mean(p); });
  }

  RewardEstimate estimate(const torch::Tensor& x, const torch::Tensor& z) {
    const torch::Tensor p = predictions(x, z);
    return {member_mean(p), member_std(p), optimism_(p, x, members_, thompson_)};
  }

  // The members' weights and the Thompson generator, for a round's checkpoint. After
  // loading one, call refresh(D).
  void add_to(io::Checkpoint& checkpoint, const std::string& prefix = "reward_") {
    members_.add_to(checkpoint, prefix);
    checkpoint.generators.emplace_back(prefix + "thompson", thompson_);
  }

  int64_t size() const { return members_.size(); }
  Members& members() { return members_; }
  Optimism& optimism() { return optimism_; }
  const EnsembleOptions& options() const { return options_; }

 private:
  // rule(member predictions [M, B]) -> [B] for each of the conditions, stacked
  // to [B, P] in their order.
  template <class Rule>
  torch::Tensor each_condition(const torch::Tensor& x, const torch::Tensor& conditions, Rule&& rule) const {
    require(conditions.defined() && conditions.dim() == 1 && conditions.scalar_type() == torch::kLong,
            "reward ensemble: conditions must be int64 [P], found ",
            conditions.defined() ? std::string(toString(conditions.scalar_type())) : std::string("undefined"), " ",
            conditions.defined() ? conditions.sizes() : torch::IntArrayRef{});
    const int64_t batch = x.size(0);
    torch::Tensor each;  // [M, B, P]
    if constexpr (MembersForEachCondition<Members>) each = members_.predict_each(x, conditions);
    std::vector<torch::Tensor> columns;
    for (int64_t c = 0; c < conditions.size(0); ++c)
      columns.push_back(rule(each.defined() ? each.select(2, c) : predictions(x, conditions[c].expand({batch}))));
    return torch::stack(columns, 1);
  }

  // Every member fitted, here or (in a group, members spread) on its owner rank:
  // the others' weights are zero here, which leaves them as they are, and the
  // minibatches are drawn for all members alike, so each is fitted as one process
  // fits it. Returns each member's last loss.
  torch::Tensor fit_members(const FeedbackDataset& data, const torch::Tensor& weights, at::Generator& generator) {
    const distributed::Group& group = options_.group;
    if constexpr (SpreadableMembers<Members>) {
      if (!group.alone()) {
        const torch::Tensor owned = torch::arange(size(), torch::kLong).remainder(group.size()).eq(group.rank());
        const torch::Tensor loss =
            members_.fit(data, weights * owned.unsqueeze(1).to(weights.dtype()), options_.fit, generator);
        for (int64_t m = 0; m < size(); ++m) members_.broadcast_member(m, static_cast<int>(m % group.size()), group);
        return group.all_reduce_sum(torch::where(owned, loss, torch::zeros_like(loss)));
      }
    }
    return members_.fit(data, weights, options_.fit, generator);
  }

  Members members_;
  EnsembleOptions options_;
  Optimism optimism_;
  Resampling resampling_;
  at::Generator thompson_;
};

}  // namespace diffctl::reward
