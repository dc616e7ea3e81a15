#pragma once
// Labelled image data sets held in memory, the batches a training loop draws from
// them, and the prompt table that maps class names to the int64 conditions z.

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/torch.h>
#include <zlib.h>

#include "diffctl/error.hpp"

namespace diffctl::data {

namespace detail {
using diffctl::detail::concat;  // data::detail would otherwise hide it
}  // namespace detail

enum class Split { train, test };

inline const char* to_string(Split split) { return split == Split::train ? "train" : "test"; }

inline Split parse_split(std::string_view text) {
  if (text == "train") return Split::train;
  if (text == "test") return Split::test;
  throw std::invalid_argument(detail::concat("split: expected \"train\" or \"test\", found \"", text, "\""));
}

// Images uint8 [N, C, H, W] in 0..255 and their class indices int64 [N].
struct ImageDataset {
  torch::Tensor images;
  torch::Tensor labels;
  std::vector<std::string> class_names;

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
};

// Checks the invariants every consumer relies on, so a hand-built data set fails
// here with a clear message rather than deep inside a model.
inline void check_image_dataset(const ImageDataset& dataset, std::string_view what) {
  require(dataset.images.defined() && dataset.labels.defined(), what, ": images and labels must be defined");
  require(dataset.images.dim() == 4 && dataset.images.scalar_type() == torch::kUInt8, what,
          ": images: expected uint8 [N, C, H, W], found ", dataset.images.scalar_type(), " ", dataset.images.sizes());
  require(dataset.labels.dim() == 1 && dataset.labels.scalar_type() == torch::kLong, what,
          ": labels: expected int64 [N], found ", dataset.labels.scalar_type(), " ", dataset.labels.sizes());
  require(dataset.labels.size(0) == dataset.images.size(0), what, ": item count: ", dataset.images.size(0),
          " images but ", dataset.labels.size(0), " labels");
  require(!dataset.class_names.empty(), what, ": class_names is empty");
  if (dataset.labels.numel() > 0) {
    const int64_t low = dataset.labels.min().item<int64_t>(), high = dataset.labels.max().item<int64_t>();
    require(low >= 0 && high < dataset.num_classes(), what, ": labels: expected in [0, ", dataset.num_classes(),
            "), found [", low, ", ", high, "]");
  }
}

// Examples per class, int64 [num_classes].
inline torch::Tensor class_counts(const ImageDataset& dataset) {
  return torch::bincount(dataset.labels.to(torch::kCPU), {}, dataset.num_classes());
}

// uint8 0..255 -> float in [-1, 1]: x / 127.5 - 1 (the range the diffusion models use).
inline torch::Tensor normalize_images(const torch::Tensor& images) {
  require(images.scalar_type() == torch::kUInt8, "normalize_images: expected uint8 images, found ",
          images.scalar_type());
  return images.to(torch::kFloat).div_(127.5).sub_(1.0);
}

// float in [-1, 1] -> uint8, clamped (samples overshoot) and rounded to nearest, so
// that to_uint8(normalize_images(x)) == x exactly.
inline torch::Tensor to_uint8(const torch::Tensor& images) {
  require(images.is_floating_point(), "to_uint8: expected floating-point images, found ", images.scalar_type());
  return images.add(1.0).mul_(127.5).round_().clamp_(0.0, 255.0).to(torch::kUInt8);
}

namespace detail {

// The seeds of one stream mixed through seed_seq so that nearby (seed, stream)
// pairs, say (1, 0) and (0, 1), give unrelated sequences.
inline std::mt19937_64 make_engine(std::uint64_t seed, std::uint64_t stream) {
  std::seed_seq mixed{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
  return std::mt19937_64(mixed);
}

// Uniform in [0, n) by rejection. std::uniform_int_distribution and std::shuffle
// differ between standard libraries; this keeps a seed's order the same everywhere.
inline std::uint64_t uniform_below(std::mt19937_64& engine, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t draw = engine();
  while (draw >= limit) draw = engine();
  return draw % n;
}

template <class T>
void shuffle(std::vector<T>& items, std::mt19937_64& engine) {
  for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[uniform_below(engine, i)]);
}

// A file read through zlib: zlib recognises gzip data by its magic bytes 1f 8b and
// inflates it, and passes any other file through unchanged, so the readers take
// Debian's .gz files and unpacked ones alike.
class ZlibFile {
 public:
  explicit ZlibFile(const std::filesystem::path& path) : path_(path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr)
      throw std::runtime_error(
          concat(path.string(), ": cannot open: ", errno ? std::strerror(errno) : "out of memory"));
    gzbuffer(file_, 1 << 18);  // zlib's 8 KiB default makes the many small reads slow
  }
  ~ZlibFile() {
    if (file_ != nullptr) gzclose(file_);
  }
  ZlibFile(const ZlibFile&) = delete;
  ZlibFile& operator=(const ZlibFile&) = delete;

  // Reads up to n bytes; fewer only at the end of the data.
  std::size_t read(void* out, std::size_t n) {
    constexpr std::size_t kChunk = std::size_t{1} << 30;  // gzread counts in unsigned int
    std::size_t done = 0;
    while (done < n) {
      const auto want = static_cast<unsigned>(std::min(kChunk, n - done));
      const int got = gzread(file_, static_cast<unsigned char*>(out) + done, want);
      if (got < 0) throw std::runtime_error(concat(path_.string(), ": cannot read: ", zlib_error()));
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    return done;
  }

  // Appends up to n bytes to `bytes`. The buffer grows as data arrives, so a header
  // that claims far more than the file holds, or a length not known in advance
  // (n = SIZE_MAX), costs no huge allocation.
  std::size_t append(std::vector<std::uint8_t>& bytes, std::size_t n) {
    constexpr std::size_t kReserveCap = std::size_t{256} << 20, kSliceCap = std::size_t{64} << 20;
    if (n != std::numeric_limits<std::size_t>::max()) bytes.reserve(bytes.size() + std::min(n, kReserveCap));
    std::size_t done = 0, slice = std::size_t{1} << 20;
    while (done < n) {
      const std::size_t want = std::min(slice, n - done), start = bytes.size();
      bytes.resize(start + want);
      const std::size_t got = read(bytes.data() + start, want);
      bytes.resize(start + got);
      done += got;
      if (got < want) break;
      slice = std::min(2 * slice, kSliceCap);
    }
    return done;
  }

  // Bytes left before the end of the data.
  std::size_t count_rest() {
    std::vector<std::uint8_t> scratch(std::size_t{1} << 16);
    std::size_t total = 0;
    for (std::size_t got; (got = read(scratch.data(), scratch.size())) > 0;) total += got;
    return total;
  }

  // Why a gzip stream stopped before its end, or empty when it did not.
  std::string early_end() const {
    int code = Z_OK;
    gzerror(file_, &code);
    return code == Z_BUF_ERROR ? " (the gzip stream ends early: the .gz file is cut short)" : "";
  }

 private:
  std::string zlib_error() const {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_ERRNO) return std::strerror(errno);
    return concat("corrupt gzip data (zlib: ", message, ")");
  }

  std::filesystem::path path_;
  gzFile file_ = nullptr;
};

// A uint8 tensor that takes over `bytes` without copying them.
inline torch::Tensor adopt_bytes(std::vector<std::uint8_t>&& bytes, torch::IntArrayRef sizes) {
  // No bytes, no buffer: from_blob never calls the deleter of a null pointer, so
  // the vector would leak (found by fuzzing a file of 0 items).
  if (bytes.empty()) return torch::empty(sizes, torch::kUInt8);
  auto owner = std::make_unique<std::vector<std::uint8_t>>(std::move(bytes));
  std::vector<std::uint8_t>* raw = owner.get();
  torch::Tensor tensor = torch::from_blob(
      raw->data(), sizes, [raw](void*) { delete raw; }, torch::TensorOptions().dtype(torch::kUInt8));
  owner.release();
  return tensor;
}

}  // namespace detail

// A random subset of n examples, the same for the same seed, in their original
// order. With `balanced`, each class gives n / C examples and the first n % C
// classes one more, which is how a deliberately weak classifier gets a few
// examples of every class.
inline ImageDataset subset(const ImageDataset& dataset, int64_t n, std::uint64_t seed, bool balanced = false) {
  check_image_dataset(dataset, "subset");
  require(n >= 1 && n <= dataset.size(), "subset: n: expected in [1, ", dataset.size(), "], found ", n);
  std::mt19937_64 engine = detail::make_engine(seed, 0);
  std::vector<int64_t> chosen;
  chosen.reserve(static_cast<std::size_t>(n));
  const torch::Tensor labels = dataset.labels.to(torch::kCPU).contiguous();
  if (!balanced) {
    std::vector<int64_t> order(static_cast<std::size_t>(dataset.size()));
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    detail::shuffle(order, engine);
    chosen.assign(order.begin(), order.begin() + n);
  } else {
    const int64_t classes = dataset.num_classes();
    std::vector<std::vector<int64_t>> members(static_cast<std::size_t>(classes));
    const int64_t* label = labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < dataset.size(); ++i) members[static_cast<std::size_t>(label[i])].push_back(i);
    for (int64_t c = 0; c < classes; ++c) {
      auto& pool = members[static_cast<std::size_t>(c)];
      const int64_t quota = n / classes + (c < n % classes ? 1 : 0);
      require(quota <= static_cast<int64_t>(pool.size()), "subset: balanced: class ", c, " (\"",
              dataset.class_names[static_cast<std::size_t>(c)], "\") has ", pool.size(),
              " examples, expected at least ", quota);
      detail::shuffle(pool, engine);
      chosen.insert(chosen.end(), pool.begin(), pool.begin() + quota);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  const torch::Tensor index = torch::tensor(chosen, torch::kLong).to(dataset.images.device());
  return {dataset.images.index_select(0, index), dataset.labels.index_select(0, index.to(dataset.labels.device())),
          dataset.class_names};
}

// Pads images [B, C, H, W] in [-1, 1] to side x side with black (-1), split evenly
// between the sides (28 -> 32: 2 and 2), as 32x32 networks take Fashion-MNIST.
inline torch::Tensor pad_images(const torch::Tensor& images, int64_t side) {
  require(images.dim() == 4 && side >= images.size(2) && side >= images.size(3),
          "pad_images: expected images [B, C, H, W] no larger than ", side, ", found ", images.sizes());
  const int64_t extra_h = side - images.size(2), extra_w = side - images.size(3);
  return torch::constant_pad_nd(images, {extra_w / 2, extra_w - extra_w / 2, extra_h / 2, extra_h - extra_h / 2}, -1.0);
}

struct BatchOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  std::uint64_t seed = 0;
  int64_t pad_to = 0;  // 0: no padding; else the side to pad H and W to, with -1 (black)
  bool drop_last = false;
  torch::Device device = torch::kCPU;
};

// Images float [B, C, H', W'] in [-1, 1] and labels int64 [B], both on the device;
// `epoch` and `step` (within the epoch) say where the batch came from.
struct Batch {
  torch::Tensor images;
  torch::Tensor labels;
  int64_t epoch = 0;
  int64_t step = 0;
};

// An endless stream of batches over a data set. Each epoch visits every example
// once (or every full batch's worth with drop_last) in an order fixed by (seed,
// epoch), so a run resumed at an epoch sees the batches it would have seen.
class ImageBatches {
 public:
  // The uint8 images move to the device once, so each batch costs a gather there
  // instead of a host-to-device copy.
  explicit ImageBatches(const ImageDataset& dataset, BatchOptions options = {}) : options_(options) {
    check_image_dataset(dataset, "ImageBatches");
    require(dataset.size() >= 1, "ImageBatches: the data set is empty");
    require(options_.batch_size >= 1, "ImageBatches: batch_size: expected >= 1, found ", options_.batch_size);
    const int64_t height = dataset.images.size(2), width = dataset.images.size(3);
    require(options_.pad_to == 0 || (options_.pad_to >= height && options_.pad_to >= width),
            "ImageBatches: pad_to: expected 0 or >= the image size ", height, "x", width, ", found ", options_.pad_to);
    require(!options_.drop_last || dataset.size() >= options_.batch_size, "ImageBatches: drop_last with batch_size ",
            options_.batch_size, " leaves no batch of the ", dataset.size(), " examples");
    images_ = dataset.images.to(options_.device);
    labels_ = dataset.labels.to(options_.device);
    restart_at(0);
  }

  // The next batch; after an epoch's last batch the next epoch begins, reshuffled.
  Batch next() {
    const int64_t start = step_ * options_.batch_size;
    const int64_t count = std::min(options_.batch_size, size() - start);
    const torch::Tensor index = order_.slice(0, start, start + count).to(options_.device);
    Batch batch{normalize_images(images_.index_select(0, index)), labels_.index_select(0, index), epoch_, step_};
    if (options_.pad_to > 0) batch.images = pad_images(batch.images, options_.pad_to);
    if (++step_ == batches_per_epoch()) restart_at(epoch_ + 1);
    return batch;
  }

  // The epoch the next batch comes from; it advances as soon as an epoch's last
  // batch has been taken, so `while (batches.epoch() < epochs)` runs whole epochs.
  int64_t epoch() const { return epoch_; }
  // The step within the epoch of the next batch.
  int64_t step() const { return step_; }
  int64_t batches_per_epoch() const {
    return options_.drop_last ? size() / options_.batch_size : (size() + options_.batch_size - 1) / options_.batch_size;
  }
  int64_t size() const { return images_.size(0); }
  const BatchOptions& options() const { return options_; }

  // Continues from the start of `epoch`, as a resumed run does.
  void restart_at(int64_t epoch) {
    require(epoch >= 0, "ImageBatches: epoch: expected >= 0, found ", epoch);
    epoch_ = epoch;
    step_ = 0;
    std::vector<int64_t> order(static_cast<std::size_t>(size()));
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    if (options_.shuffle) {
      std::mt19937_64 engine = detail::make_engine(options_.seed, static_cast<std::uint64_t>(epoch));
      detail::shuffle(order, engine);
    }
    order_ = torch::tensor(order, torch::kLong);
  }

  // Continues at batch `step` of `epoch`, where a checkpointed run stood (its
  // epoch() and step()), so a resumed run sees exactly the batches it would have.
  void seek(int64_t epoch, int64_t step) {
    require(step >= 0 && step < batches_per_epoch(), "ImageBatches: step: expected in [0, ", batches_per_epoch(),
            "), found ", step);
    restart_at(epoch);
    step_ = step;
  }

 private:
  BatchOptions options_;
  torch::Tensor images_, labels_, order_;
  int64_t epoch_ = 0, step_ = 0;
};

// Class names <-> indices, for turning what a user types into conditions z.
class Prompts {
 public:
  explicit Prompts(std::vector<std::string> class_names) : names_(std::move(class_names)) {
    require(!names_.empty(), "Prompts: no class names");
    for (std::size_t i = 0; i < names_.size(); ++i) {
      require(!names_[i].empty(), "Prompts: class name ", i, " is empty");
      for (std::size_t j = 0; j < i; ++j)
        require(names_[i] != names_[j], "Prompts: class name \"", names_[i], "\" appears twice (", j, " and ", i, ")");
    }
  }
  explicit Prompts(const ImageDataset& dataset) : Prompts(dataset.class_names) {}

  // The class an exact name, or failing that a unique case-insensitive match
  // (so "sneaker" works on a command line), refers to.
  int64_t index_of(std::string_view name) const {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) return static_cast<int64_t>(i);
    int64_t found = -1;
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (equal_ignoring_case(names_[i], name)) {
        if (found >= 0) {
          found = -2;
          break;
        }
        found = static_cast<int64_t>(i);
      }
    if (found >= 0) return found;
    std::string valid;
    for (const std::string& known : names_) valid += (valid.empty() ? "\"" : ", \"") + known + "\"";
    if (found == -2)
      throw std::invalid_argument(detail::concat("prompt: class name \"", name,
                                                 "\" matches several names ignoring case; expected one of ", valid));
    throw std::invalid_argument(detail::concat("prompt: unknown class name \"", name, "\"; expected one of ", valid));
  }

  const std::string& name_of(int64_t index) const {
    require(index >= 0 && index < size(), "prompt: class index: expected in [0, ", size(), "), found ", index);
    return names_[static_cast<std::size_t>(index)];
  }

  // Names of a batch of conditions int64 [B].
  std::vector<std::string> names_of(const torch::Tensor& conditions) const {
    require(conditions.dim() == 1 && conditions.scalar_type() == torch::kLong,
            "prompt: conditions: expected int64 [B], found ", conditions.scalar_type(), " ", conditions.sizes());
    const torch::Tensor cpu = conditions.to(torch::kCPU).contiguous();
    std::vector<std::string> out;
    for (int64_t i = 0; i < cpu.size(0); ++i) out.push_back(name_of(cpu.data_ptr<int64_t>()[i]));
    return out;
  }

  // "Sneaker,Bag" -> int64 [2]; spaces around the commas are ignored.
  torch::Tensor parse(std::string_view list) const {
    std::vector<int64_t> indices;
    std::size_t begin = 0;
    while (true) {
      const std::size_t end = std::min(list.find(',', begin), list.size());
      std::string_view item = list.substr(begin, end - begin);
      while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.remove_prefix(1);
      while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.remove_suffix(1);
      require(!item.empty(), "prompts: empty class name at position ", indices.size(), " in \"", list, "\"");
      indices.push_back(index_of(item));
      if (end == list.size()) break;
      begin = end + 1;
    }
    return torch::tensor(indices, torch::kLong);
  }

  int64_t size() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }

 private:
  static bool equal_ignoring_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
  }

  std::vector<std::string> names_;
};

inline torch::Tensor parse_prompts(const Prompts& prompts, std::string_view list) { return prompts.parse(list); }

}  // namespace diffctl::data
