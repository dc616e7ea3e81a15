#pragma once
// The feedback dataset D = {(x_T, z, y)}: every label the oracle was paid for, with
// the round it was asked in. Bound to a file, it is persisted after every append
// (written beside the file, fsynced, renamed over it), so a run killed at any point
// still has every label it paid for when it restarts from the file; the oracle's
// query count and noise generator are stored with the labels, so a resumed oracle
// continues where the paid-for labels end.
//
//   reward::FeedbackDataset data(out / "feedback.bin");   // loads it if it exists
//   if (data.oracle_state()) oracle.restore(*data.oracle_state());  // after a restart
//   if (!data.has_round(round)) reward::query_and_record(oracle, data, x, z, round);
//
// File layout (little-endian): "DFBK" magic, format version, row count, the sample
// shape, whether z is present, then x (float32), z (int64), y (float64), round
// (int64), the oracle state, and a trailer with the byte count and a CRC-32 of all
// that precedes it. A truncated or corrupted file is reported, never half-loaded.

#include <zlib.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/reward/oracle.hpp"

namespace diffctl::reward {

namespace detail {

static_assert(std::endian::native == std::endian::little, "the feedback file format is little-endian");

constexpr char kFeedbackMagic[4] = {'D', 'F', 'B', 'K'};
constexpr int64_t kFeedbackFormat = 1;
constexpr std::size_t kFeedbackTrailer = sizeof(uint64_t) + sizeof(uint32_t);

inline uint32_t crc32_of(const std::string& bytes, std::size_t length) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  std::size_t done = 0;
  while (done < length) {  // zlib takes at most uInt bytes per call
    const std::size_t chunk = std::min<std::size_t>(length - done, 1u << 30);
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + done), static_cast<uInt>(chunk));
    done += chunk;
  }
  return static_cast<uint32_t>(crc);
}

class ByteWriter {
 public:
  template <class T>
  void put(const T& value) {
    bytes_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void put_tensor(const torch::Tensor& t) {  // contiguous CPU tensor
    bytes_.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

class ByteReader {
 public:
  ByteReader(const std::string& bytes, std::size_t end, std::string name)
      : bytes_(bytes), end_(end), name_(std::move(name)) {}
  template <class T>
  T get(const char* field) {
    T value;
    need(sizeof(T), field);
    std::memcpy(&value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }
  torch::Tensor get_tensor(std::vector<int64_t> shape, torch::ScalarType type, const char* field) {
    torch::Tensor t = torch::empty(shape, torch::TensorOptions(type));
    const std::size_t size = t.numel() * t.element_size();
    need(size, field);
    std::memcpy(t.data_ptr(), bytes_.data() + at_, size);
    at_ += size;
    return t;
  }
  std::size_t position() const { return at_; }

 private:
  void need(std::size_t size, const char* field) const {
    require(size <= end_ - at_, name_, ": ", field, " runs past the end of the data (file corrupt)");
  }
  const std::string& bytes_;
  std::size_t end_, at_ = 0;
  std::string name_;
};

}  // namespace detail

class FeedbackDataset {
 public:
  // An empty dataset that lives in memory only.
  FeedbackDataset() = default;

  // A dataset bound to `file`: loaded from it when it exists, and rewritten
  // (atomically) after every append.
  explicit FeedbackDataset(std::filesystem::path file) : file_(std::move(file)) {
    if (std::filesystem::exists(file_)) *this = load(file_);
  }

  // Reads a dataset saved by save() or by a bound dataset; the result is bound to
  // `file`. Throws, naming the file and what is wrong, on any inconsistency.
  static FeedbackDataset load(const std::filesystem::path& file) {
    const std::string name = "feedback dataset " + file.string();
    std::ifstream in(file, std::ios::binary);
    require(static_cast<bool>(in), name, ": cannot open");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    require(bytes.size() >= sizeof(detail::kFeedbackMagic) + detail::kFeedbackTrailer &&
                std::memcmp(bytes.data(), detail::kFeedbackMagic, sizeof(detail::kFeedbackMagic)) == 0,
            name, ": not a feedback dataset (no DFBK header)");
    const std::size_t body = bytes.size() - detail::kFeedbackTrailer;
    uint64_t recorded_length;
    uint32_t recorded_crc;
    std::memcpy(&recorded_length, bytes.data() + body, sizeof(recorded_length));
    std::memcpy(&recorded_crc, bytes.data() + body + sizeof(recorded_length), sizeof(recorded_crc));
    require(recorded_length == body, name, ": truncated or extended (", bytes.size(),
            " bytes, its trailer says ", recorded_length + detail::kFeedbackTrailer, ")");
    require(detail::crc32_of(bytes, body) == recorded_crc, name, ": checksum mismatch (file corrupt)");

    detail::ByteReader read(bytes, body, name);
    read.get<std::array<char, 4>>("magic");
    const auto format = read.get<int64_t>("format version");
    require(format == detail::kFeedbackFormat, name, ": format version ", format, ", this build reads ",
            detail::kFeedbackFormat);
    const auto rows = read.get<int64_t>("row count");
    const auto dims = read.get<int64_t>("sample rank");
    require(rows >= 0 && dims >= 0 && dims <= 8, name, ": bad header (rows ", rows, ", sample rank ", dims, ")");
    std::vector<int64_t> shape{rows};
    for (int64_t i = 0; i < dims; ++i) {
      shape.push_back(read.get<int64_t>("sample shape"));
      require(shape.back() >= 1, name, ": bad sample shape");
    }
    const auto has_z = read.get<uint8_t>("z flag");
    const auto queries = read.get<int64_t>("oracle query count");
    const auto state_bytes = read.get<int64_t>("oracle state size");
    require(state_bytes >= 0, name, ": bad oracle state size");

    FeedbackDataset data;
    data.file_ = file;
    if (rows > 0) {
      data.x_ = read.get_tensor(shape, torch::kFloat, "samples x");
      if (has_z) data.z_ = read.get_tensor({rows}, torch::kLong, "conditions z");
      data.y_ = read.get_tensor({rows}, torch::kDouble, "labels y");
      data.round_ = read.get_tensor({rows}, torch::kLong, "rounds");
    }
    if (queries >= 0)
      data.oracle_state_ = OracleState{queries, read.get_tensor({state_bytes}, torch::kByte, "oracle state")};
    require(read.position() == body, name, ": ", body - read.position(), " bytes after the data (file corrupt)");
    return data;
  }

  // Writes the dataset to `file` (whole or not at all).
  void save(const std::filesystem::path& file) const {
    detail::ByteWriter write;
    write.bytes().append(detail::kFeedbackMagic, sizeof(detail::kFeedbackMagic));
    write.put(detail::kFeedbackFormat);
    write.put(size());
    const std::vector<int64_t> shape = sample_shape();
    write.put(static_cast<int64_t>(shape.size()));
    for (const int64_t d : shape) write.put(d);
    write.put(static_cast<uint8_t>(z_.defined()));
    write.put(oracle_state_ ? oracle_state_->queries : int64_t{-1});
    write.put(oracle_state_ ? oracle_state_->generator_state.numel() : int64_t{0});
    if (size() > 0) {
      write.put_tensor(x_);
      if (z_.defined()) write.put_tensor(z_);
      write.put_tensor(y_);
      write.put_tensor(round_);
    }
    if (oracle_state_) write.put_tensor(oracle_state_->generator_state.contiguous());
    const uint64_t length = write.bytes().size();
    const uint32_t crc = detail::crc32_of(write.bytes(), length);
    write.put(length);
    write.put(crc);
    io::write_atomically(file, [&](const std::filesystem::path& partial) {
      std::ofstream out(partial, std::ios::binary);
      out.write(write.bytes().data(), static_cast<std::streamsize>(write.bytes().size()));
      out.close();
      return static_cast<bool>(out);
    });
  }

  // Adds B labelled samples: x [B, ...] (any device; kept as float32 on the CPU),
  // z [B] int64 or undefined (as for every earlier append), y [B] finite labels,
  // asked in `round`; with the oracle's state after answering them. A bound dataset
  // is on disk when this returns; if writing fails, the dataset is left as it was.
  void append(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& y, int64_t round,
              std::optional<OracleState> oracle_state = std::nullopt) {
    require(x.defined() && x.dim() >= 1 && x.size(0) >= 1, "feedback dataset: x must be a non-empty batch [B, ...]");
    const int64_t batch = x.size(0);
    require(y.defined() && y.dim() == 1 && y.size(0) == batch, "feedback dataset: ", batch,
            " samples but y is ", y.defined() ? y.sizes() : torch::IntArrayRef{});
    require(!z.defined() || (z.dim() == 1 && z.size(0) == batch && z.scalar_type() == torch::kLong),
            "feedback dataset: ", batch, " samples but z is ", z.defined() ? z.sizes() : torch::IntArrayRef{},
            z.defined() ? " " + std::string(toString(z.scalar_type())) : "", " (expected int64 [", batch, "])");
    require(round >= 0, "feedback dataset: round must be >= 0, found ", round);
    const torch::Tensor labels = y.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const torch::Tensor bad = torch::isfinite(labels).logical_not().nonzero();
    require(bad.numel() == 0, "feedback dataset: label ", bad.numel() ? bad[0].item<int64_t>() : 0,
            " of the batch is ", bad.numel() ? labels[bad[0].item<int64_t>()].item<double>() : 0.0,
            " (labels must be finite)");
    const torch::Tensor samples = x.detach().to(torch::kCPU, torch::kFloat).contiguous();
    if (size() > 0) {
      require(z.defined() == z_.defined(), "feedback dataset: ",
              z_.defined() ? "it holds conditions z, but this batch has none" : "it holds no conditions z, but this batch has them");
      require(samples.sizes().slice(1) == x_.sizes().slice(1), "feedback dataset: samples are ",
              x_.sizes().slice(1), " but this batch's are ", samples.sizes().slice(1));
    }
    FeedbackDataset before = *this;
    const auto grow = [](const torch::Tensor& all, const torch::Tensor& more) {
      return all.defined() ? torch::cat({all, more}) : more;
    };
    x_ = grow(x_, samples);
    if (z.defined()) z_ = grow(z_, z.detach().to(torch::kCPU).contiguous());
    y_ = grow(y_, labels);
    round_ = grow(round_, torch::full({batch}, round, torch::kLong));
    if (oracle_state) oracle_state_ = OracleState{oracle_state->queries, oracle_state->generator_state.clone()};
    if (!file_.empty()) {
      try {
        save(file_);
      } catch (...) {
        *this = std::move(before);
        throw;
      }
    }
  }

  int64_t size() const { return y_.defined() ? y_.size(0) : 0; }
  bool empty() const { return size() == 0; }
  // Samples [N, ...] float32, conditions [N] int64 (undefined: unconditional),
  // labels [N] float64 and rounds [N] int64, all on the CPU.
  const torch::Tensor& x() const { return x_; }
  const torch::Tensor& z() const { return z_; }
  const torch::Tensor& y() const { return y_; }
  const torch::Tensor& rounds() const { return round_; }
  // The shape of one sample (empty while the dataset is).
  std::vector<int64_t> sample_shape() const {
    return x_.defined() ? std::vector<int64_t>(x_.sizes().begin() + 1, x_.sizes().end()) : std::vector<int64_t>{};
  }
  // Labels asked in `round`.
  int64_t count_in_round(int64_t round) const {
    return size() > 0 ? round_.eq(round).sum().item<int64_t>() : 0;
  }
  bool has_round(int64_t round) const { return count_in_round(round) > 0; }
  const std::optional<OracleState>& oracle_state() const { return oracle_state_; }
  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
  torch::Tensor x_, z_, y_, round_;
  std::optional<OracleState> oracle_state_;
};

// Asks the oracle to label x [B, ...] under z and appends the labels, with the
// oracle's state after answering, to `data` (on disk when it is bound): the one
// call a round makes, so a paid-for label is stored before anything else happens.
// Returns the labels [B].
template <RewardFunction Reward>
torch::Tensor query_and_record(Oracle<Reward>& oracle, FeedbackDataset& data, const torch::Tensor& x,
                               const torch::Tensor& z, int64_t round) {
  const torch::Tensor y = oracle.query(x, z);
  data.append(x, z, y, round, oracle.state());
  return y;
}

}  // namespace diffctl::reward
