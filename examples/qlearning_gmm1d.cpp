// Continuous-time q-learning on a 1-D two-mode Gaussian mixture, with the reward
// h(x) = -(x - target)^2 preferring the right tail (beta = 0: plain score matching).

#include <iostream>

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
  examples::add_qlearning_flags(app, flags);
  app.add_option("--mode", mixture.mode, "the modes are at -mode and +mode")->check(CLI::PositiveNumber);
  app.add_option("--mode-std", mixture.std, "standard deviation of each mode")->check(CLI::PositiveNumber);
  app.add_option("--target", reward.target, "the reward's preferred point");
  app.add_option("--data-size", data_size, "training samples")->check(CLI::Range(2, 10000000));
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    keep_freed_memory();
    configure_threads(flags.threads);
    auto generator = seed_everything(flags.seed);
    const torch::Tensor data = data::two_mode_mixture(data_size, generator, mixture).first;
    const double span = mixture.mode + 4.0 * mixture.std;
    const auto picture = [&](const torch::Tensor& samples, const torch::Tensor& reference) {
      return io::histogram_image(samples, reference, -span, std::max(span, reward.target + 2.0));
    };
    return examples::run_qlearning(flags, data, reward, picture, generator);
  } catch (const std::exception& error) {
    std::cerr << "qlearning_gmm1d: " << error.what() << "\n";
    return 1;
  }
}
