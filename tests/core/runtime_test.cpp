#include <dlfcn.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "diffctl/runtime.hpp"

using Catch::Matchers::Contains;

TEST_CASE("configure_threads sets LibTorch's threads and holds a pthread OpenBLAS to one", "[runtime]") {
  const int kept = torch::get_num_threads();
  // Where the process's BLAS is OpenBLAS with its own pthread pool (Debian's
  // default), configure_threads takes it from two threads to one; elsewhere it
  // has nothing to hold.
  using Query = int (*)();
  using Set = void (*)(int);
  const auto get_parallel = reinterpret_cast<Query>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  const auto get_threads = reinterpret_cast<Query>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  const auto set_threads = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  const bool pthread_openblas = get_parallel && get_threads && set_threads && get_parallel() == 1;
  if (pthread_openblas) {
    set_threads(2);
    REQUIRE(get_threads() == 2);
  }
  CHECK(diffctl::configure_threads(2) == 2);
  CHECK(torch::get_num_threads() == 2);
  if (pthread_openblas) CHECK(get_threads() == 1);
  CHECK(diffctl::detail::single_threaded_pthread_openblas() == pthread_openblas);
  CHECK_THROWS_WITH(diffctl::configure_threads(0), Contains("--threads: expected >= 1, found 0"));
  torch::set_num_threads(kept);
}

TEST_CASE("mix_seeds(a, b) is output b + 1 of SplitMix64 seeded with a", "[runtime]") {
  // The reference generator's first three outputs from state 0.
  STATIC_REQUIRE(diffctl::mix_seeds(0, 0) == 0xE220A8397B1DCDAFull);
  STATIC_REQUIRE(diffctl::mix_seeds(0, 1) == 0x6E789E6AA1B965F4ull);
  STATIC_REQUIRE(diffctl::mix_seeds(0, 2) == 0x06C45D188009454Full);
}
