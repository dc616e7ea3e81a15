#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "diffctl/runtime.hpp"

int main(int argc, char** argv) {
  diffctl::keep_freed_memory();
  return Catch::Session().run(argc, argv);
}
