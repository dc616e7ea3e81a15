// Continuous-time q-learning on the 2-D Swiss roll, with the non-differentiable
// reward h(y) = 1 inside an axis-aligned box (by default the roll's upper half).

#include <iostream>

#include "toy_problems.hpp"

using namespace diffctl;

int main(int argc, char** argv) {
  CLI::App app{"q-learning on the 2-D Swiss roll"};
  examples::QLearningFlags flags;
  flags.out = "out/qlearning_swiss_roll";
  examples::SwissRollProblem problem;
  examples::add_qlearning_flags(app, flags);
  problem.add_flags(app);
  examples::add_data_size_flag(app, problem.data_size);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    keep_freed_memory();
    configure_threads(flags.threads);
    auto generator = seed_everything(flags.seed);
    const examples::ExampleData data = problem.data(generator, flags.seed);
    const auto picture = [&](const torch::Tensor& s, const torch::Tensor& r) { return problem.picture(s, r); };
    return examples::run_qlearning(flags, data, problem.box, picture, generator, examples::join_run(flags));
  } catch (const std::exception& error) {
    std::cerr << "qlearning_swiss_roll: " << error.what() << "\n";
    return 1;
  }
}
