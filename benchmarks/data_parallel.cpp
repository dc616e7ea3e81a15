// Data-parallel pretraining steps: the same global batch of the small UNet
// (pretrain_diffusion's default preset, 1x28x28) on however many processes the
// launcher started (scripts/launch P, torchrun, srun), each on its shard, the
// gradients summed over c10d before every AdamW step. The row's name carries the
// number of processes; images_per_second over the 1-process row is the scaling.
//
//   scripts/launch 2 build-bench/benchmarks/data_parallel --device cpu --benchmark_format=csv
//
// Every rank runs the same fixed number of iterations (collectives in lockstep);
// rank 0's output is the result.

#include <cstdint>
#include <iostream>
#include <string>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "diffctl/algorithms/denoising_pretraining.hpp"
#include "diffctl/distributed/c10d.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/schedules.hpp"
#include "flags.hpp"

namespace {

using namespace diffctl;

distributed::Group g_group;
torch::Device g_device = torch::kCPU;

// Global batches of pretrain_diffusion's small preset (64) and twice it.
void denoising_step(benchmark::State& state) {
  const int64_t batch = state.range(0);
  torch::manual_seed(0);
  models::UNet model(models::UNetOptions::small(28, 1, 0)), ema(models::UNetOptions::small(28, 1, 0));
  model->to(g_device);
  ema->to(g_device);
  algorithms::DenoisingTrainer<sde::VpCosine, models::UNet> trainer(sde::VpCosine{}, model, ema, {}, g_group);
  auto generator = make_generator(1);
  const torch::Tensor x0 = torch::rand({batch, 1, 28, 28}, generator).mul(2).sub(1).to(g_device);
  for (int warm_up = 0; warm_up < 2; ++warm_up) trainer.step(x0, {}, generator).loss.item<double>();
  for (auto _ : state) {
    // Reading the loss waits for the step (on CUDA too).
    benchmark::DoNotOptimize(trainer.step(x0, {}, generator).loss.item<double>());
  }
  state.counters["processes"] = g_group.size();
  state.counters["images_per_second"] =
      benchmark::Counter(double(batch) * double(state.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    diffctl::keep_freed_memory();
    const distributed::Launch launch = distributed::launch_from_environment();
    // Each process takes its share of the machine's cores unless --threads says.
    const auto requested = diffctl::bench::take_threads_flag(argc, argv);
    const int threads = diffctl::configure_threads(requested ? *requested : distributed::threads_per_process(launch));
    g_device = distributed::device_of(launch, diffctl::bench::take_device_flag(argc, argv));
    g_group = distributed::connect(launch, {.device = g_device});
    benchmark::AddCustomContext("libtorch", TORCH_VERSION);
    benchmark::AddCustomContext("torch_threads_per_process", std::to_string(threads));
    benchmark::AddCustomContext("device", g_device.str());
    const std::string name = "data_parallel/denoising_step/processes:" + std::to_string(g_group.size());
    benchmark::RegisterBenchmark(name.c_str(), denoising_step)
        ->Arg(64)
        ->Arg(128)
        ->Iterations(g_device.is_cuda() ? 50 : 8)  // the same on every rank
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    return diffctl::bench::run_benchmarks(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "data_parallel: " << error.what() << "\n";
    return 1;
  }
}
