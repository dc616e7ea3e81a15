#pragma once
// Pictures of samples: 2-D point clouds as density images, and panels tiled into
// one image, ready for write_png.

#include <algorithm>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::io {

// A 2-D histogram of points [N, 2] over the square [lo, hi]^2, drawn as an RGB
// image [pixels, pixels, 3] (uint8): white where empty, darker blue where denser,
// on a log scale so that sparse tails stay visible. The y axis points up.
inline torch::Tensor density_image(const torch::Tensor& points, double lo, double hi,
                                   int64_t pixels = 256) {
  require(points.dim() == 2 && points.size(1) == 2,
          "density_image: expected points [N, 2], found ", points.sizes());
  require(hi > lo && pixels > 0, "density_image: expected lo < hi and pixels > 0, found lo = ",
          lo, ", hi = ", hi, ", pixels = ", pixels);
  const torch::Tensor p = points.to(torch::kCPU, torch::kDouble);
  const torch::Tensor cell = ((p - lo) / (hi - lo) * double(pixels)).floor().to(torch::kLong);
  const torch::Tensor inside = ((cell >= 0) & (cell < pixels)).all(1);
  const torch::Tensor col = cell.index({inside, 0});
  const torch::Tensor row = (pixels - 1) - cell.index({inside, 1});
  const torch::Tensor counts =
      torch::bincount(row * pixels + col, {}, pixels * pixels).to(torch::kDouble);
  const double peak = std::max(1.0, counts.max().item<double>());
  const torch::Tensor level = (counts.log1p() / std::log1p(peak)).view({pixels, pixels, 1});
  // From white (no samples) to a deep blue (the densest cell).
  const torch::Tensor empty = torch::tensor({255.0, 255.0, 255.0}, torch::kDouble);
  const torch::Tensor dense = torch::tensor({8.0, 48.0, 107.0}, torch::kDouble);
  return (empty + level * (dense - empty)).round().clamp(0, 255).to(torch::kUInt8);
}

// Tiles equally sized images [H, W, C] row by row, `columns` per row, with `gap`
// pixels of light gray between them.
inline torch::Tensor tile(const std::vector<torch::Tensor>& panels, int64_t columns,
                          int64_t gap = 4) {
  require(!panels.empty() && columns > 0, "tile: expected panels and columns > 0");
  const auto shape = panels.front().sizes();
  for (std::size_t i = 0; i < panels.size(); ++i)
    require(panels[i].sizes() == shape, "tile: panel ", i, " has shape ", panels[i].sizes(),
            ", expected ", shape);
  const int64_t height = shape[0], width = shape[1], channels = shape[2];
  const auto count = static_cast<int64_t>(panels.size());
  const int64_t rows = (count + columns - 1) / columns;
  const int64_t used_columns = std::min(columns, count);
  torch::Tensor canvas = torch::full(
      {rows * height + (rows + 1) * gap, used_columns * width + (used_columns + 1) * gap, channels},
      220, torch::kUInt8);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t top = gap + (i / columns) * (height + gap);
    const int64_t left = gap + (i % columns) * (width + gap);
    canvas.narrow(0, top, height).narrow(1, left, width).copy_(panels[i]);
  }
  return canvas;
}

}  // namespace diffctl::io
