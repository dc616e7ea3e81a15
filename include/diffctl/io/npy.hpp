#pragma once
// Tensors as NumPy .npy files (format version 1.0), which numpy.load, and through
// it most tools, read without this library: a magic string, a Python-literal header
// with the dtype, the shape and C order, then the raw little-endian values. The file
// appears whole or not at all (io::write_atomically).

#include <bit>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"

namespace diffctl::io {

// NumPy's dtype string of a tensor's element type; the supported types.
inline std::string npy_descr(torch::ScalarType type) {
  switch (type) {
    case torch::kUInt8:
      return "|u1";
    case torch::kInt8:
      return "|i1";
    case torch::kInt32:
      return "<i4";
    case torch::kInt64:
      return "<i8";
    case torch::kFloat:
      return "<f4";
    case torch::kDouble:
      return "<f8";
    case torch::kBool:
      return "|b1";
    default:
      throw std::invalid_argument(diffctl::detail::concat("write_npy: no NumPy type for ", type,
                                                          " (uint8, int8, int32, int64, float32, float64, bool)"));
  }
}

// Writes `tensor` (any device, any strides) to `path` as an .npy array of its
// shape and element type.
inline void write_npy(const std::filesystem::path& path, const torch::Tensor& tensor) {
  static_assert(std::endian::native == std::endian::little, "write_npy: writes little-endian data");
  require(tensor.defined(), "write_npy ", path.string(), ": the tensor is undefined");
  const std::string descr = npy_descr(tensor.scalar_type());
  const torch::Tensor data = tensor.detach().to(torch::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < data.dim(); ++i)
    shape += std::to_string(data.size(i)) + (data.dim() == 1 ? "," : i + 1 < data.dim() ? ", " : "");
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  require(header.size() <= 65535, "write_npy ", path.string(), ": the shape is too long for a version 1.0 header");
  write_atomically(path, [&](const std::filesystem::path& partial) {
    std::ofstream out(partial, std::ios::binary);
    const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.write(magic, sizeof magic);
    const auto length = static_cast<uint16_t>(header.size());
    const char length_bytes[] = {static_cast<char>(length & 0xff), static_cast<char>(length >> 8)};
    out.write(length_bytes, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(data.data_ptr()), static_cast<std::streamsize>(data.nbytes()));
    out.close();
    return static_cast<bool>(out);
  });
}

}  // namespace diffctl::io
