// The image sampler through the library against the same arithmetic by hand, and
// the memory of backpropagating through it.
//
//   sampling/library    sde::integrate with DDPM (posterior variance) on the small
//                       UNet behind EpsilonScore: batch 64 of 1x28x28, 25 steps,
//                       no gradients;
//   sampling/hand       the same steps as a plain LibTorch loop: eps = net(x, s),
//                       mean = (x - b^2/sigma eps) / a, x = mean + std * noise. Before
//                       timing, both are run from the same noise and must agree to
//                       1e-5, so the two compute the same function;
//   backprop/K/W        forward and backward through K DDPM steps of batch 16 into
//                       the UNet's weights, gradients kept for the last W steps only (the truncation of
//                       IntegrateOptions::backprop_steps; W = 0: all K). Counter
//                       peak_MiB: the growth of the process's peak resident memory
//                       over one forward + backward (run one K per process, see
//                       benchmarks/README.md: freed memory is reused, so only the
//                       first iteration in a process shows the peak).
//
// Counter images/s for sampling (kIsRate). Each iteration ends by reading one
// number of the output, so asynchronous CUDA work is inside the timing.
// Flags: `--threads N`, `--device cpu|cuda`.

#include <cmath>
#include <cstdint>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "diffctl/models/epsilon_score.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"
#include "flags.hpp"

namespace {

using namespace diffctl;

constexpr int64_t kSteps = 25;
torch::Device g_device = torch::kCPU;

models::UNet small_unet(bool trainable) {
  torch::manual_seed(1);
  models::UNet net(models::UNetOptions::small(28, 1, 0));
  net->to(g_device);
  net->eval();
  for (auto& p : net->parameters()) p.requires_grad_(trainable);
  return net;
}

torch::Tensor library_sample(const models::UNet& net, int64_t batch, uint64_t seed) {
  const sde::VpCosine schedule;
  const models::EpsilonScore<sde::VpCosine, models::UNet> score(schedule, net);
  auto generator = make_generator(seed);
  const torch::Tensor x = schedule.sigma(schedule.horizon()) *
                          standard_normal({batch, 1, 28, 28}, generator, torch::TensorOptions().device(g_device));
  sde::IntegrateOptions options;
  options.generator = generator;
  return sde::integrate(schedule, score, sde::Ddpm{}, sde::TimeGrid::uniform(schedule.horizon(), kSteps), x, {},
                        options)
      .final_state;
}

torch::Tensor hand_sample(const models::UNet& net, int64_t batch, uint64_t seed) {
  torch::NoGradGuard no_grad;
  const sde::VpCosine schedule;
  const double horizon = schedule.horizon();
  auto generator = make_generator(seed);
  torch::Tensor x =
      schedule.sigma(horizon) * standard_normal({batch, 1, 28, 28}, generator, torch::TensorOptions().device(g_device));
  for (int64_t k = 0; k < kSteps; ++k) {
    const double s = horizon - horizon * double(k) / kSteps, s_next = horizon - horizon * double(k + 1) / kSteps;
    const double alpha = schedule.alpha(s), sigma = schedule.sigma(s);
    const double alpha_next = schedule.alpha(s_next), sigma_next = schedule.sigma(s_next);
    const double a = alpha / alpha_next, b2 = std::max(0.0, sigma * sigma - a * a * sigma_next * sigma_next);
    const torch::Tensor eps = net.ptr()->forward(x, torch::full({batch}, 1000.0 * s, x.options()), {});
    const torch::Tensor mean = (x - eps * (b2 / sigma)) / a;
    const double std = std::sqrt(sigma_next * sigma_next * b2 / (sigma * sigma));
    x = std > 0.0 ? mean + std * standard_normal(x.sizes(), generator, x.options()) : mean;
  }
  return x;
}

void sampling(benchmark::State& state, bool library) {
  const models::UNet net = small_unet(false);
  constexpr int64_t batch = 64;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor a = library_sample(net, 4, 7), b = hand_sample(net, 4, 7);
    require(torch::allclose(a, b, 1e-5, 1e-5), "image_sampling: the hand loop and the library disagree by ",
            (a - b).abs().max().template item<double>());
  }
  for (auto _ : state) {
    torch::NoGradGuard no_grad;
    const torch::Tensor x = library ? library_sample(net, batch, 1) : hand_sample(net, batch, 1);
    benchmark::DoNotOptimize(x[0].sum().template item<float>());
  }
  state.counters["images/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

// kB from /proc/self/status (VmRSS, VmHWM); 0 where there is no procfs.
double status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string key;
  double value = 0.0;
  while (in >> key) {
    if (key == field + ":") {
      in >> value;
      return value;
    }
    in.ignore(1 << 12, '\n');
  }
  return 0.0;
}

void backprop(benchmark::State& state) {
  const int64_t steps = state.range(0), window = state.range(1);
  const sde::VpCosine schedule;
  models::UNet net = small_unet(true);  // fine-tuning the drift: gradients reach its weights
  const models::EpsilonScore<sde::VpCosine, models::UNet> score(schedule, net);
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), static_cast<std::size_t>(steps));
  auto generator = make_generator(3);
  double peak_mib = 0.0;
  for (auto _ : state) {
    net->zero_grad();
    const torch::Tensor x_init = standard_normal({16, 1, 28, 28}, generator, torch::TensorOptions().device(g_device));
    std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current VmRSS
    const double before = status_kib("VmRSS");
    sde::IntegrateOptions options;
    options.with_grad = true;
    options.generator = generator;
    if (window > 0) options.backprop_steps = static_cast<std::size_t>(window);
    const torch::Tensor x = sde::integrate(schedule, score, sde::Ddpm{}, grid, x_init, {}, options).final_state;
    x.square().mean().backward();
    benchmark::DoNotOptimize(net->parameters().front().grad().sum().template item<float>());
    peak_mib = std::max(peak_mib, (status_kib("VmHWM") - before) / 1024.0);
  }
  state.counters["peak_MiB"] = peak_mib;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    keep_freed_memory();
    const int threads = configure_threads(bench::take_threads_flag(argc, argv));
    g_device = bench::take_device_flag(argc, argv);
    benchmark::AddCustomContext("libtorch", TORCH_VERSION);
    benchmark::AddCustomContext("torch_threads", std::to_string(threads));
    benchmark::AddCustomContext("device", g_device.str());
    benchmark::RegisterBenchmark("sampling/library", [](benchmark::State& s) { sampling(s, true); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark("sampling/hand", [](benchmark::State& s) { sampling(s, false); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    for (const int64_t steps : {10, 20, 50})
      for (const int64_t window : {int64_t{0}, int64_t{5}})
        benchmark::RegisterBenchmark("backprop", backprop)
            ->Args({steps, window})
            ->Iterations(1)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    return bench::run_benchmarks(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "image_sampling: " << e.what() << "\n";
    return 1;
  }
}
