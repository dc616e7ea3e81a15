#pragma once
// Tests of runs of several processes: each rank is this test binary running a
// hidden case, which connects through the environment run_ranks gives it and
// saves its result; the test compares the ranks' results with one process's.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "diffctl/distributed/c10d.hpp"
#include "support/processes.hpp"

namespace diffctl::testing {

// The body of a hidden rank case: one thread (as the one-process reference runs),
// the run's group, and compute(group)'s tensor saved as $DIFFCTL_TEST_OUT/rank<r>.pt.
template <class Compute>
void save_rank_result(Compute&& compute) {
  torch::set_num_threads(1);
  const char* out = std::getenv("DIFFCTL_TEST_OUT");
  REQUIRE(out != nullptr);
  const distributed::Group group = distributed::connect_from_environment({.timeout = std::chrono::seconds(60)});
  const torch::Tensor result = compute(group);
  torch::save(result, (std::filesystem::path(out) / ("rank" + std::to_string(group.rank()) + ".pt")).string());
}

// Runs the hidden case `tag` as the two ranks of a run (with the `extra`
// environment) in `dir`; returns the tensors they saved, after checking that both
// ended well.
inline std::vector<torch::Tensor> two_rank_results(const std::string& tag, const std::filesystem::path& dir,
                                                   std::vector<std::string> extra = {}) {
  extra.push_back("DIFFCTL_TEST_OUT=" + dir.string());
  const std::string failed = run_ranks(tag, 2, dir, dir / "store", extra, std::chrono::minutes(5));
  INFO(failed);
  REQUIRE(failed.empty());
  std::vector<torch::Tensor> results(2);
  for (int r = 0; r < 2; ++r) torch::load(results[r], (dir / ("rank" + std::to_string(r) + ".pt")).string());
  return results;
}

// Runs `compute` in this process alone, at one thread as the ranks run.
template <class Compute>
torch::Tensor one_process_result(Compute&& compute) {
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  torch::Tensor result = compute(distributed::Group());
  torch::set_num_threads(threads);
  return result;
}

// A two-process run's result beside one process's.
struct TwoRanksAndOne {
  torch::Tensor ranks;  // rank 0's, checked equal to rank 1's (one model on every rank)
  torch::Tensor alone;  // one process's on the same global batches

  // max |ranks - alone| / (|alone| + floor).
  double largest_relative_difference(double floor) const {
    return ((ranks - alone).abs() / (alone.abs() + floor)).max().item<double>();
  }
};

// Runs `compute` as the two ranks of the hidden case `tag` (whose body calls
// save_rank_result with the same computation), then in this process alone. A
// computation that initialises from a seed of its group's rank shows that rank 0's
// start reaches every rank.
template <class Compute>
TwoRanksAndOne run_two_and_one(const std::string& tag, const std::filesystem::path& dir, Compute&& compute,
                               std::vector<std::string> extra = {}) {
  const auto ranks = two_rank_results(tag, dir, std::move(extra));
  CHECK(torch::equal(ranks[0], ranks[1]));
  TwoRanksAndOne result{ranks[0], one_process_result(compute)};
  REQUIRE(result.ranks.sizes() == result.alone.sizes());
  return result;
}

}  // namespace diffctl::testing
