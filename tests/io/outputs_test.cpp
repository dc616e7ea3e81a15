// Output files of training runs: the metrics log across a crash and a resume,
// sample grids, charts and NumPy arrays.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "diffctl/io/charts.hpp"
#include "diffctl/io/metrics_log.hpp"
#include "diffctl/io/npy.hpp"
#include "diffctl/io/plots.hpp"
#include "support/temp_dir.hpp"

using namespace diffctl;

TEST_CASE("a resumed metrics log keeps the rows up to its checkpoint", "[io][metrics_log]") {
  const testing::TempDir dir;
  const auto path = dir.path() / "metrics.csv";
  {
    io::MetricsLog log(path, {"step", "loss"});
    for (int step = 1; step <= 5; ++step) log.write(step, {1.0 / step});
  }
  // A crash cut the last row short.
  { std::ofstream(path, std::ios::app) << "6,0.1"; }
  {
    io::MetricsLog log(path, {"step", "loss"}, 3);  // the checkpoint was at step 3
    log.write(4, {0.5});
    CHECK(log.rows() == std::vector<std::string>{"1,1", "2,0.5", "3,0.3333333", "4,0.5"});
  }
  CHECK(testing::read_bytes(path) == "step,loss\n1,1\n2,0.5\n3,0.3333333\n4,0.5\n");

  // A fresh run starts the file over; a different header is refused on resume.
  { io::MetricsLog log(path, {"step", "loss"}); }
  CHECK(testing::read_bytes(path) == "step,loss\n");
  CHECK_THROWS_WITH(io::MetricsLog(path, {"step", "accuracy"}, 0),
                    Catch::Contains("is not this run's \"step,accuracy\""));
  io::MetricsLog log(path, {"step", "loss"});
  CHECK_THROWS_WITH(log.write(1, {1.0, 2.0}), Catch::Contains("expected 1 values"));
}

TEST_CASE("a metrics log gives its columns back as numbers, unmeasured ones as NaN", "[io][metrics_log]") {
  const testing::TempDir dir;
  io::MetricsLog log(dir.path() / "rounds.csv", {"round", "reward", "kl"});
  log.write(0, {0.25, std::nan("")});
  log.write(1, {0.5, 17.5});
  CHECK(log.column("round") == std::vector<double>{0.0, 1.0});
  CHECK(log.column("reward") == std::vector<double>{0.25, 0.5});
  const std::vector<double> kl = log.column("kl");
  CHECK(std::isnan(kl[0]));
  CHECK(kl[1] == 17.5);
  CHECK_THROWS_WITH(log.column("accuracy"), Catch::Contains("no column \"accuracy\""));
}

TEST_CASE("chart axes tick at 1, 2 or 5 times a power of ten and cover the data", "[io][charts]") {
  const auto a = io::detail::nice_axis(0.0, 0.93);
  CHECK(a.lo == 0.0);
  CHECK(a.hi == Approx(1.0));
  CHECK(a.step == Approx(0.2));
  const auto b = io::detail::nice_axis(3.0, 17.5);
  CHECK(b.lo == 0.0);
  CHECK(b.hi == Approx(20.0));
  CHECK(b.step == Approx(5.0));
  const auto c = io::detail::nice_axis(128.0, 896.0);
  CHECK(c.step == Approx(200.0));
  CHECK(c.lo == 0.0);
  CHECK(c.hi == Approx(1000.0));
  // One value: a range around it, not a division by zero.
  const auto d = io::detail::nice_axis(2.0, 2.0);
  CHECK(d.lo < 2.0);
  CHECK(d.hi > 2.0);
  CHECK(io::detail::tick_text(0.6000000001, 0.2) == "0.6");
  CHECK(io::detail::tick_text(-1e-17, 0.2) == "0.0");
}

TEST_CASE("a chart draws every finite point inside its panel, labelled and escaped", "[io][charts]") {
  io::ChartPanel panel{.title = "accuracy <per prompt>", .x_label = "labels", .y_label = "accuracy"};
  panel.series.push_back({.name = "SEIKO & co",
                          .x = {0.0, 128.0, 384.0, 896.0},
                          .y = {0.1, std::nan(""), 0.7, 0.85},
                          .y_err = {0.0, 0.0, 0.05, 0.02},
                          .labels = {"", "", "", "a=0.03"}});
  panel.series.push_back({.name = "greedy", .x = {896.0}, .y = {0.88}, .lines = false});
  panel.y_marks = {0.8};
  panel.y_mark_labels = {"target"};
  const io::ChartLayout layout{.panel_width = 400, .panel_height = 300};
  const std::string svg = io::svg_chart({panel, panel}, layout);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("width=\"800\" height=\"300\"") != std::string::npos);  // two panels in a row
  CHECK(svg.find("accuracy &lt;per prompt&gt;") != std::string::npos);
  CHECK(svg.find("SEIKO &amp; co") != std::string::npos);
  CHECK(svg.find(">a=0.03</text>") != std::string::npos);
  CHECK(svg.find(">target</text>") != std::string::npos);
  // The NaN point is left out: 3 + 1 markers per panel, each inside its panel's plotting area.
  const std::regex circle("<circle cx=\"([0-9.]+)\" cy=\"([0-9.]+)\"");
  int count = 0;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), circle); it != std::sregex_iterator(); ++it, ++count) {
    const double cx = std::stod((*it)[1]), cy = std::stod((*it)[2]);
    const double left = count < 4 ? 0.0 : 400.0;
    CHECK(cx >= left + 62);
    CHECK(cx <= left + 62 + 320);
    CHECK(cy >= 30);
    CHECK(cy <= 30 + 222);
  }
  CHECK(count == 8);
  // A series whose lengths disagree is refused by name.
  panel.series[1].y = {0.88, 0.9};
  CHECK_THROWS_WITH(io::svg_chart({panel}), Catch::Contains("series \"greedy\": 1 x values and 2 y values"));
}

TEST_CASE("a log x axis ticks decades at 1, 2 and 5, and one legend can stand beside the panels", "[io][charts]") {
  io::ChartPanel panel{.title = "accuracy", .log_x = true};
  panel.series.push_back({.name = "SEIKO", .x = {10.0, 97.0}, .y = {0.8, 0.1}, .labels = {"a", "b"}});
  panel.series.push_back({.name = "DDPO", .x = {3.0}, .y = {0.1}});
  const io::ChartLayout layout{.panel_width = 400, .panel_height = 300, .legend_width = 120};
  const std::string svg = io::svg_chart({panel, panel}, layout);
  CHECK(svg.find("width=\"920\" height=\"300\"") != std::string::npos);
  for (const char* tick : {">1</text>", ">2</text>", ">5</text>", ">10</text>", ">50</text>", ">100</text>"})
    CHECK(svg.find(tick) != std::string::npos);
  // 10 lies half way along the decades 1 to 100: x = 62 + 320 / 2.
  CHECK(svg.find("<circle cx=\"222.0\"") != std::string::npos);
  // The legend once, beside the panels, not inside each.
  std::size_t names = 0;
  for (std::size_t at = svg.find(">SEIKO</text>"); at != std::string::npos; at = svg.find(">SEIKO</text>", at + 1))
    ++names;
  CHECK(names == 1);
  CHECK(svg.find("<text x=\"818\"") != std::string::npos);
  // The point near the right edge ends its label there.
  CHECK(svg.find("text-anchor=\"end\">b</text>") != std::string::npos);
  panel.series[1].x = {0.0};
  CHECK_THROWS_WITH(io::svg_chart({panel}), Catch::Contains("a log x axis needs x > 0"));
}

TEST_CASE("an image grid maps [-1, 1] to gray levels, row by row", "[io][plots]") {
  // Three 1x2x2 images: black, mid-gray, white; two per row, zoom 1, gap 2.
  const torch::Tensor images = torch::tensor({-1.0f, 0.0f, 1.0f}).view({3, 1, 1, 1}).expand({3, 1, 2, 2});
  const torch::Tensor grid = io::image_grid(images, 2, -1.0, 1.0, 1);
  REQUIRE(grid.sizes() == torch::IntArrayRef({2 * 2 + 3 * 2, 2 * 2 + 3 * 2, 1}));
  CHECK(grid[2][2][0].item<int>() == 0);
  CHECK(grid[2][6][0].item<int>() == 128);  // 127.5 rounds up
  CHECK(grid[6][2][0].item<int>() == 255);
  CHECK(grid[0][0][0].item<int>() == 220);  // the gap
  CHECK(io::image_grid(images, 3, -1.0, 1.0, 2).sizes() == torch::IntArrayRef({4 + 4, 3 * 4 + 8, 1}));
  CHECK_THROWS_WITH(io::image_grid(torch::zeros({2, 2, 4, 4}), 2),
                    Catch::Contains("expected images [N, 1 or 3, H, W]"));
}

TEST_CASE("an .npy file holds NumPy's header, then the values in C order", "[io][npy]") {
  const testing::TempDir dir;
  const auto path = dir.path() / "samples.npy";
  // A transposed (non-contiguous) tensor is written in its logical C order.
  const torch::Tensor images = torch::arange(6, torch::kUInt8).view({3, 2}).t();  // [[0, 2, 4], [1, 3, 5]]
  io::write_npy(path, images);
  const std::string bytes = testing::read_bytes(path);
  REQUIRE(bytes.size() >= 10);
  CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t length = std::size_t(uint8_t(bytes[8])) | (std::size_t(uint8_t(bytes[9])) << 8);
  CHECK((10 + length) % 64 == 0);
  const std::string header = bytes.substr(10, length);
  CHECK(header.starts_with("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }"));
  CHECK(header.back() == '\n');
  CHECK(bytes.substr(10 + length) == std::string("\x00\x02\x04\x01\x03\x05", 6));

  io::write_npy(path, torch::tensor({7, -1}, torch::kLong));
  const std::string labels = testing::read_bytes(path);
  CHECK(labels.find("'descr': '<i8'") != std::string::npos);
  CHECK(labels.find("'shape': (2,)") != std::string::npos);
  CHECK(labels.size() % 64 == 16);  // header to a 64-byte boundary, then two 8-byte values
  int64_t values[2];
  std::memcpy(values, labels.data() + labels.size() - 16, 16);
  CHECK(values[0] == 7);
  CHECK(values[1] == -1);
  CHECK_THROWS_WITH(io::write_npy(path, torch::zeros({2}, torch::kHalf)), Catch::Contains("no NumPy type"));
}
