#pragma once
// The two problems of the q-learning paper's experiments, as every example that
// trains or fine-tunes on them sees them: the data (with its flags), the reward,
// a source of fresh data for the evaluation, and the picture. qlearning_gmm1d,
// qlearning_swiss_roll and finetune_compare build them from the same flags, so a
// fine-tuning run sees exactly the data its pretrained model learned.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

#include "diffctl/data/toy.hpp"
#include "diffctl/io/plots.hpp"
#include "qlearning_example.hpp"

namespace diffctl::examples {

// The training set's size, a flag of every example (the problems' flags leave it out,
// so that finetune_compare can take both problems' flags).
inline void add_data_size_flag(CLI::App& app, int64_t& data_size) {
  app.add_option("--data-size", data_size, "training samples (the pretrained model's, when fine-tuning)")
      ->check(CLI::Range(2, 10000000));
}

// The training set is drawn from the run's generator; fresh data for the
// evaluation comes from a generator of its own (seeded from the run's seed), so
// that evaluating does not shift the training run's random numbers.
inline constexpr std::uint64_t kFreshDataSeedOffset = 0x5eed'f4e5;

// The 2-D Swiss roll (scikit-learn's make_swiss_roll in its (x, z) plane, at the
// paper's scale and noise by default) with the reward 1 inside a box.
struct SwissRollProblem {
  data::SwissRollOptions roll;
  data::BoxReward box;
  int64_t data_size = 300;

  void add_flags(CLI::App& app) {
    app.add_option("--roll-noise", roll.noise, "standard deviation of the noise added to the roll")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--roll-scale", roll.scale, "factor applied to the roll's coordinates (1: scikit-learn's)")
        ->check(CLI::PositiveNumber);
    app.add_option("--box-x-min", box.lo_x, "reward box");
    app.add_option("--box-x-max", box.hi_x, "reward box");
    app.add_option("--box-y-min", box.lo_y, "reward box");
    app.add_option("--box-y-max", box.hi_y, "reward box");
  }

  ExampleData data(at::Generator& generator, std::uint64_t seed) const {
    require(box.lo_x < box.hi_x && box.lo_y < box.hi_y, "--box-*: expected min < max");
    const data::SwissRollOptions options = roll;
    return {data::swiss_roll(data_size, generator, options),
            {},
            [options](int64_t n, at::Generator& g) {
              return std::pair{data::swiss_roll(n, g, options), torch::Tensor{}};
            },
            seed + kFreshDataSeedOffset};
  }

  // The roll's extent: u |cos u|, u |sin u| <= 4.5 pi, plus three noise deviations.
  torch::Tensor picture(const torch::Tensor& samples, const torch::Tensor& reference) const {
    const double half = roll.scale * (4.5 * std::numbers::pi + 3.0 * roll.noise);
    return io::scatter_image(samples, reference, -half, half);
  }
};

// The 1-D mixture of two Gaussians with the reward -(x - target)^2 (or, with
// --conditional, the mode as the class and a target per class).
struct MixtureProblem {
  data::TwoModeOptions mixture;
  data::SquaredDistanceReward reward{.target = 6.0, .class_targets = {-6.0, 6.0}};
  int64_t data_size = 300;
  bool conditional = false;

  void add_flags(CLI::App& app) {
    app.add_option("--mode", mixture.mode, "the modes are at -mode and +mode")->check(CLI::PositiveNumber);
    app.add_option("--mode-std", mixture.std, "standard deviation of each mode")->check(CLI::PositiveNumber);
    app.add_option("--target", reward.target, "the reward's preferred point");
  }
  // Only the examples that train a conditional model take these.
  void add_conditional_flags(CLI::App& app) {
    app.add_flag("--conditional", conditional, "condition on the mode (class 0: -mode, 1: +mode)");
    app.add_option("--class-targets", reward.class_targets, "with --conditional: each class's preferred point")
        ->expected(2);
  }

  ExampleData data(at::Generator& generator, std::uint64_t seed) const {
    const data::TwoModeOptions options = mixture;
    const bool labelled = conditional;
    auto [points, components] = data::two_mode_mixture(data_size, generator, options);
    return {points, labelled ? components : torch::Tensor{},
            [options, labelled](int64_t n, at::Generator& g) {
              auto [x, c] = data::two_mode_mixture(n, g, options);
              return std::pair{x, labelled ? c : torch::Tensor{}};
            },
            seed + kFreshDataSeedOffset};
  }

  torch::Tensor picture(const torch::Tensor& samples, const torch::Tensor& reference) const {
    double lo = -mixture.mode - 4.0 * mixture.std, hi = mixture.mode + 4.0 * mixture.std;
    for (const double target : conditional ? reward.class_targets : std::vector<double>{reward.target}) {
      lo = std::min(lo, target - 2.0);
      hi = std::max(hi, target + 2.0);
    }
    return io::histogram_image(samples, reference, lo, hi);
  }
};

}  // namespace diffctl::examples
