#pragma once
// IDX files (the MNIST format), gzipped or plain, and Fashion-MNIST built on them.
//
// Readers are strict: a file must hold exactly the items its header declares, so
// bytes after them (a wrong or concatenated file) are rejected, not ignored.

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "diffctl/data/image_dataset.hpp"
#include "diffctl/error.hpp"

namespace diffctl::data {

// Where Debian's package dataset-fashion-mnist installs the four .gz files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kFashionMnistPackage = "dataset-fashion-mnist";
inline constexpr std::uint32_t kIdxImagesMagic = 0x00000803;  // unsigned bytes, 3 dimensions
inline constexpr std::uint32_t kIdxLabelsMagic = 0x00000801;  // unsigned bytes, 1 dimension

inline std::vector<std::string> fashion_mnist_class_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

inline Prompts fashion_mnist_prompts() { return Prompts(fashion_mnist_class_names()); }

namespace detail {

inline bool is_fashion_mnist_dir(const std::filesystem::path& dir) {
  std::error_code error;
  const std::filesystem::path standard(kFashionMnistDir);
  return dir.lexically_normal() == standard || std::filesystem::equivalent(dir, standard, error);
}

inline std::string install_hint(const std::filesystem::path& dir) {
  return is_fashion_mnist_dir(dir) ? concat("; Fashion-MNIST comes with the Debian package ", kFashionMnistPackage,
                                            " (apt-get install ", kFashionMnistPackage, ")")
                                   : std::string();
}

inline void require_file(const std::filesystem::path& path) {
  std::error_code error;
  require(std::filesystem::is_regular_file(path, error), path.string(), ": no such file",
          install_hint(path.parent_path()));
}

inline std::string hex32(std::uint32_t value) {
  constexpr const char* kDigits = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) out += kDigits[(value >> shift) & 0xF];
  return out;
}

// Reads the magic number and the dimensions after it (big-endian uint32 each).
inline std::vector<std::uint32_t> read_idx_header(ZlibFile& file, const std::filesystem::path& path,
                                                  std::uint32_t expected_magic, std::size_t dims) {
  std::vector<std::uint8_t> bytes(4 * (dims + 1));
  const std::size_t got = file.read(bytes.data(), bytes.size());
  require(got == bytes.size(), path.string(), ": truncated header: expected ", bytes.size(), " bytes, found ", got,
          file.early_end());
  std::vector<std::uint32_t> words(dims + 1);
  for (std::size_t i = 0; i < words.size(); ++i)
    words[i] = std::uint32_t{bytes[4 * i]} << 24 | std::uint32_t{bytes[4 * i + 1]} << 16 |
               std::uint32_t{bytes[4 * i + 2]} << 8 | std::uint32_t{bytes[4 * i + 3]};
  const char* other = words[0] == kIdxImagesMagic   ? " (an IDX images file)"
                      : words[0] == kIdxLabelsMagic ? " (an IDX labels file)"
                                                    : "";
  require(words[0] == expected_magic, path.string(), ": magic number: expected ", hex32(expected_magic), ", found ",
          hex32(words[0]), other);
  return words;
}

// Reads the `expected` data bytes after the header and checks nothing follows them.
inline std::vector<std::uint8_t> read_idx_body(ZlibFile& file, const std::filesystem::path& path,
                                               std::uint64_t expected, std::uint32_t items, const char* unit) {
  std::vector<std::uint8_t> bytes;
  const std::size_t got = file.append(bytes, static_cast<std::size_t>(expected));
  require(got == expected, path.string(), ": truncated: the header's item count ", items, " needs ", expected, " ",
          unit, ", found ", got, file.early_end());
  const std::size_t rest = file.count_rest();
  require(rest == 0, path.string(), ": ", rest, " unexpected bytes after the ", items,
          " items of the header's item count");
  return bytes;
}

}  // namespace detail

// An IDX images file (magic 0x00000803: count, rows, cols, then the pixels) as
// uint8 [N, 1, rows, cols].
inline torch::Tensor read_idx_images(const std::filesystem::path& path) {
  detail::require_file(path);
  detail::ZlibFile file(path);
  const std::vector<std::uint32_t> header = detail::read_idx_header(file, path, kIdxImagesMagic, 3);
  const std::uint32_t items = header[1], rows = header[2], cols = header[3];
  // Keeps the byte count below 2^56 (real IDX images are tens of pixels a side).
  require(rows >= 1 && cols >= 1 && rows <= 4096 && cols <= 4096, path.string(),
          ": image size: expected rows and cols in [1, 4096], found ", rows, "x", cols);
  const std::uint64_t expected = std::uint64_t{items} * rows * cols;
  std::vector<std::uint8_t> pixels = detail::read_idx_body(file, path, expected, items, "pixel bytes");
  return detail::adopt_bytes(std::move(pixels), {int64_t{items}, 1, int64_t{rows}, int64_t{cols}});
}

// An IDX labels file (magic 0x00000801: count, then one byte a label) as int64
// [N]; every label must be below `num_classes`.
inline torch::Tensor read_idx_labels(const std::filesystem::path& path, int64_t num_classes = 10) {
  require(num_classes >= 1 && num_classes <= 256, "read_idx_labels: num_classes: expected in [1, 256], found ",
          num_classes);
  detail::require_file(path);
  detail::ZlibFile file(path);
  const std::uint32_t items = detail::read_idx_header(file, path, kIdxLabelsMagic, 1)[1];
  std::vector<std::uint8_t> labels = detail::read_idx_body(file, path, items, items, "label bytes");
  for (std::size_t i = 0; i < labels.size(); ++i)
    require(labels[i] < num_classes, path.string(), ": label ", int{labels[i]}, " at index ", i, ": expected < ",
            num_classes);
  return detail::adopt_bytes(std::move(labels), {int64_t{items}}).to(torch::kLong);
}

// An IDX images file and its labels file, which must hold as many items.
inline ImageDataset read_idx_dataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path,
                                     std::vector<std::string> class_names) {
  ImageDataset dataset{read_idx_images(images_path),
                       read_idx_labels(labels_path, static_cast<int64_t>(class_names.size())), std::move(class_names)};
  require(dataset.images.size(0) == dataset.labels.size(0), labels_path.string(), ": item count: expected ",
          dataset.images.size(0), " (as in ", images_path.string(), "), found ", dataset.labels.size(0));
  return dataset;
}

// Fashion-MNIST's train (60000) or test (10000) split: images uint8 [N, 1, 28, 28].
// Each file is taken gzipped as Debian ships it (name.gz) or unpacked (name).
inline ImageDataset load_fashion_mnist(const std::filesystem::path& dir = kFashionMnistDir,
                                       Split split = Split::train) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const auto locate = [&](const std::string& name) {
    for (const std::filesystem::path& candidate : {dir / (name + ".gz"), dir / name}) {
      std::error_code error;
      if (std::filesystem::is_regular_file(candidate, error)) return candidate;
    }
    throw std::invalid_argument(detail::concat("Fashion-MNIST ", to_string(split), ": neither ", name, ".gz nor ", name,
                                               " found in ", dir.string(), detail::install_hint(dir)));
  };
  const std::filesystem::path images = locate(prefix + "-images-idx3-ubyte");
  const std::filesystem::path labels = locate(prefix + "-labels-idx1-ubyte");
  return read_idx_dataset(images, labels, fashion_mnist_class_names());
}

}  // namespace diffctl::data
