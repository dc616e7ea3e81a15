#pragma once
// PNG output for sample grids and plots. Uses stb_image_write (Debian: libstb-dev)
// compiled static into each translation unit that includes this header.

#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"

#ifndef STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#include <stb/stb_image_write.h>

namespace diffctl::io {

// Writes an 8-bit image [H, W, C] (C = 1 gray, 3 RGB, 4 RGBA) to `path`, whole or
// not at all.
inline void write_png(const std::filesystem::path& path, const torch::Tensor& image) {
  require(image.defined() && image.dim() == 3 && image.scalar_type() == torch::kUInt8, "write_png(", path.string(),
          "): expected a uint8 image [H, W, C], found ", image.defined() ? image.sizes() : torch::IntArrayRef{}, " of ",
          image.defined() ? image.scalar_type() : torch::kUInt8);
  const auto channels = image.size(2);
  require(channels == 1 || channels == 3 || channels == 4, "write_png(", path.string(),
          "): expected 1, 3 or 4 channels, found ", channels);
  const torch::Tensor pixels = image.to(torch::kCPU).contiguous();
  const auto height = static_cast<int>(pixels.size(0)), width = static_cast<int>(pixels.size(1));
  write_atomically(path, [&](const std::filesystem::path& partial) {
    return stbi_write_png(partial.c_str(), width, height, static_cast<int>(channels), pixels.data_ptr<uint8_t>(),
                          width * static_cast<int>(channels)) != 0;
  });
}

}  // namespace diffctl::io
