#include <catch2/catch.hpp>

#include <cmath>

#include "diffctl/sde/time_grid.hpp"

using diffctl::sde::TimeGrid;

TEST_CASE("uniform grids", "[time_grid]") {
  const auto grid = TimeGrid::uniform(1.0, 4);
  REQUIRE(grid.size() == 5);
  CHECK(grid.steps() == 4);
  CHECK(grid[0] == 0.0);
  CHECK(grid[2] == 0.5);
  CHECK(grid.back() == 1.0);

  // A grid that stops short of the data end, as networks undefined at sigma = 0 need.
  const auto short_grid = TimeGrid::uniform(1.0, 3, 0.0, 0.999);
  CHECK(short_grid.back() == 0.999);
  CHECK(short_grid[1] == Approx(0.333));
}

TEST_CASE("grid points are found despite rounding", "[time_grid]") {
  const auto grid = TimeGrid::uniform(1.0, 10);
  CHECK(grid.index_of(0.3) == 3u);  // 3 * 0.1 is not 0.3 in binary
  CHECK(grid.index_of(0.1 + 0.2) == 3u);
  CHECK(grid.index_of(1.0) == 10u);
  CHECK_FALSE(grid.index_of(0.35).has_value());
  CHECK_FALSE(grid.index_of(1.5).has_value());
}

TEST_CASE("bad grids are rejected with the reason", "[time_grid][errors]") {
  CHECK_THROWS_WITH(TimeGrid({}, 1.0), Catch::Contains("at least 2 times, found 0"));
  CHECK_THROWS_WITH(TimeGrid({0.5}, 1.0), Catch::Contains("at least 2 times, found 1"));
  CHECK_THROWS_WITH(TimeGrid({0.0, 0.5, 0.5}, 1.0),
                    Catch::Contains("must increase strictly, but t[1] = 0.5 and t[2] = 0.5"));
  CHECK_THROWS_WITH(TimeGrid({0.0, 0.7, 0.6}, 1.0), Catch::Contains("must increase strictly"));
  CHECK_THROWS_WITH(TimeGrid({0.0, 1.5}, 1.0), Catch::Contains("time 1 = 1.5 lies outside [0, T]"));
  CHECK_THROWS_WITH(TimeGrid({-0.1, 0.5}, 1.0), Catch::Contains("lies outside [0, T]"));
  CHECK_THROWS_WITH(TimeGrid({0.0, NAN}, 1.0), Catch::Contains("lies outside [0, T]"));
  CHECK_THROWS_WITH(TimeGrid({0.0, 0.5}, 0.0), Catch::Contains("horizon T must be positive"));
  CHECK_THROWS_WITH(TimeGrid::uniform(1.0, 0), Catch::Contains("at least 1 step"));
}
