#pragma once
// Output files that appear whole or not at all: written beside the target under a
// temporary name, then renamed over it, so a crash never leaves half a file.

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace diffctl::io {

// Calls write(partial_path) to produce the file, then renames it to `path`.
// `write` returns false or throws on failure; the partial file is then removed.
template <class Writer>
void write_atomically(const std::filesystem::path& path, Writer&& write) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  const std::filesystem::path partial = path.string() + ".partial";
  bool ok = false;
  try {
    ok = write(partial);
  } catch (...) {
    std::filesystem::remove(partial);
    throw;
  }
  if (!ok) {
    std::filesystem::remove(partial);
    throw std::runtime_error("could not write " + path.string());
  }
  std::filesystem::rename(partial, path);
}

inline void write_text(const std::filesystem::path& path, std::string_view text) {
  write_atomically(path, [&](const std::filesystem::path& partial) {
    std::ofstream out(partial, std::ios::binary);
    out << text;
    out.close();
    return static_cast<bool>(out);
  });
}

}  // namespace diffctl::io
