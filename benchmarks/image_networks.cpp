// Throughput of the image networks: the UNet (small and paper presets) and the
// CIFAR ResNet18 (width 0.25 on 1x28x28, the small preset's classifier; width 1 on
// 3x32x32), batch 64, float32:
//
//   forward           eval mode under NoGradGuard, what sampling and reward
//                     evaluation cost;
//   forward_backward  train mode, forward + backward of a mean-square loss (the
//                     optimizer step is not included), what training costs.
//
// Counter: images/s (kIsRate). Each iteration ends by reading one number of the
// output, so asynchronous CUDA work is inside the timing.
//
// Flags: `--threads N` (default: the hardware's concurrency), `--device cpu|cuda`.

#include <cstdint>
#include <exception>
#include <iostream>
#include <string>

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "diffctl/models/resnet.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/runtime.hpp"
#include "flags.hpp"

namespace {

namespace models = diffctl::models;

constexpr int64_t kBatch = 64;
constexpr int64_t kClasses = 10;

torch::Device g_device = torch::kCPU;

template <class Net, class Forward>
void run(benchmark::State& state, Net net, torch::IntArrayRef image, bool backward, Forward forward) {
  net->to(g_device);
  net->train(backward);
  auto generator = diffctl::make_generator(1);
  std::vector<int64_t> shape{kBatch};
  shape.insert(shape.end(), image.begin(), image.end());
  const torch::Tensor x = torch::randn(shape, generator).to(g_device);
  for (auto _ : state) {
    if (backward) {
      net->zero_grad();
      const torch::Tensor out = forward(net, x);
      out.square().mean().backward();
      benchmark::DoNotOptimize(net->parameters().front().grad()[0].sum().template item<float>());
    } else {
      torch::NoGradGuard no_grad;
      benchmark::DoNotOptimize(forward(net, x)[0].sum().template item<float>());
    }
  }
  state.counters["images/s"] = benchmark::Counter(double(kBatch), benchmark::Counter::kIsIterationInvariantRate);
}

// Registers `name`/forward and `name`/forward_backward for a fresh Net(options).
template <class Net, class Options, class Forward>
void register_network(const std::string& name, const Options& options, std::vector<int64_t> image, Forward forward) {
  for (const bool backward : {false, true})
    benchmark::RegisterBenchmark((name + (backward ? "/forward_backward" : "/forward")).c_str(),
                                 [=](benchmark::State& state) { run(state, Net(options), image, backward, forward); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    diffctl::keep_freed_memory();
    const int threads = diffctl::configure_threads(diffctl::bench::take_threads_flag(argc, argv));
    g_device = diffctl::bench::take_device_flag(argc, argv);
    torch::manual_seed(1);
    benchmark::AddCustomContext("libtorch", TORCH_VERSION);
    benchmark::AddCustomContext("torch_threads", std::to_string(threads));
    benchmark::AddCustomContext("device", g_device.str());
    benchmark::AddCustomContext("batch", std::to_string(kBatch));

    const auto unet = [](models::UNet& net, const torch::Tensor& x) {
      const torch::Tensor t = torch::linspace(0, 999, x.size(0), x.options());
      const torch::Tensor y =
          torch::arange(x.size(0), torch::TensorOptions(torch::kLong).device(x.device())) % kClasses;
      return net->forward(x, t, y);
    };
    const auto resnet = [](models::ResNet18& net, const torch::Tensor& x) { return net->forward(x); };
    register_network<models::UNet>("unet_small_1x28", models::UNetOptions::small(28, 1, kClasses), {1, 28, 28}, unet);
    register_network<models::UNet>("unet_paper_3x32", models::UNetOptions::paper(32, 3, kClasses), {3, 32, 32}, unet);
    register_network<models::ResNet18>(
        "resnet18_w0.25_1x28", models::ResNet18Options{.in_channels = 1, .num_classes = kClasses, .width = 0.25},
        {1, 28, 28}, resnet);
    register_network<models::ResNet18>("resnet18_w1_3x32",
                                       models::ResNet18Options{.in_channels = 3, .num_classes = kClasses, .width = 1.0},
                                       {3, 32, 32}, resnet);

    return diffctl::bench::run_benchmarks(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "image_networks: " << error.what() << "\n";
    return 1;
  }
}
