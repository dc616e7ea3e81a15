// Measurement selection strategies (mss/selection.hpp) on a fixed uncertainty.

#include <catch2/catch.hpp>

#include <vector>

#include <torch/torch.h>

#include "diffctl/mss/selection.hpp"

using namespace diffctl;
using Catch::Matchers::Contains;

TEST_CASE("measurement selection strategies pick the asked-for control times", "[mss]") {
  const std::vector<double> times{0.0, 0.1, 0.2, 0.3, 0.4, 0.5};
  const torch::Tensor g = torch::tensor({{0.1, 0.9}, {0.5, 0.1}, {0.2, 0.8}, {0.9, 0.0}, {0.0, 0.7}, {0.3, 0.2}});
  CHECK(mss::EveryStep{}.select(times, g).all().item<bool>());
  CHECK(torch::equal(mss::Uniform{3}.select(times, g).select(1, 0),
                     torch::tensor({true, false, true, false, true, false})));
  const torch::Tensor top = mss::TopK{2}.select(times, g);
  CHECK(torch::equal(top.select(1, 0), torch::tensor({false, true, false, true, false, false})));
  CHECK(torch::equal(top.select(1, 1), torch::tensor({true, false, true, false, false, false})));
  CHECK(torch::equal(mss::Threshold{0.75}.select(times, g), g.gt(0.75)));
  // Gaps of round(4 * 0.1 / (0.1 + g)), at least 1: g = 0.1 -> 2, 0.2 -> 1, 0.9 -> 1, 0 -> 4.
  const torch::Tensor adaptive = mss::AdaptiveGap{4, 0.1}.select(times, g);
  CHECK(torch::equal(adaptive.select(1, 0), torch::tensor({true, false, true, true, true, false})));
  CHECK(torch::equal(adaptive.select(1, 1), torch::tensor({true, true, false, true, false, false})));
  CHECK_THROWS_WITH(mss::TopK{2}.select(times, g.narrow(0, 0, 5)), Contains("expected uncertainty [6, B]"));
}
