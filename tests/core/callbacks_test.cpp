// The training loop and its callbacks (callbacks.hpp), on a counting step.

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "diffctl/callbacks.hpp"
#include "support/temp_dir.hpp"

using namespace diffctl;

namespace {

struct Figures {
  double loss = 0.0, reward = 0.0;
  std::vector<std::pair<std::string, double>> fields() const { return {{"loss", loss}, {"reward", reward}}; }
};

// Records what it saw; stops after step `stop_at` (0: never).
struct Recorder {
  std::vector<std::string>* seen;
  int64_t stop_at = 0;
  void begin(int64_t total) { seen->push_back("begin " + std::to_string(total)); }
  bool step(int64_t step, const Figures& figures) {
    seen->push_back("step " + std::to_string(step) + " " + std::to_string(int(figures.loss)));
    return step == stop_at;
  }
  void end(const TrainOutcome& outcome) { seen->push_back("end " + std::to_string(outcome.steps)); }
};

struct StepOnFigures {
  void step(int64_t, const Figures&) {}
};

}  // namespace

TEST_CASE("train runs the steps and shows every callback every step, in order", "[callbacks]") {
  std::vector<std::string> seen;
  int64_t calls = 0;
  const auto step = [&] {
    ++calls;
    return Figures{double(calls), 0.0};
  };
  std::optional<Recorder> absent;
  const TrainOutcome outcome = train(3, step, Recorder{&seen}, absent, Recorder{&seen});
  CHECK(outcome.steps == 3);
  CHECK_FALSE(outcome.stopped_early);
  CHECK(seen == std::vector<std::string>{"begin 3", "begin 3", "step 1 1", "step 1 1", "step 2 2", "step 2 2",
                                         "step 3 3", "step 3 3", "end 3", "end 3"});

  // A callback that stops the run: the others still see that step, then all end.
  seen.clear();
  calls = 0;
  const TrainOutcome stopped = train(10, step, Recorder{&seen, 2}, std::optional<Recorder>(Recorder{&seen}));
  CHECK(stopped.steps == 2);
  CHECK(stopped.stopped_early);
  CHECK(seen == std::vector<std::string>{"begin 10", "begin 10", "step 1 1", "step 1 1", "step 2 2", "step 2 2",
                                         "end 2", "end 2"});
  CHECK(calls == 2);
  CHECK_THROWS_WITH(train(-1, step), Catch::Contains("must be >= 0"));

  // A callback must have a hook for the step's statistics (else train() would skip it).
  STATIC_REQUIRE(NamedFields<Figures>);
  STATIC_REQUIRE(TrainingCallback<callbacks::ProgressBar, Figures>);
  STATIC_REQUIRE(TrainingCallback<callbacks::MetricsCsv, Figures>);
  STATIC_REQUIRE_FALSE(TrainingCallback<StepOnFigures, int>);
}

TEST_CASE("the progress bar reads a step's fields only for a line it writes", "[callbacks]") {
  // Fields read back from a device wait for it: 100 steps write at most a line per
  // tenth (a pipe) or per half second (a terminal), so at most 11 reads, not 100.
  struct Counted {
    int* reads;
    std::vector<std::pair<std::string, double>> fields() const {
      ++*reads;
      return {{"loss", 1.0}};
    }
  };
  int reads = 0;
  train(
      100, [&] { return Counted{&reads}; }, callbacks::ProgressBar("reads", 100));
  CHECK(reads >= 1);  // the last step's line
  CHECK(reads <= 11);
}

TEST_CASE("the schedule, periodic and target callbacks act at their steps", "[callbacks]") {
  const auto step = [] { return Figures{}; };
  std::vector<double> rates;
  std::vector<int64_t> saved;
  train(7, step, callbacks::LearningRateDecay([&](double lr) { rates.push_back(lr); }, 1.0, 0.5, 3),
        callbacks::Every(
            3, [&](int64_t s) { saved.push_back(s); }, /*at_end=*/true));
  CHECK(rates == std::vector<double>{0.5, 0.25});  // after steps 3 and 6
  CHECK(saved == std::vector<int64_t>{3, 6, 7});   // and at the end, once

  // The measurement rises by 1 per check; the target 3 is reached at the third check (step 6).
  double level = 0.0;
  std::vector<int64_t> observed;
  callbacks::StopAtTarget stop(
      "level", [&] { return level += 1.0; }, 3.0, 2, /*show=*/false);
  const TrainOutcome outcome =
      train(100, step, stop, callbacks::Observe([&](int64_t s, const Figures&) { observed.push_back(s); }));
  CHECK(outcome.steps == 6);
  CHECK(outcome.stopped_early);
  CHECK(level == 3.0);
  CHECK(observed.size() == 6);

  CHECK_THROWS_WITH(callbacks::Every(0, [](int64_t) {}), Catch::Contains("every >= 1"));
  CHECK_THROWS_WITH(callbacks::LearningRateDecay([](double) {}, 0.0, 0.5, 1), Catch::Contains("> 0"));
}

TEST_CASE("MetricsCsv logs the step's fields and keeps a resumed run's rows", "[callbacks]") {
  const testing::TempDir dir;
  const auto path = dir.path() / "metrics.csv";
  int64_t calls = 0;
  const auto step = [&] {
    ++calls;
    return Figures{double(calls), 0.5};
  };
  train(5, step, callbacks::MetricsCsv(path, 2));
  CHECK(testing::read_bytes(path) == "step,loss,reward\n2,2,0.5\n4,4,0.5\n");

  // Resumed after step 2: rows after it go, the new ones are numbered from 2 on.
  calls = 10;
  train(2, step, callbacks::MetricsCsv(path, 1, int64_t{2}, 2));
  CHECK(testing::read_bytes(path) == "step,loss,reward\n2,2,0.5\n3,11,0.5\n4,12,0.5\n");
  CHECK(callbacks::describe(Figures{1.5, 0.25}) == "loss 1.5  reward 0.25");
}
