#pragma once
// Where masked controls act on a time grid. A control is set at a measured grid
// point (one of `measure_index`, increasing) for the samples that row of a mask
// [M, B] marks. An impulse acts on the step that starts there; a held control on
// every step from there to the next measured point (or to T). The schedule reads
// the mask on the host once, so that a sampler asks it per step without a host
// synchronisation: which measured row acts on the step, and on which samples.

#include <cstddef>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/sde/time_grid.hpp"

namespace diffctl::sde {

class ControlSchedule {
 public:
  ControlSchedule(const TimeGrid& grid, const std::vector<std::size_t>& measure_index, const torch::Tensor& mask,
                  bool held)
      : measure_index_(measure_index), row_of_(grid.size(), -1), samples_(grid.size()) {
    const std::size_t rows = measure_index_.size();
    require(mask.scalar_type() == torch::kBool && mask.dim() == 2 && std::size_t(mask.size(0)) == rows,
            "control schedule: the mask must be bool [", rows, ", B], found ", mask.sizes(), " ", mask.scalar_type());
    for (std::size_t r = 0; r < rows; ++r)
      require(measure_index_[r] < grid.steps() && (r == 0 || measure_index_[r] > measure_index_[r - 1]),
              "control schedule: measured points must be increasing indices of steps, below ", grid.steps());
    const torch::Tensor host_mask = mask.cpu();
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t next = r + 1 < rows ? measure_index_[r + 1] : grid.steps();
      span_.push_back(grid[next] - grid[measure_index_[r]]);
      samples_of_row_.push_back(host_mask[int64_t(r)].nonzero().squeeze(1).to(mask.device(), /*non_blocking=*/true));
      const std::size_t end = held ? next : measure_index_[r] + 1;
      for (std::size_t k = measure_index_[r]; k < end; ++k) {
        row_of_[k] = int64_t(r);
        samples_[k] = samples_of_row_[r];
      }
    }
  }

  // The measured row whose control acts on step k, or -1.
  int64_t row_of(std::size_t k) const { return row_of_[k]; }
  // Whether step k starts at the measured point of the row acting on it (where
  // that row's control is set).
  bool starts_row(std::size_t k) const { return row_of_[k] >= 0 && measure_index_[std::size_t(row_of_[k])] == k; }
  // Whether any sample is controlled on step k.
  bool controlled(std::size_t k) const { return samples_[k].defined() && samples_[k].numel() > 0; }
  // The indices [n] of the samples controlled on step k (undefined: none).
  const torch::Tensor& samples(std::size_t k) const { return samples_[k]; }
  // The indices of the samples that row r controls, and the time from its measured
  // point to the next one (or to T): a held control's duration.
  const torch::Tensor& samples_of_row(std::size_t r) const { return samples_of_row_[r]; }
  double span(std::size_t r) const { return span_[r]; }
  std::size_t rows() const { return measure_index_.size(); }

 private:
  std::vector<std::size_t> measure_index_;
  std::vector<int64_t> row_of_;
  std::vector<torch::Tensor> samples_;
  std::vector<torch::Tensor> samples_of_row_;
  std::vector<double> span_;
};

}  // namespace diffctl::sde
