// The bootstrap reward ensemble on Fashion-MNIST-sized images (1x28x28, 10
// classes), M = 4 members started from a ResNet18 of width 0.25 (the small
// preset's weak classifier; its weights do not change the cost), float32:
//
//   fit/<members>/<N>   one round's refit on a feedback dataset of N images: a
//                       fresh bootstrap resample per member, 100 Adam steps of
//                       batch 64 each (time per fit);
//   estimate/<members>  mean, uncertainty and optimistic reward (mean + std) of
//                       a batch of 64 images under NoGradGuard (images/s).
//
//   every_class/<how>   the optimistic reward of a batch of 64 images under each of
//                       the 10 classes, with heads (what tilting a pool of samples
//                       toward every prompt needs): `loop` calls optimistic(x, z)
//                       once per class, `each` calls optimistic_each(x, classes)
//                       (one backbone pass) (images/s).
//
// <members> is `whole` (a ResNet18 per member) or `heads` (4 linear heads on one
// frozen backbone: one backbone pass for all members, features cached for a fit).
//
//   feedback_store/<N>  N labelled CIFAR-sized samples (3x32x32 float32, the paper
//                       preset's) appended to a new feedback store in chunks of
//                       256, each chunk one synchronous transaction, in a folder
//                       under the current directory (a real disk, not tmpfs): time
//                       per append and bytes written per row (/proc/self/io), beside
//                       the bytes the earlier whole-file format wrote for the same
//                       appends (it rewrote the file on each: sum over appends of
//                       the file's size, computed).
//
// Flags: `--threads N` (default: the hardware's concurrency), `--device cpu|cuda`.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "diffctl/io/files.hpp"
#include "diffctl/models/resnet.hpp"
#include "diffctl/reward/ensemble.hpp"
#include "diffctl/runtime.hpp"
#include "flags.hpp"

namespace {

using namespace diffctl;

constexpr int64_t kMembers = 4;
constexpr int64_t kBatch = 64;
constexpr int64_t kClasses = 10;
const reward::EnsembleOptions kOptions{.fit = {.steps = 100, .batch = 64, .learning_rate = 1e-3, .l2 = 1e-4},
                                       .seed = 1};

torch::Device g_device = torch::kCPU;

models::ResNet18 weak_classifier() {
  torch::manual_seed(1);
  models::ResNet18 net(models::ResNet18Options{.in_channels = 1, .num_classes = kClasses, .width = 0.25});
  net->to(g_device);
  return net;
}

reward::FeedbackDataset feedback(int64_t n) {
  auto generator = make_generator(2);
  reward::FeedbackDataset data;
  data.append(torch::rand({n, 1, 28, 28}, generator) * 2.0 - 1.0,
              torch::randint(kClasses, {n}, generator, torch::kLong), torch::rand({n}, generator, torch::kDouble), 0);
  return data;
}

template <class Members>
Members make_members(models::ResNet18 weak) {
  auto generator = make_generator(3);
  if constexpr (std::is_same_v<Members, reward::ModuleMembers<models::ResNet18>>)
    return Members::copies_of(weak, kMembers, 0.1, generator);
  else return Members::copies_of(weak, weak->head(), kMembers, 0.1, generator);
}

// A batch of kBatch images in [-1, 1] on the benchmark's device.
torch::Tensor images(at::Generator& generator) {
  return (torch::rand({kBatch, 1, 28, 28}, generator) * 2.0 - 1.0).to(g_device);
}

using Whole = reward::ModuleMembers<models::ResNet18>;
using Heads = reward::SharedBackboneHeads<models::ResNet18>;

template <class Members>
void fit(benchmark::State& state) {
  models::ResNet18 weak = weak_classifier();
  const reward::FeedbackDataset data = feedback(state.range(0));
  reward::BootstrapEnsemble ensemble(make_members<Members>(weak), kOptions);
  for (auto _ : state) benchmark::DoNotOptimize(ensemble.fit(data).member_loss[0].template item<double>());
}

template <class Members>
void estimate(benchmark::State& state) {
  models::ResNet18 weak = weak_classifier();
  reward::BootstrapEnsemble ensemble(make_members<Members>(weak), kOptions);
  auto generator = make_generator(4);
  const torch::Tensor x = images(generator);
  const torch::Tensor z = torch::randint(kClasses, {kBatch}, generator, torch::kLong).to(g_device);
  for (auto _ : state) {
    torch::NoGradGuard no_grad;
    benchmark::DoNotOptimize(ensemble.estimate(x, z).optimistic[0].template item<float>());
  }
  state.counters["images/s"] = benchmark::Counter(double(kBatch), benchmark::Counter::kIsIterationInvariantRate);
}

template <bool kEach>
void every_class(benchmark::State& state) {
  models::ResNet18 weak = weak_classifier();
  reward::BootstrapEnsemble ensemble(make_members<Heads>(weak), kOptions);
  auto generator = make_generator(4);
  const torch::Tensor x = images(generator);
  const torch::Tensor classes = torch::arange(kClasses, torch::kLong).to(g_device);
  for (auto _ : state) {
    torch::NoGradGuard no_grad;
    torch::Tensor rewards;
    if constexpr (kEach) {
      rewards = ensemble.optimistic_each(x, classes);
    } else {
      std::vector<torch::Tensor> columns;
      for (int64_t c = 0; c < kClasses; ++c) columns.push_back(ensemble.optimistic(x, classes[c].expand({kBatch})));
      rewards = torch::stack(columns, 1);
    }
    benchmark::DoNotOptimize(rewards[0][0].template item<float>());
  }
  state.counters["images/s"] = benchmark::Counter(double(kBatch), benchmark::Counter::kIsIterationInvariantRate);
}

// Bytes this process has written to storage so far (/proc/self/io's write_bytes).
double written_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  double value = 0.0;
  while (io >> key >> value)
    if (key == "write_bytes:") return value;
  return 0.0;
}

void feedback_store(benchmark::State& state) {
  constexpr int64_t kChunk = 256, kSampleFloats = 3 * 32 * 32;
  const int64_t n = state.range(0);
  auto generator = make_generator(5);
  const torch::Tensor x = torch::rand({kChunk, 3, 32, 32}, generator);
  const torch::Tensor z = torch::randint(kClasses, {kChunk}, generator, torch::kLong);
  const torch::Tensor y = torch::rand({kChunk}, generator, torch::kDouble);
  const std::filesystem::path dir = std::filesystem::absolute("feedback_store_benchmark");
  double bytes = 0.0, appends = 0.0, seconds = 0.0;
  for (auto _ : state) {
    state.PauseTiming();
    io::remove_tree(dir);
    const double before = written_bytes();
    const auto start = std::chrono::steady_clock::now();
    state.ResumeTiming();
    reward::FeedbackDataset data(dir / "feedback.sqlite");
    for (int64_t done = 0; done < n; done += kChunk) data.append(x, z, y, done / kChunk);
    state.PauseTiming();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bytes += written_bytes() - before;
    appends += double((n + kChunk - 1) / kChunk);
    state.ResumeTiming();
  }
  io::remove_tree(dir);
  // The earlier format: header, then per row the sample (float32), z, y and round
  // (8 bytes each), rewritten whole after every append.
  double rewritten = 0.0;
  for (int64_t rows = kChunk; rows < n + kChunk; rows += kChunk)
    rewritten += 64.0 + double(std::min(rows, n)) * double(kSampleFloats * 4 + 24);
  state.counters["bytes/row"] = bytes / double(state.iterations()) / double(n);
  state.counters["old_bytes/row"] = rewritten / double(n);
  state.counters["ms/append"] = 1e3 * seconds / appends;
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

    for (const int64_t n : {256, 1024}) {
      benchmark::RegisterBenchmark("fit/whole", fit<Whole>)
          ->Arg(n)
          ->Unit(benchmark::kSecond)
          ->UseRealTime()
          ->Iterations(1);
      benchmark::RegisterBenchmark("fit/heads", fit<Heads>)->Arg(n)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
    benchmark::RegisterBenchmark("estimate/whole", estimate<Whole>)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark("estimate/heads", estimate<Heads>)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark("every_class/loop", every_class<false>)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark("every_class/each", every_class<true>)->Unit(benchmark::kMillisecond)->UseRealTime();
    for (const int64_t n : {1024, 15360})
      benchmark::RegisterBenchmark("feedback_store", feedback_store)
          ->Arg(n)
          ->Unit(benchmark::kSecond)
          ->UseRealTime()
          ->Iterations(1);
    return bench::run_benchmarks(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "reward_ensemble: " << error.what() << "\n";
    return 1;
  }
}
