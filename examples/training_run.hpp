#pragma once
// The bookkeeping the training examples share: --resume from the checkpoint (with
// the batch stream's position) after checking that the run's description matches,
// checkpoints every --checkpoint-every steps, --stop-after, a metrics.csv row of
// averages every --log-every steps, and a progress line. In a run of several
// processes every rank resumes from the checkpoint and rank 0 alone writes.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "diffctl/data/image_dataset.hpp"
#include "diffctl/distributed/group.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/io/metrics_log.hpp"
#include "diffctl/io/progress.hpp"
#include "image_example.hpp"

namespace diffctl::examples {

struct RunFlags {
  int64_t steps = 0;
  int64_t checkpoint_every = 500;
  int64_t log_every = 50;
  bool resume = false;
  std::optional<int64_t> stop_after;
};

inline void add_run_flags(CLI::App& app, RunFlags& f) {
  app.add_option("--checkpoint-every", f.checkpoint_every, "steps between checkpoints")->check(CLI::PositiveNumber);
  app.add_option("--log-every", f.log_every, "steps per metrics.csv row")->check(CLI::PositiveNumber);
  app.add_flag("--resume", f.resume, "continue from --out/checkpoint.pt");
  app.add_option("--stop-after", f.stop_after, "checkpoint and stop at this step, to go on later with --resume")
      ->check(CLI::PositiveNumber);
}

class TrainingRun {
 public:
  // `description` names the run's model, data and settings; it is written to
  // out/description_file, and --resume refuses a checkpoint of another run.
  // `checkpoint` lists what to save; the batch stream's position is added here.
  TrainingRun(std::string label, std::filesystem::path out, const std::string& description_file,
              const nlohmann::json& description, const RunFlags& flags, io::Checkpoint checkpoint,
              data::ImageBatches& batches, std::vector<std::string> logged_columns, distributed::Group group = {})
      : label_(std::move(label)),
        out_(std::move(out)),
        flags_(flags),
        checkpoint_(std::move(checkpoint)),
        batches_(batches),
        group_(std::move(group)) {
    checkpoint_.tensors.emplace_back("batch_position", &batch_position_);
    const auto checkpoint_path = out_ / "checkpoint.pt";
    const auto description_path = out_ / description_file;
    if (flags_.resume) {
      require(std::filesystem::exists(checkpoint_path), "--resume: no checkpoint at ", checkpoint_path.string());
      nlohmann::json recorded = read_json(description_path);
      recorded.erase("sha256");  // these two are added when a finished run writes its weights
      recorded.erase("machine");
      require(recorded == description, "--resume: ", description_path.string(),
              " describes another run (model, data or settings differ)");
      resumed_at_ = io::load_checkpoint(checkpoint_path, checkpoint_);
      batches_.seek(batch_position_[0].item<int64_t>(), batch_position_[1].item<int64_t>());
      if (group_.is_main()) std::cerr << label_ << ": resuming at step " << *resumed_at_ << "\n";
    } else if (group_.is_main()) {
      write_json(description_path, description);
    }
    logged_columns.insert(logged_columns.begin(), "step");
    logged_columns.emplace_back("seconds");
    width_ = logged_columns.size() - 2;
    if (group_.is_main()) log_.emplace(out_ / "metrics.csv", std::move(logged_columns), resumed_at_);
  }

  // The step the run continues from: 0, or the checkpoint's on --resume.
  int64_t first_step() const { return resumed_at_.value_or(0); }

  // Calls step(batch) -> values to log, for every step up to --steps (or
  // --stop-after). Returns true when the run reached --steps, false when stopped.
  template <class Step>
  bool run(Step&& step) {
    std::optional<io::Progress> progress;
    if (group_.is_main()) progress.emplace(label_, flags_.steps);
    const auto start = std::chrono::steady_clock::now();
    // The logged values stay tensors, summed where they are, and are read on the
    // host only when a row is written: no wait for the device at every step.
    std::vector<torch::Tensor> sums(width_);
    int64_t count = 0;
    const int64_t last = std::min(flags_.steps, flags_.stop_after.value_or(flags_.steps));
    for (int64_t done = first_step(); done < last;) {
      const std::vector<torch::Tensor> values = step(batches_.next());
      require(values.size() == width_, label_, ": a step logged ", values.size(), " values, expected ", width_);
      for (std::size_t i = 0; i < width_; ++i)
        sums[i] = sums[i].defined() ? sums[i] + values[i] : values[i].to(torch::kDouble);
      ++count;
      ++done;
      if (done % flags_.log_every == 0 || done == last) {
        if (group_.is_main()) {
          std::vector<double> row;
          for (const auto& sum : sums) row.push_back(sum.template item<double>() / double(count));
          row.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
          log_->write(done, row);
          progress->update(done, "loss " + std::to_string(row.front()));
        }
        sums.assign(width_, torch::Tensor{});
        count = 0;
      }
      if (done % flags_.checkpoint_every == 0 || done == last) save(done);
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (last < flags_.steps) {
      if (group_.is_main())
        std::cout << label_ << ": stopped at step " << last << " of " << flags_.steps << "; go on with --resume\n";
      return false;
    }
    return true;
  }

  // Wall-clock seconds of the last run() (this process only, when resumed).
  double seconds() const { return seconds_; }

 private:
  void save(int64_t step) {
    if (!group_.is_main()) return;
    batch_position_ = torch::tensor({batches_.epoch(), batches_.step()}, torch::kLong);
    checkpoint_.step = step;
    io::save_checkpoint(out_ / "checkpoint.pt", checkpoint_);
  }

  std::string label_;
  std::filesystem::path out_;
  RunFlags flags_;
  io::Checkpoint checkpoint_;
  data::ImageBatches& batches_;
  distributed::Group group_;
  torch::Tensor batch_position_ = torch::zeros({2}, torch::kLong);  // epoch, step within it
  std::optional<int64_t> resumed_at_;
  std::optional<io::MetricsLog> log_;
  std::size_t width_ = 0;
  double seconds_ = 0.0;
};

}  // namespace diffctl::examples
