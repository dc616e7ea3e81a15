// Continuous-time q-learning: wall-clock time of one training episode at the
// paper's defaults (batch 300, T = 5, dt = 0.25 so 20 steps, 300 data points,
// both MLPs 64 wide, Adam), on the 1-D two-mode mixture and the 2-D Swiss roll.
// An episode simulates the batch under the stochastic policy with the ratio score
// estimator, then takes one Adam step on the martingale loss.
//
// Flags: `--threads N` (default: the hardware's concurrency), then Google
// Benchmark's own `--benchmark_*` flags.

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/data/toy.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/runtime.hpp"
#include "flags.hpp"

namespace {

using namespace diffctl;
using Schedule = sde::OrnsteinUhlenbeck;
using Estimate = models::RatioScore<Schedule>;

template <class Reward>
void episodes(benchmark::State& state, const torch::Tensor& data, Reward reward) {
  const Schedule schedule({.horizon = 5.0});
  algorithms::QLearning<Schedule, Estimate, Reward> learner(
      schedule, Estimate(schedule, data), data.size(1), 0, {.beta = 1.0}, reward);
  auto generator = make_generator(7);
  for (int warm_up = 0; warm_up < 3; ++warm_up) learner.train_episode(generator);
  // One iteration is one episode: the Time column is the time per episode.
  for (auto _ : state) benchmark::DoNotOptimize(learner.train_episode(generator).loss);
}

}  // namespace

int main(int argc, char** argv) {
  int kept = 1;
  std::optional<int> threads;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else argv[kept++] = argv[i];
  }
  argc = kept;
  try {
    keep_freed_memory();
    const int used = configure_threads(threads);
    benchmark::AddCustomContext("libtorch", TORCH_VERSION);
    benchmark::AddCustomContext("torch_threads", std::to_string(used));
    auto generator = make_generator(1);
    const torch::Tensor mixture = data::two_mode_mixture(300, generator).first;
    const torch::Tensor roll = data::swiss_roll(300, generator);
    benchmark::RegisterBenchmark("qlearning_episode/gmm1d", [=](benchmark::State& state) {
      episodes(state, mixture, data::SquaredDistanceReward{});
    })->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
    benchmark::RegisterBenchmark("qlearning_episode/swiss_roll", [=](benchmark::State& state) {
      episodes(state, roll, data::BoxReward{});
    })->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
    return diffctl::bench::run_benchmarks(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "qlearning_episode: %s\n", error.what());
    return 1;
  }
  return 0;
}
