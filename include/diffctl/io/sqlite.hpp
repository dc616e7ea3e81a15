#pragma once
// A thin RAII layer over SQLite's C API: a connection, prepared statements with
// typed binds and columns, and a transaction that rolls back unless committed.
// Every error names the database file and SQLite's own message.
//
//   io::Sqlite db(path);
//   io::Sqlite::Transaction write(db);              // BEGIN IMMEDIATE
//   auto insert = db.prepare("INSERT INTO t(a, b) VALUES (?, ?)");
//   insert.bind(1, int64_t{3}).bind(2, blob).run();
//   write.commit();

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace diffctl::io {

// A database that SQLite could open but not use as asked (not a database, corrupt,
// locked beyond the busy timeout, disk full): the message names the file.
class SqliteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Sqlite {
 public:
  class Statement;
  class Transaction;

  // Opens `path` (created when `create` and absent), waiting up to busy_ms for a
  // writer in another process to finish.
  explicit Sqlite(const std::filesystem::path& path, bool create = false, int busy_ms = 30000) : name_(path.string()) {
    const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    const int status = sqlite3_open_v2(name_.c_str(), &db_, flags, nullptr);
    if (status != SQLITE_OK) {
      const std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(status);
      sqlite3_close(db_);
      db_ = nullptr;
      throw SqliteError(name_ + ": cannot open: " + message);
    }
    sqlite3_busy_timeout(db_, busy_ms);
    sqlite3_extended_result_codes(db_, 1);
  }
  Sqlite(const Sqlite&) = delete;
  Sqlite& operator=(const Sqlite&) = delete;
  ~Sqlite() { sqlite3_close_v2(db_); }

  // Runs one or more statements that return no rows.
  void exec(const std::string& sql) {
    char* message = nullptr;
    const int status = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
    if (status != SQLITE_OK) {
      const std::string text = message ? message : sqlite3_errstr(status);
      sqlite3_free(message);
      throw SqliteError(name_ + ": " + text);
    }
  }

  Statement prepare(std::string_view sql);

  // The single integer a statement like "PRAGMA user_version" returns.
  int64_t integer(std::string_view sql);

  int64_t last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
  const std::string& name() const { return name_; }
  sqlite3* handle() const { return db_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw SqliteError(name_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }

 private:
  sqlite3* db_ = nullptr;
  std::string name_;
};

class Sqlite::Statement {
 public:
  Statement(Sqlite& db, std::string_view sql) : db_(&db) {
    if (sqlite3_prepare_v2(db.handle(), sql.data(), static_cast<int>(sql.size()), &statement_, nullptr) != SQLITE_OK)
      db.fail("cannot prepare \"" + std::string(sql) + "\"");
  }
  Statement(Statement&& other) noexcept : db_(other.db_), statement_(std::exchange(other.statement_, nullptr)) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(statement_); }

  // Parameters are numbered from 1, as in SQL's "?".
  Statement& bind(int index, int64_t value) { return check(sqlite3_bind_int64(statement_, index, value)); }
  Statement& bind(int index, double value) { return check(sqlite3_bind_double(statement_, index, value)); }
  Statement& bind(int index, std::string_view text) {
    return check(sqlite3_bind_text64(statement_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Statement& bind_blob(int index, const void* data, std::size_t bytes) {
    return check(sqlite3_bind_blob64(statement_, index, data, bytes, SQLITE_TRANSIENT));
  }
  Statement& bind_null(int index) { return check(sqlite3_bind_null(statement_, index)); }
  template <class T>
  Statement& bind(int index, const std::optional<T>& value) {
    return value ? bind(index, *value) : bind_null(index);
  }

  // Steps once: true while there is a row to read.
  bool step() {
    const int status = sqlite3_step(statement_);
    if (status == SQLITE_ROW) return true;
    if (status == SQLITE_DONE) return false;
    db_->fail("statement failed");
  }
  // Runs a statement that returns no rows, then resets it for the next binds.
  void run() {
    while (step()) {
    }
    reset();
  }
  void reset() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

  // Columns are numbered from 0.
  bool is_null(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }
  int type(int column) const { return sqlite3_column_type(statement_, column); }
  int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }
  double real(int column) const { return sqlite3_column_double(statement_, column); }
  std::string text(int column) const {
    const auto* data = sqlite3_column_text(statement_, column);
    return data ? std::string(reinterpret_cast<const char*>(data), sqlite3_column_bytes(statement_, column))
                : std::string();
  }
  // A blob's bytes; valid until the next step or reset.
  std::string_view blob(int column) const {
    const void* data = sqlite3_column_blob(statement_, column);
    return data ? std::string_view(static_cast<const char*>(data), sqlite3_column_bytes(statement_, column))
                : std::string_view();
  }

 private:
  Statement& check(int status) {
    if (status != SQLITE_OK) db_->fail("cannot bind a parameter");
    return *this;
  }
  Sqlite* db_;
  sqlite3_stmt* statement_ = nullptr;
};

// BEGIN IMMEDIATE (the write lock at once, so two writers never deadlock half-way)
// ... commit(); destroyed without commit(), it rolls back.
class Sqlite::Transaction {
 public:
  explicit Transaction(Sqlite& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    db_.exec("COMMIT");
    done_ = true;
  }

 private:
  Sqlite& db_;
  bool done_ = false;
};

inline Sqlite::Statement Sqlite::prepare(std::string_view sql) { return Statement(*this, sql); }

inline int64_t Sqlite::integer(std::string_view sql) {
  Statement statement = prepare(sql);
  if (!statement.step()) fail("no value from \"" + std::string(sql) + "\"");
  return statement.integer(0);
}

}  // namespace diffctl::io
