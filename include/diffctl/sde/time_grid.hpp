#pragma once
// Time grids in generation time: t in [0, T], t = 0 is noise, t = T is data.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "diffctl/error.hpp"

namespace diffctl::sde {

class TimeGrid {
 public:
  // A user-given grid: at least two finite, strictly increasing times in [0, horizon].
  TimeGrid(std::vector<double> times, double horizon) : times_(std::move(times)), horizon_(horizon) {
    require(std::isfinite(horizon_) && horizon_ > 0.0, "time grid: horizon T must be positive, found ", horizon_);
    require(times_.size() >= 2, "time grid: expected at least 2 times, found ", times_.size());
    for (std::size_t k = 0; k < times_.size(); ++k) {
      const double t = times_[k];
      require(std::isfinite(t) && t >= 0.0 && t <= horizon_, "time grid: time ", k, " = ", t,
              " lies outside [0, T] = [0, ", horizon_, "]");
      require(k == 0 || t > times_[k - 1], "time grid: times must increase strictly, but t[", k - 1,
              "] = ", times_[k - 1], " and t[", k, "] = ", t);
    }
  }

  // `steps` equal steps from t_begin to t_end (by default the whole [0, T]).
  static TimeGrid uniform(double horizon, std::size_t steps, double t_begin = 0.0,
                          std::optional<double> t_end = std::nullopt) {
    require(steps >= 1, "time grid: expected at least 1 step, found ", steps);
    const double end = t_end.value_or(horizon);
    std::vector<double> times(steps + 1);
    for (std::size_t k = 0; k <= steps; ++k)
      times[k] = t_begin + (end - t_begin) * static_cast<double>(k) / static_cast<double>(steps);
    times.back() = end;  // exact, whatever the rounding above
    return TimeGrid(std::move(times), horizon);
  }

  std::span<const double> times() const { return times_; }
  double operator[](std::size_t k) const { return times_[k]; }
  std::size_t size() const { return times_.size(); }
  std::size_t steps() const { return times_.size() - 1; }
  double horizon() const { return horizon_; }
  double front() const { return times_.front(); }
  double back() const { return times_.back(); }
  // t_{k+1} - t_k for each step k.
  std::vector<double> step_lengths() const {
    std::vector<double> lengths(steps());
    for (std::size_t k = 0; k < lengths.size(); ++k) lengths[k] = times_[k + 1] - times_[k];
    return lengths;
  }

  // Index of the grid point equal to t, within a relative tolerance that absorbs
  // rounding in how a caller computed t; nullopt when t is not on the grid.
  std::optional<std::size_t> index_of(double t) const {
    const double tolerance = 1e-9 * horizon_;
    const auto it = std::lower_bound(times_.begin(), times_.end(), t - tolerance);
    if (it == times_.end() || std::abs(*it - t) > tolerance) return std::nullopt;
    return static_cast<std::size_t>(it - times_.begin());
  }

 private:
  std::vector<double> times_;
  double horizon_;
};

}  // namespace diffctl::sde
