// Continuous-time q-learning on a 1-D two-mode Gaussian mixture, with the reward
// h(x) = -(x - target)^2 preferring the right tail (beta = 0: plain score matching).
// --conditional is the paper's Algorithm 2: the mode is the condition c, the score
// estimate uses the data of class c, and the reward h(x, c) = -(x - target_c)^2
// (--class-targets) gives each class its own preferred point.

#include <algorithm>
#include <iostream>
#include <vector>

#include "diffctl/data/toy.hpp"
#include "diffctl/io/plots.hpp"
#include "qlearning_example.hpp"

using namespace diffctl;

int main(int argc, char** argv) {
  CLI::App app{"q-learning on a 1-D Gaussian mixture"};
  examples::QLearningFlags flags;
  flags.out = "out/qlearning_gmm1d";
  data::TwoModeOptions mixture;
  data::SquaredDistanceReward reward;
  int64_t data_size = 300;
  bool conditional = false;
  reward.class_targets = {-6.0, 6.0};
  examples::add_qlearning_flags(app, flags);
  app.add_flag("--conditional", conditional, "condition on the mode (class 0: -mode, 1: +mode)");
  app.add_option("--class-targets", reward.class_targets, "with --conditional: each class's preferred point")
      ->expected(2);
  app.add_option("--mode", mixture.mode, "the modes are at -mode and +mode")->check(CLI::PositiveNumber);
  app.add_option("--mode-std", mixture.std, "standard deviation of each mode")->check(CLI::PositiveNumber);
  app.add_option("--target", reward.target, "the reward's preferred point");
  app.add_option("--data-size", data_size, "training samples")->check(CLI::Range(2, 10000000));
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    keep_freed_memory();
    configure_threads(flags.threads);
    auto generator = seed_everything(flags.seed);
    const auto [points, components] = data::two_mode_mixture(data_size, generator, mixture);
    const examples::ExampleData data{points, conditional ? components : torch::Tensor{}};
    double lo = -mixture.mode - 4.0 * mixture.std, hi = mixture.mode + 4.0 * mixture.std;
    for (const double target : conditional ? reward.class_targets : std::vector<double>{reward.target}) {
      lo = std::min(lo, target - 2.0);
      hi = std::max(hi, target + 2.0);
    }
    const auto picture = [&](const torch::Tensor& samples, const torch::Tensor& reference) {
      return io::histogram_image(samples, reference, lo, hi);
    };
    return examples::run_qlearning(flags, data, reward, picture, generator);
  } catch (const std::exception& error) {
    std::cerr << "qlearning_gmm1d: " << error.what() << "\n";
    return 1;
  }
}
