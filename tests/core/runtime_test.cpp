#include <dlfcn.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "diffctl/runtime.hpp"

using Catch::Matchers::Contains;

TEST_CASE("configure_threads sets LibTorch's threads and holds a pthread OpenBLAS to one", "[runtime]") {
  const int kept = torch::get_num_threads();
  CHECK(diffctl::configure_threads(2) == 2);
  CHECK(torch::get_num_threads() == 2);
  CHECK_THROWS_WITH(diffctl::configure_threads(0), Contains("--threads: expected >= 1, found 0"));

  // Where the process's BLAS is OpenBLAS with its own pthread pool (Debian's
  // default), its threads are one after configure_threads; elsewhere nothing to see.
  using Query = int (*)();
  const auto get_parallel = reinterpret_cast<Query>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  const auto get_threads = reinterpret_cast<Query>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  const bool pthread_openblas = get_parallel != nullptr && get_threads != nullptr && get_parallel() == 1;
  CHECK(diffctl::detail::single_threaded_pthread_openblas() == pthread_openblas);
  if (pthread_openblas) CHECK(get_threads() == 1);
  torch::set_num_threads(kept);
}
