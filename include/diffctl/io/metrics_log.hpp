#pragma once
// A run's metrics as CSV, one row per logged step (a training step, a round),
// flushed as it is written so that a killed run keeps every row it logged. A
// resumed run first drops the rows logged after its checkpoint's step (they will
// be logged again), so the file reads as one uninterrupted run. Every example's
// CSV log is one of these (metrics.csv of the training runs, rounds.csv of the
// fine-tuning demo).

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"

namespace diffctl::io {

class MetricsLog {
 public:
  // The first column is the step (named as the caller likes: "step", "round").
  // With resume_step, an existing file with the same header is kept up to that
  // step; otherwise the file starts afresh.
  MetricsLog(std::filesystem::path path, std::vector<std::string> columns,
             std::optional<int64_t> resume_step = std::nullopt)
      : path_(std::move(path)), columns_(std::move(columns)) {
    require(!columns_.empty() && !columns_.front().empty(), "MetricsLog(", path_.string(),
            "): needs at least the step column, named");
    std::string header;
    for (std::size_t i = 0; i < columns_.size(); ++i) header += (i ? "," : "") + columns_[i];
    std::string kept = header + "\n";
    if (resume_step && std::filesystem::exists(path_)) {
      std::ifstream in(path_);
      std::string line;
      std::getline(in, line);
      require(line == header, "MetricsLog(", path_.string(), "): its header \"", line, "\" is not this run's \"",
              header, "\"");
      while (std::getline(in, line)) {
        // A row cut short by a crash has no newline and fewer fields: drop it.
        if (static_cast<std::size_t>(std::count(line.begin(), line.end(), ',')) + 1 != columns_.size()) continue;
        if (std::stoll(line.substr(0, line.find(','))) > *resume_step) continue;
        kept += line + "\n";
        rows_.push_back(line);
      }
    }
    write_text(path_, kept);
    out_.open(path_, std::ios::app);
    require(static_cast<bool>(out_), "MetricsLog: cannot append to ", path_.string());
  }

  void write(int64_t step, const std::vector<double>& values) {
    require(values.size() + 1 == columns_.size(), "MetricsLog(", path_.string(), "): expected ", columns_.size() - 1,
            " values after the step, found ", values.size());
    std::ostringstream row;
    row.precision(7);
    row << step;
    for (const double v : values) row << ',' << v;
    out_ << row.str() << '\n' << std::flush;
    rows_.push_back(row.str());
  }

  const std::filesystem::path& path() const { return path_; }
  // The data rows as the file holds them: those kept on resume, then those written.
  const std::vector<std::string>& rows() const { return rows_; }
  // One column of those rows as numbers (the step column too), to plot them.
  std::vector<double> column(const std::string& name) const {
    const auto found = std::find(columns_.begin(), columns_.end(), name);
    require(found != columns_.end(), "MetricsLog(", path_.string(), "): no column \"", name, "\"");
    const auto index = static_cast<std::size_t>(found - columns_.begin());
    std::vector<double> values;
    for (const std::string& row : rows_) {
      std::size_t begin = 0;
      for (std::size_t i = 0; i < index; ++i) begin = row.find(',', begin) + 1;
      values.push_back(std::strtod(row.c_str() + begin, nullptr));  // "nan" reads as NaN
    }
    return values;
  }

 private:
  std::filesystem::path path_;
  std::vector<std::string> columns_;
  std::ofstream out_;
  std::vector<std::string> rows_;
};

}  // namespace diffctl::io
