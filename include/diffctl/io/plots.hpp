#pragma once
// Pictures of samples: 2-D point clouds as density images, image samples as a
// grid, and panels tiled into one image, ready for write_png.

#include <algorithm>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::io {

// A 2-D histogram of points [N, 2] over the square [lo, hi]^2, drawn as an RGB
// image [pixels, pixels, 3] (uint8): white where empty, darker blue where denser,
// on a log scale so that sparse tails stay visible. The y axis points up.
inline torch::Tensor density_image(const torch::Tensor& points, double lo, double hi, int64_t pixels = 256) {
  require(points.dim() == 2 && points.size(1) == 2, "density_image: expected points [N, 2], found ", points.sizes());
  require(hi > lo && pixels > 0, "density_image: expected lo < hi and pixels > 0, found lo = ", lo, ", hi = ", hi,
          ", pixels = ", pixels);
  const torch::Tensor p = points.to(torch::kCPU, torch::kDouble);
  const torch::Tensor cell = ((p - lo) / (hi - lo) * double(pixels)).floor().to(torch::kLong);
  const torch::Tensor inside = ((cell >= 0) & (cell < pixels)).all(1);
  const torch::Tensor col = cell.index({inside, 0});
  const torch::Tensor row = (pixels - 1) - cell.index({inside, 1});
  const torch::Tensor counts = torch::bincount(row * pixels + col, {}, pixels * pixels).to(torch::kDouble);
  const double peak = std::max(1.0, counts.max().item<double>());
  const torch::Tensor level = (counts.log1p() / std::log1p(peak)).view({pixels, pixels, 1});
  // From white (no samples) to a deep blue (the densest cell).
  const torch::Tensor empty = torch::tensor({255.0, 255.0, 255.0}, torch::kDouble);
  const torch::Tensor dense = torch::tensor({8.0, 48.0, 107.0}, torch::kDouble);
  return (empty + level * (dense - empty)).round().clamp(0, 255).to(torch::kUInt8);
}

// Histograms of 1-D samples [N] (or [N, 1]) against reference samples, over
// [lo, hi] in `bins` bins, as an RGB image [height, bins * bar, 3]: the reference's
// density as light gray bars, the samples' as a dark blue step line on top, both
// on the same density scale.
inline torch::Tensor histogram_image(const torch::Tensor& samples, const torch::Tensor& reference, double lo, double hi,
                                     int64_t bins = 48, int64_t bar = 10, int64_t height = 256) {
  require(hi > lo && bins > 0 && bar > 0 && height > 1, "histogram_image: expected lo < hi and positive sizes");
  const auto density = [&](const torch::Tensor& x) {
    const torch::Tensor flat = x.to(torch::kCPU, torch::kDouble).flatten();
    return torch::histc(flat, bins, lo, hi) / std::max<int64_t>(1, flat.numel());
  };
  const torch::Tensor ref = density(reference), own = density(samples);
  const double peak = std::max(ref.max().item<double>(), own.max().item<double>());
  const auto to_row = [&](const torch::Tensor& d) {  // top pixel row of each bar
    return ((1.0 - d / std::max(peak, 1e-300)) * double(height - 1)).round().to(torch::kLong);
  };
  const torch::Tensor ref_top = to_row(ref).repeat_interleave(bar);  // [bins * bar]
  const torch::Tensor own_top = to_row(own).repeat_interleave(bar);
  const torch::Tensor rows = torch::arange(height, torch::kLong).unsqueeze(1);  // [H, 1]
  torch::Tensor image = torch::full({height, bins * bar, 3}, 255, torch::kUInt8);
  image.index_put_({rows >= ref_top.unsqueeze(0)}, torch::tensor({200, 200, 200}, torch::kUInt8));
  // A step line: each column spans its own bar top and its left neighbour's.
  const torch::Tensor left = torch::cat({own_top.narrow(0, 0, 1), own_top.narrow(0, 0, own_top.size(0) - 1)});
  const torch::Tensor line = (rows >= torch::minimum(own_top, left).unsqueeze(0) - 1) &
                             (rows <= torch::maximum(own_top, left).unsqueeze(0) + 1);
  image.index_put_({line}, torch::tensor({8, 48, 107}, torch::kUInt8));
  return image;
}

// 2-D samples [N, 2] as small dark blue dots, with reference points [M, 2] drawn
// over them as larger orange dots, in the square [lo, hi]^2 as an RGB image
// [pixels, pixels, 3]; the y axis points up.
inline torch::Tensor scatter_image(const torch::Tensor& samples, const torch::Tensor& reference, double lo, double hi,
                                   int64_t pixels = 384) {
  require(samples.dim() == 2 && samples.size(1) == 2 && reference.dim() == 2 && reference.size(1) == 2,
          "scatter_image: expected points [N, 2] and [M, 2], found ", samples.sizes(), " and ", reference.sizes());
  require(hi > lo && pixels > 2, "scatter_image: expected lo < hi and pixels > 2");
  torch::Tensor image = torch::full({pixels, pixels, 3}, 255, torch::kUInt8);
  const auto draw = [&](const torch::Tensor& points, std::vector<int64_t> rgb, int64_t radius) {
    const torch::Tensor cell =
        ((points.to(torch::kCPU, torch::kDouble) - lo) / (hi - lo) * double(pixels - 2)).round().to(torch::kLong) + 1;
    const torch::Tensor inside = ((cell >= 1) & (cell < pixels - 1)).all(1);
    const torch::Tensor col = cell.index({inside, 0}), row = (pixels - 1) - cell.index({inside, 1});
    const torch::Tensor color = torch::tensor(rgb, torch::kLong).to(torch::kUInt8);
    for (int64_t dr = -radius; dr <= radius; ++dr)
      for (int64_t dc = -radius; dc <= radius; ++dc) image.index_put_({row + dr, col + dc}, color);
  };
  draw(samples, {8, 48, 107}, 0);
  draw(reference, {230, 110, 20}, 1);
  return image;
}

// Tiles equally sized images [H, W, C] row by row, `columns` per row, with `gap`
// pixels of light gray between them.
inline torch::Tensor tile(const std::vector<torch::Tensor>& panels, int64_t columns, int64_t gap = 4) {
  require(!panels.empty() && columns > 0, "tile: expected panels and columns > 0");
  const auto shape = panels.front().sizes();
  for (std::size_t i = 0; i < panels.size(); ++i)
    require(panels[i].sizes() == shape, "tile: panel ", i, " has shape ", panels[i].sizes(), ", expected ", shape);
  const int64_t height = shape[0], width = shape[1], channels = shape[2];
  const auto count = static_cast<int64_t>(panels.size());
  const int64_t rows = (count + columns - 1) / columns;
  const int64_t used_columns = std::min(columns, count);
  torch::Tensor canvas =
      torch::full({rows * height + (rows + 1) * gap, used_columns * width + (used_columns + 1) * gap, channels}, 220,
                  torch::kUInt8);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t top = gap + (i / columns) * (height + gap);
    const int64_t left = gap + (i % columns) * (width + gap);
    canvas.narrow(0, top, height).narrow(1, left, width).copy_(panels[i]);
  }
  return canvas;
}

// Images [N, C, H, W] with values in [lo, hi] (diffusion samples: [-1, 1]) as one
// uint8 picture [H', W', C], `columns` per row (a row per class when the samples
// come class by class), each image scaled up by `zoom` so that 28x28 samples stay
// legible. Values outside [lo, hi] are clamped.
inline torch::Tensor image_grid(const torch::Tensor& images, int64_t columns, double lo = -1.0, double hi = 1.0,
                                int64_t zoom = 2) {
  require(images.defined() && images.dim() == 4 && images.size(0) > 0 && (images.size(1) == 1 || images.size(1) == 3),
          "image_grid: expected images [N, 1 or 3, H, W], found ",
          images.defined() ? images.sizes() : torch::IntArrayRef{});
  require(hi > lo && zoom >= 1 && columns >= 1, "image_grid: expected lo < hi, zoom >= 1, columns >= 1");
  torch::Tensor pixels = ((images.detach().to(torch::kCPU, torch::kFloat) - lo) * (255.0 / (hi - lo)))
                             .clamp(0.0, 255.0)
                             .round()
                             .to(torch::kUInt8);
  if (zoom > 1) pixels = pixels.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3);
  std::vector<torch::Tensor> panels;
  for (int64_t i = 0; i < pixels.size(0); ++i) panels.push_back(pixels[i].permute({1, 2, 0}).contiguous());
  return tile(panels, columns, 2);
}

}  // namespace diffctl::io
