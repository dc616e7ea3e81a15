#pragma once
// CIFAR-10 in its binary version (cifar-10-binary.tar.gz unpacked): files of
// records of 1 label byte and 3072 pixel bytes, the red, green and blue 32x32
// planes in turn.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "diffctl/data/image_dataset.hpp"
#include "diffctl/error.hpp"

namespace diffctl::data {

inline constexpr int64_t kCifar10Side = 32;
inline constexpr int64_t kCifar10RecordBytes = 1 + 3 * kCifar10Side * kCifar10Side;

inline std::vector<std::string> cifar10_class_names() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

// One batch file as uint8 [N, 3, 32, 32] images and int64 [N] labels. A gzipped
// file is inflated on the way.
inline ImageDataset read_cifar10_batch(const std::filesystem::path& path) {
  std::error_code error;
  require(std::filesystem::is_regular_file(path, error), path.string(), ": no such file");
  detail::ZlibFile file(path);
  std::vector<std::uint8_t> bytes;
  const std::uintmax_t on_disk = std::filesystem::file_size(path, error);
  if (!error) bytes.reserve(static_cast<std::size_t>(on_disk));  // exact unless gzipped
  file.append(bytes, static_cast<std::size_t>(-1));
  const auto length = static_cast<int64_t>(bytes.size());
  require(length > 0 && length % kCifar10RecordBytes == 0, path.string(), ": length ", length,
          " bytes: expected a positive multiple of the record size ", kCifar10RecordBytes, file.early_end());
  const int64_t items = length / kCifar10RecordBytes;
  const torch::Tensor records = torch::from_blob(bytes.data(), {items, kCifar10RecordBytes}, torch::kUInt8);
  for (int64_t i = 0; i < items; ++i) {
    const int label = bytes[static_cast<std::size_t>(i * kCifar10RecordBytes)];
    require(label < 10, path.string(), ": label ", label, " at index ", i, ": expected < 10");
  }
  // Copies out of `bytes` before it goes away (a one-record file would otherwise
  // give a view of it).
  torch::Tensor images = torch::empty({items, 3, kCifar10Side, kCifar10Side}, torch::kUInt8);
  images.view({items, kCifar10RecordBytes - 1}).copy_(records.slice(1, 1));
  torch::Tensor labels = records.select(1, 0).to(torch::kLong);
  return {std::move(images), std::move(labels), cifar10_class_names()};
}

// The train split (whichever of data_batch_1.bin .. data_batch_5.bin are present,
// in that order) or the test split (test_batch.bin). `dir` may also be the folder
// that holds the unpacked cifar-10-batches-bin.
inline ImageDataset load_cifar10(const std::filesystem::path& dir, Split split = Split::train) {
  std::vector<std::string> names;
  if (split == Split::train)
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  else names.push_back("test_batch.bin");
  const auto present = [&names](const std::filesystem::path& folder) {
    std::vector<std::filesystem::path> found;
    for (const std::string& name : names) {
      std::error_code error;
      if (std::filesystem::is_regular_file(folder / name, error)) found.push_back(folder / name);
    }
    return found;
  };
  std::vector<std::filesystem::path> files = present(dir);
  if (files.empty()) files = present(dir / "cifar-10-batches-bin");
  require(!files.empty(), "CIFAR-10 ", to_string(split), ": none of ", names.front(),
          names.size() > 1 ? " .. " + names.back() : std::string(), " found in ", dir.string(),
          " (nor in its cifar-10-batches-bin)");
  std::vector<torch::Tensor> images, labels;
  for (const std::filesystem::path& file : files) {
    ImageDataset batch = read_cifar10_batch(file);
    images.push_back(std::move(batch.images));
    labels.push_back(std::move(batch.labels));
  }
  if (images.size() == 1) return {std::move(images[0]), std::move(labels[0]), cifar10_class_names()};
  return {torch::cat(images), torch::cat(labels), cifar10_class_names()};
}

}  // namespace diffctl::data
