// Continuous-time q-learning on a 1-D two-mode Gaussian mixture, with the reward
// h(x) = -(x - target)^2 preferring the right tail (beta = 0: plain score matching).
// --conditional is the paper's Algorithm 2: the mode is the condition c, the score
// estimate uses the data of class c, and the reward h(x, c) = -(x - target_c)^2
// (--class-targets) gives each class its own preferred point.

#include <iostream>

#include "toy_problems.hpp"

using namespace diffctl;

int main(int argc, char** argv) {
  CLI::App app{"q-learning on a 1-D Gaussian mixture"};
  examples::QLearningFlags flags;
  flags.out = "out/qlearning_gmm1d";
  examples::MixtureProblem problem;
  examples::add_qlearning_flags(app, flags);
  problem.add_flags(app);
  examples::add_data_size_flag(app, problem.data_size);
  problem.add_conditional_flags(app);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    keep_freed_memory();
    configure_threads(flags.threads);
    auto generator = seed_everything(flags.seed);
    const examples::ExampleData data = problem.data(generator, flags.seed);
    const auto picture = [&](const torch::Tensor& s, const torch::Tensor& r) { return problem.picture(s, r); };
    return examples::run_qlearning(flags, data, problem.reward, picture, generator, examples::join_run(flags));
  } catch (const std::exception& error) {
    std::cerr << "qlearning_gmm1d: " << error.what() << "\n";
    return 1;
  }
}
