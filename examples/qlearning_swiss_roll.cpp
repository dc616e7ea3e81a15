// Continuous-time q-learning on the 2-D Swiss roll, with the non-differentiable
// reward h(y) = 1 inside an axis-aligned box (by default the roll's upper half).

#include <iostream>

#include "diffctl/data/toy.hpp"
#include "diffctl/io/plots.hpp"
#include "qlearning_example.hpp"

using namespace diffctl;

int main(int argc, char** argv) {
  CLI::App app{"q-learning on the 2-D Swiss roll"};
  examples::QLearningFlags flags;
  flags.out = "out/qlearning_swiss_roll";
  data::SwissRollOptions roll;
  data::BoxReward box;
  int64_t data_size = 300;
  examples::add_qlearning_flags(app, flags);
  app.add_option("--roll-noise", roll.noise, "noise added to the roll")->check(CLI::NonNegativeNumber);
  app.add_option("--box-x-min", box.lo_x, "reward box");
  app.add_option("--box-x-max", box.hi_x, "reward box");
  app.add_option("--box-y-min", box.lo_y, "reward box");
  app.add_option("--box-y-max", box.hi_y, "reward box");
  app.add_option("--data-size", data_size, "training samples")->check(CLI::Range(2, 10000000));
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    require(box.lo_x < box.hi_x && box.lo_y < box.hi_y, "--box-*: expected min < max");
    keep_freed_memory();
    configure_threads(flags.threads);
    auto generator = seed_everything(flags.seed);
    const torch::Tensor data = data::swiss_roll(data_size, generator, roll);
    const auto picture = [](const torch::Tensor& samples, const torch::Tensor& reference) {
      return io::scatter_image(samples, reference, -3.5, 3.5);
    };
    return examples::run_qlearning(flags, {data, {}}, box, picture, generator);
  } catch (const std::exception& error) {
    std::cerr << "qlearning_swiss_roll: " << error.what() << "\n";
    return 1;
  }
}
