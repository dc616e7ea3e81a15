// Solver throughput: reverse-process steps per second of a whole sde::integrate()
// over a fixed grid, for every solver, on two drifts:
//
//   gmm2d:  a batch of 4096 2-D states, analytic GaussianMixtureScore drift
//           (4 isotropic components), i.e. the cost of the solver and integrator
//           themselves on a cheap model;
//   conv28: a batch of 64 images 1x28x28, a stand-in convolutional score network
//           (Conv 1->32, SiLU, Conv 32->32, SiLU, Conv 32->1, all 3x3 padding 1),
//           i.e. the network-bound case. The network ignores t and z: it only
//           has to cost what a small score network costs.
//
// Every run integrates kSteps uniform steps of VpLinear from t = 0 (noise) to
// t = T (data) in float32 on the CPU, without recording, under NoGradGuard. Time
// is wall-clock (intra-op threads run in parallel), and the counters are
//
//   steps/s     grid steps per second (kIsRate);
//   time/step   seconds per grid step (kIsRate | kInvert);
//   evals/step  score evaluations per step, counted: 1 for every solver except
//               Heun, which evaluates at both ends of a step (2), bar the last
//               step into sigma = 0, where it keeps its Euler predictor.
//
// Flags: `--threads N` (LibTorch intra-op threads; default: the hardware's
// concurrency) is taken out of argv before Google Benchmark reads its own
// `--benchmark_*` flags.

#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/time_grid.hpp"
#include "flags.hpp"

namespace {

namespace sde = diffctl::sde;

constexpr std::size_t kSteps = 100;
constexpr std::uint64_t kSeed = 20240601;
constexpr std::int64_t kGmmBatch = 4096;
constexpr std::int64_t kImageBatch = 64;

// Forwards to a model and counts its score evaluations, so evals/step is measured
// rather than assumed.
template <diffctl::DriftModel Model>
struct CountingModel {
  const Model& model;
  mutable std::int64_t evaluations = 0;

  torch::Tensor score(double t, const torch::Tensor& x, const torch::Tensor& z) const {
    ++evaluations;
    return model.score(t, x, z);
  }
};

// The stand-in score network of the conv28 case: score = net(x); t and z unused.
struct ConvScore {
  torch::nn::Sequential net;

  ConvScore() {
    namespace nn = torch::nn;
    const auto conv = [](std::int64_t in, std::int64_t out) {
      return nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1));
    };
    net = nn::Sequential(conv(1, 32), nn::SiLU(), conv(32, 32), nn::SiLU(), conv(32, 1));
    net->eval();
  }

  torch::Tensor score(double, const torch::Tensor& x, const torch::Tensor&) const {
    // ptr() hands out the module itself: Sequential's forward is not const.
    return net.ptr()->forward(x);
  }
};

static_assert(diffctl::DriftModel<ConvScore>);

using GmmScore = diffctl::models::GaussianMixtureScore<sde::VpLinear>;

// Four equally weighted components at (+-2, +-2) with standard deviation 0.5.
GmmScore make_gmm(const sde::VpLinear& schedule) {
  const torch::Tensor means = torch::tensor({2.0, 2.0, 2.0, -2.0, -2.0, 2.0, -2.0, -2.0}, torch::kDouble).view({4, 2});
  return GmmScore(schedule, means, torch::full({4}, 0.5, torch::kDouble), torch::ones({4}, torch::kDouble));
}

// One benchmark run: integrate the whole grid from the same initial state, once
// per iteration; the noise comes from one seeded generator per run.
template <diffctl::DriftModel Model, class Solver>
void integrate_steps(benchmark::State& state, const sde::VpLinear& schedule, const Model& model, const Solver& solver,
                     const torch::Tensor& x_init) {
  const torch::NoGradGuard no_grad;
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), kSteps);
  sde::IntegrateOptions options;
  options.record_x0 = false;
  options.generator = diffctl::make_generator(kSeed);
  const CountingModel<Model> counted{model};

  // Two untimed steps first: the first calls pay for allocations and kernel setup.
  sde::IntegrateOptions warm_up;
  warm_up.record_x0 = false;
  warm_up.generator = diffctl::make_generator(kSeed + 1);
  sde::integrate(schedule, model, solver, sde::TimeGrid::uniform(schedule.horizon(), 2), x_init, torch::Tensor{},
                 warm_up);

  for (auto _ : state) {
    sde::Trajectory trajectory = sde::integrate(schedule, counted, solver, grid, x_init, torch::Tensor{}, options);
    benchmark::DoNotOptimize(trajectory.final_state.data_ptr());
  }

  const auto steps = static_cast<double>(state.iterations()) * static_cast<double>(kSteps);
  state.counters["steps/s"] = benchmark::Counter(steps, benchmark::Counter::kIsRate);
  state.counters["time/step"] = benchmark::Counter(steps, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["evals/step"] = static_cast<double>(counted.evaluations) / steps;
}

// Registers one row per solver for a drift model and an initial state.
template <diffctl::DriftModel Model>
void register_case(const std::string& case_name, const sde::VpLinear& schedule, std::shared_ptr<const Model> model,
                   const torch::Tensor& x_init) {
  const auto add = [&](const std::string& solver_name, auto solver) {
    benchmark::RegisterBenchmark((case_name + "/" + solver_name).c_str(),
                                 [schedule, model, solver, x_init](benchmark::State& state) {
                                   integrate_steps(state, schedule, *model, solver, x_init);
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  };
  add(std::string(sde::EulerMaruyama::name), sde::EulerMaruyama{});
  add(std::string(sde::ProbabilityFlowEuler::name), sde::ProbabilityFlowEuler{});
  add(std::string(sde::Heun::name), sde::Heun{});
  add("ddim-eta0", sde::Ddim(sde::DdimOptions{.eta = 0.0}));
  add("ddim-eta1", sde::Ddim(sde::DdimOptions{.eta = 1.0}));
  add(std::string(sde::Ddpm::name), sde::Ddpm{});
}

}  // namespace

int main(int argc, char** argv) {
  try {
    diffctl::keep_freed_memory();
    const int threads = diffctl::configure_threads(diffctl::bench::take_threads_flag(argc, argv));
    benchmark::AddCustomContext("libtorch", TORCH_VERSION);
    benchmark::AddCustomContext("torch_threads", std::to_string(threads));
    benchmark::AddCustomContext(
        "grid", std::to_string(kSteps) + " uniform steps, " + std::string(sde::VpLinear::name) + ", float32, cpu");

    torch::manual_seed(kSeed);
    const sde::VpLinear schedule;
    auto generator = diffctl::make_generator(kSeed);

    register_case<GmmScore>("gmm2d_b" + std::to_string(kGmmBatch), schedule,
                            std::make_shared<const GmmScore>(make_gmm(schedule)),
                            sde::sample_prior(schedule, {kGmmBatch, 2}, generator));
    register_case<ConvScore>("conv28_b" + std::to_string(kImageBatch), schedule, std::make_shared<const ConvScore>(),
                             sde::sample_prior(schedule, {kImageBatch, 1, 28, 28}, generator));

    return diffctl::bench::run_benchmarks(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "solver_steps: %s\n", error.what());
    return 1;
  }
}
