#pragma once
// Progress of long work on stderr: on a terminal, one line rewritten in place
// (done/total, rate, ETA, the caller's status) at most every half second;
// elsewhere (CI logs, pipes) a line at each tenth of the work and no more.

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace diffctl::io {

class Progress {
 public:
  Progress(std::string label, int64_t total)
      : label_(std::move(label)),
        total_(total),
        start_(Clock::now()),
        last_(start_),
        terminal_(isatty(fileno(stderr)) != 0) {}

  // Whether update(done) would write a line: a caller whose status is costly to
  // make (values read back from a device) makes it only then.
  bool due(int64_t done) const {
    if (done >= total_) return true;
    if (terminal_) return Clock::now() - last_ >= std::chrono::milliseconds(500);
    const int64_t tenth = total_ >= 10 ? total_ / 10 : 1;
    return done / tenth != last_reported_ / tenth;
  }

  // Reports that `done` of the total are finished; `status` is appended to the line.
  void update(int64_t done, std::string_view status = {}) {
    if (!due(done)) return;
    const auto now = Clock::now();
    const bool finished = done >= total_;
    last_ = now;
    last_reported_ = done;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0.0 ? double(done) / elapsed : 0.0;
    const double eta = rate > 0.0 ? double(total_ - done) / rate : 0.0;
    std::fprintf(stderr, "%s%s %lld/%lld  %.1f/s  elapsed %s  eta %s  %.*s%s", terminal_ ? "\r" : "", label_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), rate, clock(elapsed).c_str(),
                 clock(eta).c_str(), int(status.size()), status.empty() ? "" : status.data(),
                 terminal_ ? (finished ? "\n" : "\033[K") : "\n");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static std::string clock(double seconds) {
    const auto s = static_cast<long long>(seconds);
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    return buffer;
  }

  std::string label_;
  int64_t total_;
  Clock::time_point start_, last_;
  int64_t last_reported_ = 0;
  bool terminal_;
};

}  // namespace diffctl::io
