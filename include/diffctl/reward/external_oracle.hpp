#pragma once
// An oracle outside the process: a person, a lab, a rating service. Its queries
// go into the feedback store as pending rows (with a PNG per image sample, named
// by the row's id, for a person to look at); whatever labels them (a script, the
// sqlite3 command, a web form over the same database) writes the label into the
// row, and the round goes on once every row of it has one:
//
//   reward::ExternalOracle oracle(feedback, {.images_dir = out / "queries", .wait_seconds = 0});
//   seiko.run_round(oracle, feedback);   // asks, then throws LabelsPending
//   // ... sqlite3 out/feedback.sqlite "UPDATE labels SET label = 0.8 WHERE id = 17" ...
//   seiko.run_round(oracle, feedback);   // a later run: asks nothing again, goes on
//
// wait() polls the store with a progress line, up to wait_seconds (none: as long
// as it takes; 0: not at all), then throws LabelsPending, which says how many rows
// wait and where; the run can stop there and resume later with nothing lost.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/io/png.hpp"
#include "diffctl/io/progress.hpp"
#include "diffctl/reward/feedback_dataset.hpp"

namespace diffctl::reward {

struct ExternalOracleOptions {
  // A PNG per asked sample, <row id>.png, when the samples are images [C, H, W]
  // with values in [-1, 1]; empty: none.
  std::filesystem::path images_dir{};
  int64_t image_zoom = 4;
  double poll_seconds = 2.0;
  // How long wait() waits for a round's labels; none: until they are all there.
  std::optional<double> wait_seconds = std::nullopt;
  bool show_progress = true;
};

// Thrown by wait() when a round's labels are not all in after wait_seconds.
class LabelsPending : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ExternalOracle {
 public:
  // `data` is the store the queries go to; queries() starts from the rows it holds.
  explicit ExternalOracle(const FeedbackDataset& data, ExternalOracleOptions options = {})
      : options_(std::move(options)), queries_(data.size() + data.pending()) {
    require(!data.file().empty(), "external oracle: the feedback dataset must be bound to a file (the store)");
    require(options_.poll_seconds > 0.0 && (!options_.wait_seconds || *options_.wait_seconds >= 0.0),
            "external oracle: poll_seconds must be > 0 and wait_seconds >= 0");
    require(options_.image_zoom >= 1, "external oracle: image_zoom must be >= 1");
  }

  // Stores x [B, ...] under z as pending rows of `round` (and their pictures).
  // Returns no labels: they come later, through the store.
  torch::Tensor record(FeedbackDataset& data, const torch::Tensor& x, const torch::Tensor& z, int64_t round) {
    const std::vector<int64_t> ids = data.ask(x, z, round, "external");
    queries_ += static_cast<int64_t>(ids.size());
    if (!options_.images_dir.empty() && x.dim() == 4 && (x.size(1) == 1 || x.size(1) == 3)) {
      for (std::size_t i = 0; i < ids.size(); ++i)
        io::write_png(options_.images_dir / (std::to_string(ids[i]) + ".png"),
                      io::image_grid(x.narrow(0, static_cast<int64_t>(i), 1), 1, -1.0, 1.0, options_.image_zoom));
    }
    return {};
  }

  // Returns once every row asked in `round` has its label (re-reading the store),
  // or throws LabelsPending after wait_seconds.
  void wait(FeedbackDataset& data, int64_t round) {
    const auto start = std::chrono::steady_clock::now();
    const int64_t asked = data.asked_in_round(round);
    std::optional<io::Progress> progress;
    while (true) {
      data.refresh();
      const int64_t pending = data.pending(round);
      if (pending == 0) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (options_.wait_seconds && waited >= *options_.wait_seconds)
        throw LabelsPending(
            diffctl::detail::concat(pending, " of the ", asked, " queries of round ", round, " wait for labels in ",
                                    data.file().string(), " (rows with label NULL; e.g. sqlite3 ", data.file().string(),
                                    " \"UPDATE labels SET label = 0.8 WHERE id = 17\"); run again to go on"));
      if (options_.show_progress) {
        if (!progress) progress.emplace("waiting for labels of round " + std::to_string(round), asked);
        progress->update(asked - pending);
      }
      double sleep = options_.poll_seconds;
      if (options_.wait_seconds) sleep = std::min(sleep, *options_.wait_seconds - waited);
      std::this_thread::sleep_for(std::chrono::duration<double>(std::max(sleep, 0.0)));
    }
  }

  // Unknown outside: NaN for every sample (the samples are measured by other means).
  torch::Tensor ground_truth(const torch::Tensor& x, const torch::Tensor&) const {
    return torch::full({x.size(0)}, std::numeric_limits<double>::quiet_NaN(), torch::kDouble);
  }

  int64_t queries() const { return queries_; }
  const ExternalOracleOptions& options() const { return options_; }

 private:
  ExternalOracleOptions options_;
  int64_t queries_ = 0;
};

}  // namespace diffctl::reward
