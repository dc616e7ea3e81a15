// Output files of training runs: the metrics log across a crash and a resume,
// sample grids and NumPy arrays.

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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
  CHECK(testing::read_text(path) == "step,loss\n1,1\n2,0.5\n3,0.3333333\n4,0.5\n");

  // A fresh run starts the file over; a different header is refused on resume.
  { io::MetricsLog log(path, {"step", "loss"}); }
  CHECK(testing::read_text(path) == "step,loss\n");
  CHECK_THROWS_WITH(io::MetricsLog(path, {"step", "accuracy"}, 0),
                    Catch::Contains("is not this run's \"step,accuracy\""));
  io::MetricsLog log(path, {"step", "loss"});
  CHECK_THROWS_WITH(log.write(1, {1.0, 2.0}), Catch::Contains("expected 1 values"));
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
  const std::string bytes = testing::read_text(path);
  REQUIRE(bytes.size() >= 10);
  CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t length = std::size_t(uint8_t(bytes[8])) | (std::size_t(uint8_t(bytes[9])) << 8);
  CHECK((10 + length) % 64 == 0);
  const std::string header = bytes.substr(10, length);
  CHECK(header.starts_with("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }"));
  CHECK(header.back() == '\n');
  CHECK(bytes.substr(10 + length) == std::string("\x00\x02\x04\x01\x03\x05", 6));

  io::write_npy(path, torch::tensor({7, -1}, torch::kLong));
  const std::string labels = testing::read_text(path);
  CHECK(labels.find("'descr': '<i8'") != std::string::npos);
  CHECK(labels.find("'shape': (2,)") != std::string::npos);
  CHECK(labels.size() % 64 == 16);  // header to a 64-byte boundary, then two 8-byte values
  int64_t values[2];
  std::memcpy(values, labels.data() + labels.size() - 16, 16);
  CHECK(values[0] == 7);
  CHECK(values[1] == -1);
  CHECK_THROWS_WITH(io::write_npy(path, torch::zeros({2}, torch::kHalf)), Catch::Contains("no NumPy type"));
}
