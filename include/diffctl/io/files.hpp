#pragma once
// Output files that appear whole or not at all: written beside the target under a
// temporary name, flushed to the disk, then renamed over it, so neither a crash of
// the process nor a power cut leaves half a file (the old file stays until the new
// one is complete).

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace diffctl::io {

namespace detail {
// fsync(2) on a file or a directory (a rename is durable once its directory is).
inline void sync_to_disk(const std::filesystem::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string() + " to sync it: " + std::strerror(errno));
  const int status = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems cannot sync directories (EINVAL); the rename is then as
  // durable as that file system makes it.
  if (status != 0 && !(directory && error == EINVAL))
    throw std::runtime_error("cannot sync " + path.string() + " to disk: " + std::strerror(error));
}
}  // namespace detail

// Calls write(partial_path) to produce the file, syncs it, then renames it to
// `path`. `write` returns false or throws on failure; the partial file is then
// removed.
template <class Writer>
void write_atomically(const std::filesystem::path& path, Writer&& write) {
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
  std::filesystem::create_directories(directory);
  const std::filesystem::path partial = path.string() + ".partial";
  bool ok = false;
  try {
    ok = write(partial);
    if (ok) detail::sync_to_disk(partial, false);
  } catch (...) {
    std::filesystem::remove(partial);
    throw;
  }
  if (!ok) {
    std::filesystem::remove(partial);
    throw std::runtime_error("could not write " + path.string());
  }
  std::filesystem::rename(partial, path);
  detail::sync_to_disk(directory, true);
}

inline void write_text(const std::filesystem::path& path, std::string_view text) {
  write_atomically(path, [&](const std::filesystem::path& partial) {
    std::ofstream out(partial, std::ios::binary);
    out << text;
    out.close();
    return static_cast<bool>(out);
  });
}

// Removes `path` and everything under it (links are removed, not followed); a
// missing path is no error. Not std::filesystem::remove_all: PyTorch's wheels of
// LibTorch export the filesystem functions of the libstdc++ they link statically
// (pytorch/pytorch#133437), and a program built with a newer GCC whose remove_all
// binds to part of that copy crashes in it (seen with torch 2.11 and GCC 13).
inline void remove_tree(const std::filesystem::path& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return;
    throw std::runtime_error("cannot remove " + path.string() + ": " + std::strerror(errno));
  }
  // Depth first, so that each directory is empty when its turn comes.
  const auto remove_entry = [](const char* name, const struct stat*, int, struct FTW*) -> int {
    return ::remove(name) == 0 ? 0 : errno;
  };
  const int status = ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (status != 0)
    throw std::runtime_error("cannot remove " + path.string() + ": " + std::strerror(status > 0 ? status : errno));
}

}  // namespace diffctl::io
