#pragma once
// Process-wide settings a binary makes once at start: threads and seeds.

#include <cstdint>
#include <optional>
#include <thread>

#if defined(__GLIBC__)
#include <dlfcn.h>
#include <malloc.h>
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl {

namespace detail {

// An OpenBLAS built with its own pthread pool (Debian's default variant, what
// LibTorch's matrix products call there) runs beside LibTorch's OpenMP threads:
// the two pools contend for the same cores, OpenMP's threads spinning after each
// parallel region while OpenBLAS's wait to run (the small LibTorch q-learning,
// DDPO and DPOK iterations measured 3 to 4x slower for it, benchmarks/README.md). LibTorch
// already spreads its operators over its own threads, so such an OpenBLAS is held
// to one. An OpenMP OpenBLAS shares LibTorch's pool and is left alone. Looked up
// at run time: the BLAS may be another, or absent. Returns whether it was set.
inline bool single_threaded_pthread_openblas() {
#if defined(__GLIBC__)
  using GetParallel = int (*)();
  using SetThreads = void (*)(int);
  const auto get_parallel = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  const auto set_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  constexpr int kPthreads = 1;  // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP
  if (get_parallel == nullptr || set_threads == nullptr || get_parallel() != kPthreads) return false;
  set_threads(1);
  return true;
#else
  return false;
#endif
}

}  // namespace detail

// Sets LibTorch's intra-op threads to `requested`, or to the hardware's concurrency
// when absent (some LibTorch builds default to a single thread), and keeps a
// pthread OpenBLAS from competing with them (detail::single_threaded_pthread_openblas).
// Returns the count.
inline int configure_threads(std::optional<int> requested = std::nullopt) {
  if (requested) require(*requested >= 1, "--threads: expected >= 1, found ", *requested);
  const int threads = requested.value_or(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  torch::set_num_threads(threads);
  detail::single_threaded_pthread_openblas();
  return threads;
}

// Keeps freed CPU tensor memory in the process for reuse. By default glibc maps
// every block above 128 KiB fresh from the kernel and unmaps it on free, so a loop
// that frees and reallocates tensors of a few MiB each step page-faults through all
// of them every time: on a 200,000-element solver step that costs 10x the
// arithmetic. Blocks up to 32 MiB (glibc's ceiling) then come from the heap, which
// is also no longer trimmed. Call once at start; a no-op off glibc.
inline void keep_freed_memory() {
#if defined(__GLIBC__)
  constexpr int kLargestHeapBlock = 32 * 1024 * 1024;
  mallopt(M_MMAP_THRESHOLD, kLargestHeapBlock);
  mallopt(M_TRIM_THRESHOLD, 4 * kLargestHeapBlock);
#endif
}

// Seeds LibTorch's default generators (every device) and returns a CPU generator
// of its own with the same seed, for code that threads a generator through.
inline at::Generator seed_everything(std::uint64_t seed) {
  torch::manual_seed(seed);
  return at::detail::createCPUGenerator(seed);
}

// Standard normal noise of the given shape and options, from `generator` when
// given, else from the device's default generator. A generator of another device
// (say a CPU generator driving CUDA tensors, for results that do not depend on
// the device) draws on its own device and the noise is moved.
inline torch::Tensor standard_normal(torch::IntArrayRef shape, const c10::optional<at::Generator>& generator,
                                     const torch::TensorOptions& options) {
  if (!generator || generator->device() == options.device()) return torch::randn(shape, generator, options);
  return torch::randn(shape, generator, options.device(generator->device())).to(options.device());
}

// SplitMix64 of two integers: a seed derived from a run's seed for one of its
// streams of randomness (streams of nearby seeds do not meet, as seed + k would
// make them), or a uniform 64-bit hash (the ensemble's masks).
constexpr std::uint64_t mix_seeds(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A CPU generator with its own state, seeded.
inline at::Generator make_generator(std::uint64_t seed) { return at::detail::createCPUGenerator(seed); }

}  // namespace diffctl
