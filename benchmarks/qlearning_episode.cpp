// Continuous-time q-learning: wall-clock time of one training episode at the
// paper's defaults (batch 300, T = 5, dt = 0.25 so 20 steps, 300 data points,
// both MLPs 64 wide, Adam), on the 1-D two-mode mixture and the 2-D Swiss roll,
// under both backends in float32: LibTorch (the default) and Eigen. An episode
// simulates the batch under the stochastic policy with the ratio score estimator,
// then takes one Adam step on the martingale loss. After the table, one line per
// problem gives the ratio of the two backends' times (medians when repeated).
// DDPO and DPOK iterations at the same sizes are timed the same way.
//
// Flags: `--threads N` (LibTorch's intra-op threads; default: the hardware's
// concurrency), then Google Benchmark's own `--benchmark_*` flags.

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdio>
#include <unistd.h>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/algorithms/qlearning_eigen.hpp"
#include "diffctl/data/toy.hpp"
#include "diffctl/models/eigen_mlp.hpp"
#include "diffctl/models/eigen_ratio_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/runtime.hpp"
#include "flags.hpp"

namespace {

using namespace diffctl;
using Schedule = sde::OrnsteinUhlenbeck;
using Estimate = models::RatioScore<Schedule>;

template <class Backend, class Reward>
void episodes(benchmark::State& state, const torch::Tensor& data, Reward reward) {
  const Schedule schedule({.horizon = 5.0});
  torch::manual_seed(3);  // the same initial weights under both backends
  algorithms::QLearning<Schedule, Estimate, Reward, sde::EulerMaruyama, Backend> learner(
      schedule, Estimate(schedule, data), data.size(1), 0, {.beta = 1.0}, reward);
  auto generator = make_generator(7);
  for (int warm_up = 0; warm_up < 3; ++warm_up) learner.train_episode(generator);
  // One iteration is one episode: the Time column is the time per episode.
  for (auto _ : state) benchmark::DoNotOptimize(learner.train_episode(generator).loss);
}

// DDPO or DPOK (Method) at the same sizes on the Swiss roll: one iteration samples
// 300 chains of 20 Euler-Maruyama steps with the policy mean as the score and
// takes DDPO's 4 clipped gradient steps, or DPOK's one step on policy and value.
template <template <class, class, class, class, class> class Method, class Backend, class Options>
void iterations(benchmark::State& state, Options options) {
  const Schedule schedule({.horizon = 5.0});
  torch::manual_seed(3);
  const models::TimeStateMlp pretrained(models::TimeStateMlpOptions{.state_dim = 2, .out_dim = 2});
  Method<Schedule, algorithms::PolicyScore, data::BoxReward, sde::EulerMaruyama, Backend> method(
      schedule, algorithms::PolicyScore(pretrained), data::BoxReward{}, algorithms::chain_shape(pretrained), options);
  auto generator = make_generator(7);
  for (int warm_up = 0; warm_up < 3; ++warm_up) method.train_iteration(generator);
  for (auto _ : state) benchmark::DoNotOptimize(method.train_iteration(generator).loss);
}

// The kernels an Eigen episode is made of, for its arithmetic floor: float GEMMs
// of the shapes the backend multiplies (hidden 64; per step and half batch in
// the forward pass, blocks of 256 columns in the backward pass) and the ratio
// estimator's exponentials over 300 data points. Counters: FLOP/s (G: 10^9)
// and seconds per exponential (n: nanoseconds).
void gemm(benchmark::State& state, char kind) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Index h = 64, n = kind == 'f' ? 150 : models::EigenMlp<float>::kBlock;
  const Matrix w = Matrix::Random(h, h), x = Matrix::Random(h, n);
  Matrix y = Matrix::Random(h, n), g = Matrix::Zero(h, h);
  for (auto _ : state) {
    if (kind == 'f') y.noalias() = w * x;                    // forward: W a
    else if (kind == 'w') g.noalias() += y * x.transpose();  // weight gradient: dz a^T
    else y.noalias() = w.transpose() * x;                    // input gradient: W^T dz
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(g.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * double(h * h * n) * double(state.iterations()), benchmark::Counter::kIsRate);
}

void exponentials(benchmark::State& state) {
  Eigen::ArrayXf distances = Eigen::ArrayXf::Random(300).abs() * 40.0f, buffer(300);
  for (auto _ : state) {
    buffer = distances;
    models::detail::exp_of_difference(0.0f, buffer.data(), buffer.size());
    benchmark::DoNotOptimize(buffer.data());
  }
  state.counters["time/exp"] =
      benchmark::Counter(300.0 * double(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// The console table, then eigen / libtorch per problem from the same run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal (the reporter is ours, so --benchmark_color does not reach it).
  RatioReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      // A repeated benchmark's median, else its single run.
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const std::string name = run.run_name.function_name;
      if (median || (run.run_type == Run::RT_Iteration && !medians_.contains(name) && run.repetitions <= 1))
        (median ? medians_ : singles_)[name] = run.GetAdjustedRealTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    for (const char* base : {"qlearning_episode/gmm1d", "qlearning_episode/swiss_roll", "ddpo_iteration/swiss_roll",
                             "dpok_iteration/swiss_roll"}) {
      const double* torch_time = find(std::string(base) + "/libtorch");
      const double* eigen_time = find(std::string(base) + "/eigen");
      if (torch_time && eigen_time)
        std::printf("%s: libtorch %.2f ms, eigen %.2f ms: eigen / libtorch = %.3f (%.1fx faster)\n", base, *torch_time,
                    *eigen_time, *eigen_time / *torch_time, *torch_time / *eigen_time);
    }
  }

 private:
  const double* find(const std::string& name) const {
    if (const auto it = medians_.find(name); it != medians_.end()) return &it->second;
    if (const auto it = singles_.find(name); it != singles_.end()) return &it->second;
    return nullptr;
  }
  std::map<std::string, double> medians_, singles_;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto threads = bench::take_threads_flag(argc, argv);
    keep_freed_memory();
    const int used = configure_threads(threads);
    benchmark::AddCustomContext("libtorch", TORCH_VERSION);
    benchmark::AddCustomContext("torch_threads", std::to_string(used));
    benchmark::AddCustomContext(
        "eigen", std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                     std::to_string(EIGEN_MINOR_VERSION) + " (" + Eigen::SimdInstructionSetsInUse() + ")");
    auto generator = make_generator(1);
    const torch::Tensor mixture = data::two_mode_mixture(300, generator).first;
    const torch::Tensor roll = data::swiss_roll(300, generator);
    using Torch = algorithms::TorchBackend;
    using Eigen32 = algorithms::EigenBackend<float>;
    const auto add = [](const char* name, auto run) {
      benchmark::RegisterBenchmark(name, run)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
    };
    add("qlearning_episode/gmm1d/libtorch",
        [=](benchmark::State& state) { episodes<Torch>(state, mixture, data::SquaredDistanceReward{}); });
    add("qlearning_episode/gmm1d/eigen",
        [=](benchmark::State& state) { episodes<Eigen32>(state, mixture, data::SquaredDistanceReward{}); });
    add("qlearning_episode/swiss_roll/libtorch",
        [=](benchmark::State& state) { episodes<Torch>(state, roll, data::BoxReward{}); });
    add("qlearning_episode/swiss_roll/eigen",
        [=](benchmark::State& state) { episodes<Eigen32>(state, roll, data::BoxReward{}); });
    const algorithms::DdpoOptions ddpo{.learning_rate = 1e-3};
    const algorithms::DpokOptions dpok{.learning_rate = 1e-3};
    add("ddpo_iteration/swiss_roll/libtorch",
        [=](benchmark::State& state) { iterations<algorithms::Ddpo, Torch>(state, ddpo); });
    add("ddpo_iteration/swiss_roll/eigen",
        [=](benchmark::State& state) { iterations<algorithms::Ddpo, Eigen32>(state, ddpo); });
    add("dpok_iteration/swiss_roll/libtorch",
        [=](benchmark::State& state) { iterations<algorithms::Dpok, Torch>(state, dpok); });
    add("dpok_iteration/swiss_roll/eigen",
        [=](benchmark::State& state) { iterations<algorithms::Dpok, Eigen32>(state, dpok); });
    for (const auto& [name, kind] : {std::pair{"eigen_kernels/gemm_forward_64x64x150", 'f'},
                                     std::pair{"eigen_kernels/gemm_weight_grad_64x256x64", 'w'},
                                     std::pair{"eigen_kernels/gemm_input_grad_64x64x256", 'i'}})
      benchmark::RegisterBenchmark(name, [kind = kind](benchmark::State& state) { gemm(state, kind); })->MinTime(1.0);
    benchmark::RegisterBenchmark("eigen_kernels/ratio_exp_300", exponentials)->MinTime(1.0);
    // The ratio lines go with the console table; --benchmark_format=csv or json
    // (benchmarks/run_all.sh reads csv) gets Google Benchmark's own reporter.
    const bool console = std::none_of(argv + 1, argv + argc, [](const char* arg) {
      const std::string_view flag(arg);
      return flag.starts_with("--benchmark_format=") && flag != "--benchmark_format=console";
    });
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    if (console) {
      RatioReporter reporter;
      benchmark::RunSpecifiedBenchmarks(&reporter);
    } else {
      benchmark::RunSpecifiedBenchmarks();
    }
    benchmark::Shutdown();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "qlearning_episode: %s\n", error.what());
    return 1;
  }
  return 0;
}
