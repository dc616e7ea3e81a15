// Where masked controls act on a grid (sde/control_schedule.hpp), worked out by hand
// on a grid of six steps.

#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/sde/control_schedule.hpp"
#include "diffctl/sde/time_grid.hpp"

using namespace diffctl;
using Catch::Matchers::Contains;

namespace {
std::vector<int64_t> rows_of(const sde::ControlSchedule& plan, std::size_t steps) {
  std::vector<int64_t> out;
  for (std::size_t k = 0; k < steps; ++k) out.push_back(plan.row_of(k));
  return out;
}
std::vector<int64_t> indices(const torch::Tensor& t) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(t[i].item<int64_t>());
  return out;
}
}  // namespace

TEST_CASE("impulses act on their own step, held controls until the next measured time", "[sde][controls]") {
  const auto grid = sde::TimeGrid::uniform(3.0, 6);  // h = 0.5
  const std::vector<std::size_t> measured{0, 2, 4};
  // Row 0 controls samples 0 and 2, row 1 none, row 2 sample 1.
  const torch::Tensor mask = torch::tensor({1, 0, 1, 0, 0, 0, 0, 1, 0}, torch::kBool).view({3, 3});

  const sde::ControlSchedule impulses(grid, measured, mask, false);
  CHECK(rows_of(impulses, 6) == std::vector<int64_t>{0, -1, 1, -1, 2, -1});
  CHECK((impulses.controlled(0) && !impulses.controlled(1) && !impulses.controlled(2) && impulses.controlled(4)));
  CHECK(indices(impulses.samples(0)) == std::vector<int64_t>{0, 2});
  CHECK(indices(impulses.samples(4)) == std::vector<int64_t>{1});
  CHECK(impulses.samples(2).numel() == 0);
  CHECK((impulses.starts_row(0) && impulses.starts_row(2) && impulses.starts_row(4) && !impulses.starts_row(1)));
  for (std::size_t r = 0; r < 3; ++r) CHECK(impulses.span(r) == Approx(1.0));

  const sde::ControlSchedule held(grid, measured, mask, true);
  CHECK(rows_of(held, 6) == std::vector<int64_t>{0, 0, 1, 1, 2, 2});
  CHECK((held.controlled(0) && held.controlled(1) && !held.controlled(2) && !held.controlled(3)));
  CHECK((held.controlled(4) && held.controlled(5)));
  CHECK(indices(held.samples(5)) == std::vector<int64_t>{1});
  CHECK((held.starts_row(0) && !held.starts_row(1) && held.starts_row(4) && !held.starts_row(5)));
  CHECK(indices(held.samples_of_row(0)) == std::vector<int64_t>{0, 2});
}

TEST_CASE("a control's span runs to the next measured time, the last one's to T", "[sde][controls]") {
  const auto grid = sde::TimeGrid::uniform(3.0, 6);
  const torch::Tensor mask = torch::ones({2, 4}, torch::kBool);
  const sde::ControlSchedule held(grid, {1, 2}, mask, true);
  CHECK(held.span(0) == Approx(0.5));
  CHECK(held.span(1) == Approx(2.0));
  CHECK(rows_of(held, 6) == std::vector<int64_t>{-1, 0, 1, 1, 1, 1});
  CHECK(!held.controlled(0));
  CHECK(held.rows() == 2);
}

TEST_CASE("a control schedule refuses a mask or measured points that do not fit", "[sde][controls]") {
  const auto grid = sde::TimeGrid::uniform(1.0, 4);
  CHECK_THROWS_WITH(sde::ControlSchedule(grid, {0, 2}, torch::ones({3, 2}, torch::kBool), false),
                    Contains("mask must be bool [2, B]"));
  CHECK_THROWS_WITH(sde::ControlSchedule(grid, {0, 2}, torch::ones({2, 2}), false), Contains("mask must be bool"));
  CHECK_THROWS_WITH(sde::ControlSchedule(grid, {2, 1}, torch::ones({2, 2}, torch::kBool), false),
                    Contains("increasing indices of steps, below 4"));
  CHECK_THROWS_WITH(sde::ControlSchedule(grid, {4}, torch::ones({1, 2}, torch::kBool), true), Contains("below 4"));
}
