// Edge coverage for libFuzzer from GCC's -fsanitize-coverage=trace-pc. GCC calls
// __sanitizer_cov_trace_pc() at every basic block; libFuzzer (LLVM 14) no longer
// implements that hook, but it reads any table of 8-bit counters a module
// registers. So each call bumps the counter its caller's address hashes to, in a
// table registered at start-up. Compiled without the coverage flag, or it would
// call itself.

#include <cstddef>
#include <cstdint>

extern "C" void __sanitizer_cov_8bit_counters_init(std::uint8_t* start, std::uint8_t* stop);

namespace {
constexpr std::size_t kCounters = std::size_t{1} << 18;
std::uint8_t counters[kCounters];

[[gnu::constructor]] void register_counters() { __sanitizer_cov_8bit_counters_init(counters, counters + kCounters); }
}  // namespace

extern "C" [[gnu::no_sanitize_address]] void __sanitizer_cov_trace_pc() {
  const auto pc = reinterpret_cast<std::uintptr_t>(__builtin_return_address(0));
  ++counters[(pc ^ (pc >> 18)) & (kCounters - 1)];
}

// GCC's trace-cmp also reports floating-point comparisons, which libFuzzer has
// no hook for; they carry no coverage here.
extern "C" void __sanitizer_cov_trace_cmpf(float, float) {}
extern "C" void __sanitizer_cov_trace_cmpd(double, double) {}
