#pragma once
// The feedback dataset D = {(x_T, z, y)}: every label the oracle was paid for, with
// the round it was asked in. Bound to a file, it lives in an SQLite database (WAL
// journal, synchronous commits): each append is one transaction that inserts the
// chunk's rows and the oracle's state together, so a run killed at any point has
// every label it paid for when it restarts, and its oracle continues where those
// labels end. Writes are O(rows appended), whatever the store's size.
//
//   reward::FeedbackDataset data(out / "feedback.sqlite");  // loads it if it exists
//   if (data.oracle_state()) oracle.restore(*data.oracle_state());  // after a restart
//   if (!data.has_round(round)) oracle.record(data, x, z, round);
//
// Labels from outside the process: ask() stores queries as pending rows (label
// NULL); anything that can write SQLite (a script, a person with the sqlite3
// command) fills in their labels, and refresh() picks them up:
//
//   sqlite3 out/feedback.sqlite "UPDATE labels SET label = 0.7 WHERE id = 12"
//
// Schema (application_id 0x64666b62, user_version 1):
//   labels(id, round, prompt, label, sample, shape, oracle, asked_at, labelled_at,
//          checksum): sample = float32 little-endian bytes of one x_T, shape = its
//          dimensions as text ("1,28,28"), prompt = z (NULL: unconditional), label =
//          y (NULL: pending), checksum = CRC-32 of (round, prompt, shape, sample)
//   oracle_state(oracle, queries, generator): the noise generator's bytes
// A file that is not such a store, or whose rows fail their checks, is reported with
// its name and the row at fault, never half-loaded. One dataset writes to a store
// at a time: the first append or ask takes an exclusive lock on the file (flock,
// released when the dataset goes or its process dies), so a second run started on
// the same store stops with a clear error instead of interleaving its rounds with
// the first's. Readers, and labellers writing through SQLite, need no lock.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/io/sqlite.hpp"
#include "diffctl/reward/oracle.hpp"

namespace diffctl::reward {

namespace detail {

static_assert(std::endian::native == std::endian::little, "the feedback store holds little-endian samples");

constexpr int64_t kFeedbackApplicationId = 0x64666b62;  // "dfkb"
constexpr int64_t kFeedbackFormat = 1;
constexpr int64_t kFeedbackMaxRank = 8;

inline constexpr const char* kFeedbackSchema = R"sql(
PRAGMA application_id = 1684433762;
PRAGMA user_version = 1;
CREATE TABLE labels (
  id INTEGER PRIMARY KEY,
  round INTEGER NOT NULL,
  prompt INTEGER,
  label REAL,
  sample BLOB NOT NULL,
  shape TEXT NOT NULL,
  oracle TEXT NOT NULL,
  asked_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  labelled_at TEXT,
  checksum INTEGER NOT NULL
);
CREATE INDEX labels_by_round ON labels(round);
CREATE TABLE oracle_state (
  oracle TEXT PRIMARY KEY,
  queries INTEGER NOT NULL,
  generator BLOB NOT NULL
);
)sql";
static_assert(kFeedbackApplicationId == 1684433762);

inline std::string shape_text(torch::IntArrayRef shape) {
  std::string text;
  for (const int64_t d : shape) {
    if (!text.empty()) text.push_back(',');
    text.append(std::to_string(d));
  }
  return text;
}

// "1,28,28" -> {1, 28, 28}; nullopt unless 1 to 8 positive dimensions of at most
// 2^20 elements in all.
inline std::optional<std::vector<int64_t>> parse_shape(std::string_view text) {
  std::vector<int64_t> shape;
  int64_t elements = 1;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t end = std::min(text.find(',', at), text.size());
    if (end == at || end - at > 7) return std::nullopt;
    int64_t d = 0;
    for (std::size_t i = at; i < end; ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      d = d * 10 + (text[i] - '0');
    }
    elements *= d;
    if (d < 1 || elements > (int64_t{1} << 20) || int64_t(shape.size()) == kFeedbackMaxRank) return std::nullopt;
    shape.push_back(d);
    at = end + 1;
  }
  return shape;
}

// An exclusive flock on a file for as long as this object lives.
class WriterLock {
 public:
  explicit WriterLock(const std::filesystem::path& file) {
    fd_ = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    require(fd_ >= 0, "feedback store ", file.string(), ": cannot open it to lock it");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      require(false, "feedback store ", file.string(),
              ": another process is writing to it (a second run on the same output?)");
    }
  }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;
  ~WriterLock() { ::close(fd_); }  // closing releases the lock

 private:
  int fd_ = -1;
};

inline int64_t row_checksum(int64_t round, std::optional<int64_t> prompt, std::string_view shape,
                            std::string_view sample) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto add = [&](const void* data, std::size_t bytes) {
    crc = ::crc32(crc, static_cast<const Bytef*>(data), static_cast<uInt>(bytes));
  };
  const int64_t prompt_value = prompt.value_or(-1);
  add(&round, sizeof(round));
  add(&prompt_value, sizeof(prompt_value));
  add(shape.data(), shape.size());
  for (std::size_t done = 0; done < sample.size(); done += 1u << 30)  // zlib takes uInt lengths
    add(sample.data() + done, std::min<std::size_t>(sample.size() - done, 1u << 30));
  return static_cast<int64_t>(crc);
}

}  // namespace detail

class FeedbackDataset {
 public:
  // An empty dataset that lives in memory only.
  FeedbackDataset() = default;

  // A dataset bound to `file`: loaded from it when it exists (a store written by
  // this class; anything else is refused), created at the first append otherwise.
  explicit FeedbackDataset(std::filesystem::path file) : file_(std::move(file)) {
    if (std::filesystem::exists(file_)) {
      open_store(false);
      read_store();
    }
  }

  // Reads the store at `file` (which must exist); the result is bound to it.
  static FeedbackDataset load(const std::filesystem::path& file) {
    require(std::filesystem::exists(file), "feedback store ", file.string(), ": no such file");
    return FeedbackDataset(file);
  }

  // Writes the labelled rows and the oracle state to a new store at `file`,
  // replacing it whole or not at all.
  void save(const std::filesystem::path& file) const {
    io::write_atomically(file, [&](const std::filesystem::path& partial) {
      std::filesystem::remove(partial);
      {
        io::Sqlite db(partial, /*create=*/true);
        db.exec(detail::kFeedbackSchema);
        io::Sqlite::Transaction write(db);
        if (size() > 0) insert_rows(db, x_, z_, y_, round_, "oracle");
        if (oracle_state_) store_oracle_state(db, *oracle_state_, "oracle");
        write.commit();
      }
      return true;
    });
  }

  // Adds B labelled samples: x [B, ...] (any device; kept as float32 on the CPU),
  // z [B] int64 or undefined (as for every earlier append), y [B] finite labels,
  // asked in `round`, answered by `oracle` (a name kept with each row); with the
  // oracle's state after answering them. A bound dataset has them on disk when
  // this returns; if writing fails, the dataset is left as it was.
  void append(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& y, int64_t round,
              std::optional<OracleState> oracle_state = std::nullopt, std::string_view oracle = "oracle") {
    const auto [samples, prompts] = checked_batch(x, z, round);
    const int64_t batch = samples.size(0);
    require(y.defined() && y.dim() == 1 && y.size(0) == batch, "feedback dataset: ", batch, " samples but y is ",
            y.defined() ? y.sizes() : torch::IntArrayRef{});
    const torch::Tensor labels = y.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const torch::Tensor bad = torch::isfinite(labels).logical_not().nonzero();
    require(bad.numel() == 0, "feedback dataset: label ", bad.numel() ? bad[0].item<int64_t>() : 0, " of the batch is ",
            bad.numel() ? labels[bad[0].item<int64_t>()].item<double>() : 0.0, " (labels must be finite)");
    const torch::Tensor rounds = torch::full({batch}, round, torch::kLong);
    if (!file_.empty()) {
      lock_for_writing();
      io::Sqlite::Transaction write(*db_);
      insert_rows(*db_, samples, prompts, labels, rounds, oracle);
      if (oracle_state) store_oracle_state(*db_, *oracle_state, "oracle");
      write.commit();
    }
    grow(samples, prompts, labels, rounds);
    if (oracle_state) oracle_state_ = OracleState{oracle_state->queries, oracle_state->generator_state.clone()};
  }

  // Stores B queries without labels (bound datasets only), for a labeller outside
  // this process; returns their row ids. They count as asked in `round` at once and
  // join the labelled data when refresh() finds their labels.
  std::vector<int64_t> ask(const torch::Tensor& x, const torch::Tensor& z, int64_t round,
                           std::string_view oracle = "external") {
    require(!file_.empty(), "feedback dataset: asking for labels from outside needs a dataset bound to a file");
    const auto [samples, prompts] = checked_batch(x, z, round);
    lock_for_writing();
    io::Sqlite::Transaction write(*db_);
    const torch::Tensor rounds = torch::full({samples.size(0)}, round, torch::kLong);
    std::vector<int64_t> ids = insert_rows(*db_, samples, prompts, torch::Tensor{}, rounds, oracle);
    write.commit();
    pending_[round] += samples.size(0);
    conditional_ = prompts.defined();
    shape_.assign(samples.sizes().begin() + 1, samples.sizes().end());
    return ids;
  }

  // Re-reads the store: labels written into it since (by another process) join the
  // data, in the order their rows were asked. Returns the number of rows still
  // pending.
  int64_t refresh() {
    require(!file_.empty(), "feedback dataset: refresh() needs a dataset bound to a file");
    if (!db_) {
      if (!std::filesystem::exists(file_)) return 0;
      open_store(false);  // created by another process since this one looked
    }
    read_store();
    return pending();
  }

  int64_t size() const { return y_.defined() ? y_.size(0) : 0; }
  bool empty() const { return size() == 0; }
  // Samples [N, ...] float32, conditions [N] int64 (undefined: unconditional),
  // labels [N] float64 and rounds [N] int64 of the labelled rows, on the CPU.
  const torch::Tensor& x() const { return x_; }
  const torch::Tensor& z() const { return z_; }
  const torch::Tensor& y() const { return y_; }
  const torch::Tensor& rounds() const { return round_; }
  // The shape of one sample (empty while the dataset is).
  std::vector<int64_t> sample_shape() const {
    return x_.defined() ? std::vector<int64_t>(x_.sizes().begin() + 1, x_.sizes().end()) : std::vector<int64_t>{};
  }
  // Labelled rows asked in `round`.
  int64_t count_in_round(int64_t round) const { return size() > 0 ? round_.eq(round).sum().item<int64_t>() : 0; }
  bool has_round(int64_t round) const { return count_in_round(round) > 0; }
  // Rows asked in `round` and still without a label (as of the last refresh()).
  int64_t pending(int64_t round) const {
    const auto found = pending_.find(round);
    return found == pending_.end() ? 0 : found->second;
  }
  int64_t pending() const {
    int64_t all = 0;
    for (const auto& [round, count] : pending_) all += count;
    return all;
  }
  // Rows asked in `round`, labelled or not: what a resumed round must not ask again.
  int64_t asked_in_round(int64_t round) const { return count_in_round(round) + pending(round); }
  const std::optional<OracleState>& oracle_state() const { return oracle_state_; }
  const std::filesystem::path& file() const { return file_; }

 private:
  std::string name() const { return "feedback store " + file_.string(); }

  // The batch as it is stored: samples float32 contiguous on the CPU, prompts int64
  // or undefined, consistent with the rows before.
  std::pair<torch::Tensor, torch::Tensor> checked_batch(const torch::Tensor& x, const torch::Tensor& z,
                                                        int64_t round) const {
    require(x.defined() && x.dim() >= 2 && x.size(0) >= 1 && x.dim() <= detail::kFeedbackMaxRank + 1,
            "feedback dataset: x must be a non-empty batch [B, ...] of samples with 1 to ", detail::kFeedbackMaxRank,
            " dimensions");
    const int64_t batch = x.size(0);
    require(!z.defined() || (z.dim() == 1 && z.size(0) == batch && z.scalar_type() == torch::kLong),
            "feedback dataset: ", batch, " samples but z is ", z.defined() ? z.sizes() : torch::IntArrayRef{},
            z.defined() ? " " + std::string(toString(z.scalar_type())) : "", " (expected int64 [", batch, "])");
    require(round >= 0, "feedback dataset: round must be >= 0, found ", round);
    const torch::Tensor samples = x.detach().to(torch::kCPU, torch::kFloat).contiguous();
    require(detail::parse_shape(detail::shape_text(samples.sizes().slice(1))).has_value(),
            "feedback dataset: samples of shape ", samples.sizes().slice(1), " are too large to store");
    if (has_rows()) {
      require(z.defined() == conditional_, "feedback dataset: ",
              conditional_ ? "it holds conditions z, but this batch has none"
                           : "it holds no conditions z, but this batch has them");
      require(samples.sizes().slice(1) == torch::IntArrayRef(shape_), "feedback dataset: samples are ",
              torch::IntArrayRef(shape_), " but this batch's are ", samples.sizes().slice(1));
    }
    return {samples, z.defined() ? z.detach().to(torch::kCPU).contiguous() : torch::Tensor{}};
  }

  bool has_rows() const { return size() > 0 || pending() > 0; }

  // Creates the store if need be and takes the writer's lock, once. A store that
  // another dataset wrote to since this one read it is read again first.
  void lock_for_writing() {
    if (lock_) return;
    if (!db_) create_store();
    lock_ = std::make_shared<detail::WriterLock>(file_);
    read_store();
  }

  // Inserts the rows (labels undefined: pending); returns their ids.
  static std::vector<int64_t> insert_rows(io::Sqlite& db, const torch::Tensor& samples, const torch::Tensor& prompts,
                                          const torch::Tensor& labels, const torch::Tensor& rounds,
                                          std::string_view oracle) {
    auto insert = db.prepare(
        "INSERT INTO labels(round, prompt, label, sample, shape, oracle, labelled_at, checksum) "
        "VALUES (?, ?, ?, ?, ?, ?, CASE WHEN ?3 IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END, ?)");
    const std::string shape = detail::shape_text(samples.sizes().slice(1));
    const std::size_t bytes = static_cast<std::size_t>(samples[0].numel()) * sizeof(float);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < samples.size(0); ++i) {
      const std::string_view sample(static_cast<const char*>(samples.data_ptr()) + i * bytes, bytes);
      const int64_t round = rounds[i].item<int64_t>();
      const std::optional<int64_t> prompt =
          prompts.defined() ? std::optional<int64_t>(prompts[i].item<int64_t>()) : std::nullopt;
      insert.bind(1, round).bind(2, prompt);
      if (labels.defined()) insert.bind(3, labels[i].item<double>());
      insert.bind_blob(4, sample.data(), sample.size()).bind(5, shape).bind(6, oracle);
      insert.bind(7, detail::row_checksum(round, prompt, shape, sample));
      insert.run();
      ids.push_back(db.last_insert_id());
    }
    return ids;
  }

  static void store_oracle_state(io::Sqlite& db, const OracleState& state, std::string_view oracle) {
    require(state.generator_state.defined(), "feedback dataset: the oracle state has no generator state");
    const torch::Tensor bytes = state.generator_state.to(torch::kCPU, torch::kByte).contiguous();
    db.prepare("INSERT OR REPLACE INTO oracle_state(oracle, queries, generator) VALUES (?, ?, ?)")
        .bind(1, oracle)
        .bind(2, state.queries)
        .bind_blob(3, bytes.data_ptr(), static_cast<std::size_t>(bytes.numel()))
        .run();
  }

  void grow(const torch::Tensor& samples, const torch::Tensor& prompts, const torch::Tensor& labels,
            const torch::Tensor& rounds) {
    const auto cat = [](const torch::Tensor& all, const torch::Tensor& more) {
      return all.defined() ? torch::cat({all, more}) : more;
    };
    x_ = cat(x_, samples);
    if (prompts.defined()) z_ = cat(z_, prompts);
    y_ = cat(y_, labels);
    round_ = cat(round_, rounds);
    conditional_ = prompts.defined();
    shape_.assign(samples.sizes().begin() + 1, samples.sizes().end());
  }

  // A new store at file_: its schema written under a temporary name and renamed,
  // so a file at file_ is always a whole store.
  void create_store() {
    require(!std::filesystem::exists(file_), name(), ": appeared while this dataset was open");
    io::write_atomically(file_, [&](const std::filesystem::path& partial) {
      std::filesystem::remove(partial);
      io::Sqlite db(partial, /*create=*/true);
      db.exec(detail::kFeedbackSchema);
      return true;
    });
    open_store(true);
  }

  void open_store(bool created) {
    if (!created) {  // Say what a file is before SQLite reads it.
      std::ifstream in(file_, std::ios::binary);
      require(static_cast<bool>(in), name(), ": cannot open");
      char header[16] = {};
      in.read(header, sizeof(header));
      require(std::memcmp(header, "DFBK", 4) != 0, name(),
              ": a feedback file of diffctl's earlier format (DFBK); this version keeps feedback in SQLite");
      require(in.gcount() == 16 && std::memcmp(header, "SQLite format 3", 16) == 0, name(),
              ": not a feedback store (not an SQLite database)");
    }
    try {
      db_ = std::make_shared<io::Sqlite>(file_);
      const int64_t application = db_->integer("PRAGMA application_id");
      require(application == detail::kFeedbackApplicationId, name(),
              ": not a feedback store (an SQLite database of another application, application_id ", application, ")");
      const int64_t format = db_->integer("PRAGMA user_version");
      require(format == detail::kFeedbackFormat, name(), ": format version ", format, ", this build reads ",
              detail::kFeedbackFormat);
      {
        auto check = db_->prepare("PRAGMA quick_check");
        require(check.step() && check.text(0) == "ok", name(), ": corrupt (SQLite's check: ", check.text(0), ")");
      }
      db_->exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
    } catch (const io::SqliteError& error) {
      db_.reset();
      throw std::invalid_argument(std::string(error.what()) + " (not a readable feedback store)");
    }
  }

  // Reads every row, checking each; replaces the dataset only when all pass.
  void read_store() {
    std::vector<int64_t> shape;
    std::optional<bool> conditional;
    std::string samples;
    std::vector<int64_t> prompts, rounds;
    std::vector<double> labels;
    std::map<int64_t, int64_t> pending;
    auto rows = db_->prepare("SELECT id, round, prompt, label, sample, shape, checksum FROM labels ORDER BY id");
    while (rows.step()) {
      const int64_t id = rows.integer(0);
      const auto at = [&] { return name() + ": row " + std::to_string(id); };
      require(rows.type(1) == SQLITE_INTEGER && rows.integer(1) >= 0, at(), ": round must be an integer >= 0");
      require(rows.is_null(2) || rows.type(2) == SQLITE_INTEGER, at(), ": prompt must be an integer or NULL");
      require(rows.type(4) == SQLITE_BLOB || rows.type(4) == SQLITE_NULL, at(), ": sample must be a blob");
      const int64_t round = rows.integer(1);
      const std::optional<int64_t> prompt = rows.is_null(2) ? std::nullopt : std::optional<int64_t>(rows.integer(2));
      const std::string shape_text = rows.text(5);
      const std::string_view sample = rows.blob(4);
      require(
          rows.type(6) == SQLITE_INTEGER && rows.integer(6) == detail::row_checksum(round, prompt, shape_text, sample),
          at(), ": checksum mismatch (row corrupt)");
      const auto row_shape = detail::parse_shape(shape_text);
      require(row_shape.has_value(), at(), ": bad sample shape \"", shape_text, "\"");
      if (conditional) {
        require(*row_shape == shape, at(), ": sample shape ", shape_text, " differs from the rows before");
        require(prompt.has_value() == *conditional, at(), ": ", *conditional ? "no prompt" : "a prompt",
                " where the rows before have ", *conditional ? "one" : "none");
      } else {
        shape = *row_shape;
        conditional = prompt.has_value();
      }
      int64_t elements = 1;
      for (const int64_t d : shape) elements *= d;
      require(sample.size() == static_cast<std::size_t>(elements) * sizeof(float), at(), ": sample has ", sample.size(),
              " bytes, its shape ", shape_text, " needs ", elements * int64_t(sizeof(float)));
      if (rows.is_null(3)) {
        ++pending[round];
        continue;
      }
      require(rows.type(3) == SQLITE_FLOAT || rows.type(3) == SQLITE_INTEGER, at(), ": label must be a number");
      const double label = rows.real(3);
      require(std::isfinite(label), at(), ": label ", label, " (labels must be finite)");
      samples.append(sample);
      if (prompt) prompts.push_back(*prompt);
      rounds.push_back(round);
      labels.push_back(label);
    }
    std::optional<OracleState> oracle_state;
    auto state = db_->prepare("SELECT queries, generator FROM oracle_state WHERE oracle = 'oracle'");
    if (state.step()) {
      require(state.type(0) == SQLITE_INTEGER && state.integer(0) >= 0 && state.type(1) == SQLITE_BLOB, name(),
              ": bad oracle state");
      const std::string_view bytes = state.blob(1);
      torch::Tensor generator = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kByte);
      std::memcpy(generator.data_ptr(), bytes.data(), bytes.size());
      oracle_state = OracleState{state.integer(0), generator};
    }

    const auto n = static_cast<int64_t>(labels.size());
    std::vector<int64_t> full{n};
    full.insert(full.end(), shape.begin(), shape.end());
    const auto from = [](auto& values, torch::ScalarType type) {
      return torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, type).clone();
    };
    x_ = y_ = z_ = round_ = torch::Tensor{};
    if (n > 0) {
      x_ = torch::from_blob(samples.data(), full, torch::kFloat).clone();
      if (*conditional) z_ = from(prompts, torch::kLong);
      y_ = from(labels, torch::kDouble);
      round_ = from(rounds, torch::kLong);
    }
    conditional_ = conditional.value_or(false);
    shape_ = shape;
    pending_ = std::move(pending);
    oracle_state_ = std::move(oracle_state);
  }

  std::filesystem::path file_;
  std::shared_ptr<io::Sqlite> db_;            // open while bound to an existing store
  std::shared_ptr<detail::WriterLock> lock_;  // held from the first write on
  torch::Tensor x_, z_, y_, round_;
  bool conditional_ = false;
  std::vector<int64_t> shape_;
  std::map<int64_t, int64_t> pending_;  // round -> rows without a label
  std::optional<OracleState> oracle_state_;
};

// The queries of one round into `feedback`, asked chunk by chunk. A run killed
// mid-round kept the rows it asked; resumed, it draws every chunk again (so that
// its generator, and with it everything after, replays the uninterrupted run) and
// asks only the rows past those. The store must outlive this.
class RoundQueries {
 public:
  RoundQueries(FeedbackDataset& feedback, int64_t round)
      : feedback_(feedback), round_(round), asked_before_(feedback.asked_in_round(round)) {}

  // The next chunk of the round, x [n, ...] and z [n] (or undefined): asks `oracle`
  // about the rows that no earlier run of this round asked.
  template <FeedbackOracle Oracle>
  void ask(Oracle& oracle, const torch::Tensor& x, const torch::Tensor& z) {
    const int64_t count = x.size(0), fresh = std::min(count, drawn_ + count - asked_before_);
    drawn_ += count;
    if (fresh <= 0) return;
    oracle.record(feedback_, x.narrow(0, count - fresh, fresh), z.defined() ? z.narrow(0, count - fresh, fresh) : z,
                  round_);
  }

 private:
  FeedbackDataset& feedback_;
  int64_t round_, asked_before_, drawn_ = 0;
};

}  // namespace diffctl::reward
