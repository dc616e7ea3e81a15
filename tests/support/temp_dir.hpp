#pragma once
// A fresh directory under the system's temporary one for a test's files, removed
// with them when the test ends, pass or fail; and reading and writing them whole.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>

#include "diffctl/io/files.hpp"

namespace diffctl::testing {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("diffctl_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    io::remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    try {
      io::remove_tree(path_);
    } catch (const std::exception&) {
      // A test's leftovers in the temporary directory are no reason to fail it.
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The bytes of a file, and a file replaced by given bytes (to corrupt or truncate
// one). Both throw when the file cannot be read or written, so that a check on the
// content cannot pass on an empty string.
inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("read_bytes: cannot open " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("write_bytes: cannot write " + path.string());
}

}  // namespace diffctl::testing
