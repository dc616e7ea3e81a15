#pragma once
// A training loop with callbacks, as ensmallen's optimisers take them: train()
// runs an algorithm's own step (a q-learning episode, a DDPO or DPOK iteration, a
// SEIKO round) and every callback observes each step, may stop the run, or acts on
// the algorithm (its learning rate, a checkpoint, a picture):
//
//   const TrainOutcome outcome = train(
//       episodes, [&] { return learner.train_episode(generator); },
//       callbacks::ProgressBar("q-learning", episodes),
//       callbacks::LearningRateDecay([&](double lr) { learner.set_learning_rate(lr); }, 1e-3, 0.5, 1000),
//       callbacks::Every(episodes / 10, [&](int64_t) { learner.save(path); }));
//
// A callback has any of begin(total), step(step, stats) returning void or bool
// (true: stop after this step) and end(outcome); every callback sees every step,
// in the order given. A std::optional callback takes part when it holds one (a
// callback only rank 0 runs, a stop only when a target was given). A step's statistics that have fields() (name and
// value pairs: algorithms::EpisodeStats, FineTuneStats, SeikoRound) are shown by ProgressBar and logged by MetricsCsv.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/metrics_log.hpp"
#include "diffctl/io/progress.hpp"

namespace diffctl {

// How a run of train() ended.
struct TrainOutcome {
  int64_t steps = 0;           // steps run (fewer than asked when a callback stopped the run)
  double seconds = 0.0;        // their wall-clock time
  bool stopped_early = false;  // a callback stopped it before the last step
};

namespace detail {
// A callback as train() takes it: itself, or inside a std::optional.
template <class T>
struct Unwrapped {
  using type = T;
  static constexpr bool optional = false;
};
template <class T>
struct Unwrapped<std::optional<T>> {
  using type = T;
  static constexpr bool optional = true;
};

// f(the callback), or nothing for an empty std::optional.
template <class Callback, class F>
void with_callback(Callback& callback, F&& f) {
  if constexpr (Unwrapped<std::remove_cvref_t<Callback>>::optional) {
    if (callback) f(*callback);
  } else {
    f(callback);
  }
}

template <class Callback, class Stats>
bool step_callback(Callback& callback, int64_t step, const Stats& stats) {
  bool stop = false;
  with_callback(callback, [&](auto& c) {
    if constexpr (requires {
                    { c.step(step, stats) } -> std::convertible_to<bool>;
                  })
      stop = static_cast<bool>(c.step(step, stats));
    else if constexpr (requires { c.step(step, stats); }) c.step(step, stats);
  });
  return stop;
}
}  // namespace detail

// Runs step() up to `steps` times, each followed by every callback's step().
template <class Step, class... Callbacks>
  requires(TrainingCallback<typename detail::Unwrapped<std::remove_cvref_t<Callbacks>>::type,
                            std::remove_cvref_t<std::invoke_result_t<Step&>>>&&...)
TrainOutcome train(int64_t steps, Step&& step, Callbacks&&... callbacks) {
  require(steps >= 0, "train: the number of steps must be >= 0, found ", steps);
  const auto start = std::chrono::steady_clock::now();
  (detail::with_callback(callbacks,
                         [&](auto& c) {
                           if constexpr (requires { c.begin(steps); }) c.begin(steps);
                         }),
   ...);
  TrainOutcome outcome;
  for (int64_t i = 1; i <= steps; ++i) {
    [[maybe_unused]] const auto stats = step();  // unused when there are no callbacks
    outcome.steps = i;
    bool stop = false;
    ((stop = detail::step_callback(callbacks, i, stats) || stop), ...);
    if (stop) {
      outcome.stopped_early = i < steps;
      break;
    }
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  (detail::with_callback(callbacks,
                         [&](auto& c) {
                           if constexpr (requires { c.end(outcome); }) c.end(outcome);
                         }),
   ...);
  return outcome;
}

namespace callbacks {

// "name value  name value" of a step's fields.
template <NamedFields Stats>
std::string describe(const Stats& stats) {
  std::ostringstream line;
  line.precision(4);
  bool first = true;
  for (const auto& [name, value] : stats.fields()) {
    line << (first ? "" : "  ") << name << ' ' << value;
    first = false;
  }
  return line.str();
}

// Progress on stderr (io::Progress: steps, rate, ETA and the step's fields); shown
// only where `show` (rank 0 of a group of processes).
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool show = true) {
    if (show) progress_.emplace(std::move(label), total);
  }
  template <class Stats>
  void step(int64_t step, const Stats& stats) {
    if (!progress_) return;
    // The fields only for a line that is written: reading them may wait for a device.
    if constexpr (NamedFields<Stats>) {
      if (progress_->due(step)) progress_->update(step, describe(stats));
    } else {
      progress_->update(step);
    }
  }
  // A run stopped early ends its line here.
  void end(const TrainOutcome& outcome) {
    if (progress_ && outcome.stopped_early) progress_->update(outcome.steps, "stopped");
  }

 private:
  std::optional<io::Progress> progress_;
};

// Calls action(step) every `every` steps (a checkpoint, a picture, a snapshot),
// and at the last step when at_end.
class Every {
 public:
  Every(int64_t every, std::function<void(int64_t)> action, bool at_end = false)
      : every_(every), action_(std::move(action)), at_end_(at_end) {
    require(every_ >= 1, "callbacks::Every: needs every >= 1, found ", every_);
  }
  template <class Stats>
  void step(int64_t step, const Stats&) {
    if (step % every_ == 0) {
      action_(step);
      last_ = step;
    }
  }
  void end(const TrainOutcome& outcome) {
    if (at_end_ && outcome.steps > 0 && last_ != outcome.steps) action_(outcome.steps);
  }

 private:
  int64_t every_;
  std::function<void(int64_t)> action_;
  bool at_end_;
  int64_t last_ = 0;
};

// The learning rate initial * factor^floor(step / every), set through set(lr)
// after every `every` steps (a step schedule; factor 1 leaves it alone).
class LearningRateDecay {
 public:
  LearningRateDecay(std::function<void(double)> set, double initial, double factor, int64_t every)
      : set_(std::move(set)), initial_(initial), factor_(factor), every_(every) {
    require(initial > 0.0 && std::isfinite(initial) && factor > 0.0 && std::isfinite(factor) && every >= 1,
            "callbacks::LearningRateDecay: needs a learning rate and a factor > 0 and every >= 1, found ", initial,
            ", ", factor, ", ", every);
  }
  template <class Stats>
  void step(int64_t step, const Stats&) {
    if (factor_ != 1.0 && step % every_ == 0) set_(initial_ * std::pow(factor_, double(step / every_)));
  }

 private:
  std::function<void(double)> set_;
  double initial_, factor_;
  int64_t every_;
};

// Stops the run once measure() (e.g. the mean reward of fresh samples), taken every
// `every` steps, reaches `target`; says so on stderr where `show`.
class StopAtTarget {
 public:
  StopAtTarget(std::string what, std::function<double()> measure, double target, int64_t every, bool show = true)
      : what_(std::move(what)), measure_(std::move(measure)), target_(target), every_(every), show_(show) {
    require(every_ >= 1, "callbacks::StopAtTarget: needs every >= 1, found ", every_);
  }
  template <class Stats>
  bool step(int64_t step, const Stats&) {
    if (step % every_ != 0) return false;
    last_ = measure_();
    if (last_ < target_) return false;
    if (show_)
      std::cerr << what_ << " reached the target " << target_ << " (" << last_ << ") after " << step << " steps\n";
    return true;
  }
  // The last measurement (NaN before the first).
  double last() const { return last_; }

 private:
  std::string what_;
  std::function<double()> measure_;
  double target_;
  int64_t every_;
  bool show_;
  double last_ = std::nan("");
};

// Calls observe(step, stats) after every step: a caller's own bookkeeping (a row
// of its results table, a picture of the round).
template <class F>
class Observe {
 public:
  explicit Observe(F observe) : observe_(std::move(observe)) {}
  template <class Stats>
  void step(int64_t step, const Stats& stats) {
    observe_(step, stats);
  }

 private:
  F observe_;
};

// The step's fields as rows of a CSV file (io::MetricsLog: flushed per row; on a
// resumed run the rows after resume_after are dropped first), every `every` steps.
// The columns are "step" and the first step's field names; offset is added to
// the step numbers (the steps a resumed run had done before).
class MetricsCsv {
 public:
  explicit MetricsCsv(std::filesystem::path path, int64_t every = 1, std::optional<int64_t> resume_after = {},
                      int64_t offset = 0)
      : path_(std::move(path)), every_(every), resume_after_(resume_after), offset_(offset) {
    require(every_ >= 1, "callbacks::MetricsCsv: needs every >= 1, found ", every_);
  }
  // (Unconstrained, so that a step without fields() is an error here rather than a
  // callback train() would skip.)
  template <class Stats>
  void step(int64_t step, const Stats& stats) {
    static_assert(NamedFields<Stats>,
                  "callbacks::MetricsCsv logs the step's fields(): the step's statistics need "
                  "std::vector<std::pair<std::string, double>> fields() const");
    if (step % every_ != 0) return;
    const auto fields = stats.fields();
    std::vector<double> values;
    if (!log_) {
      std::vector<std::string> columns{"step"};
      for (const auto& [name, value] : fields) columns.push_back(name);
      log_.emplace(path_, std::move(columns), resume_after_);
    }
    for (const auto& [name, value] : fields) values.push_back(value);
    log_->write(offset_ + step, values);
  }

 private:
  std::filesystem::path path_;
  int64_t every_;
  std::optional<int64_t> resume_after_;
  int64_t offset_;
  std::optional<io::MetricsLog> log_;
};

}  // namespace callbacks
}  // namespace diffctl
