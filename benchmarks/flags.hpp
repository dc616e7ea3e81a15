#pragma once
// What the benchmark binaries share: their own flags (`--threads N`, `--device
// cpu|cuda`), taken out of argv before Google Benchmark reads its `--benchmark_*`
// flags, which rejects others; and running what they registered.

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::bench {

// Takes `name VALUE` / `name=VALUE` out of argv and returns VALUE when given.
inline std::optional<std::string> take_flag(int& argc, char** argv, std::string_view name) {
  std::optional<std::string> value;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == name) {
      require(i + 1 < argc, name, ": expected a value after it, found none");
      value = argv[++i];
    } else if (arg.starts_with(name) && arg.size() > name.size() && arg[name.size()] == '=') {
      value = std::string(arg.substr(name.size() + 1));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  return value;
}

inline std::optional<int> take_threads_flag(int& argc, char** argv) {
  const auto value = take_flag(argc, argv, "--threads");
  if (!value) return std::nullopt;
  int parsed = 0;
  const auto [end, error] = std::from_chars(value->data(), value->data() + value->size(), parsed);
  require(error == std::errc{} && end == value->data() + value->size() && parsed >= 1,
          "--threads: expected a positive integer, found '", *value, "'");
  return parsed;
}

// `--device cpu|cuda` (default cpu).
inline torch::Device take_device_flag(int& argc, char** argv) {
  const std::string name = take_flag(argc, argv, "--device").value_or("cpu");
  require(name == "cpu" || name == "cuda", "--device: expected cpu or cuda, found '", name, "'");
  require(name == "cpu" || torch::cuda::is_available(), "--device cuda: no CUDA device available");
  return name == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

// Runs the registered benchmarks with Google Benchmark's flags; 1 on a flag it
// does not know.
inline int run_benchmarks(int& argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace diffctl::bench
