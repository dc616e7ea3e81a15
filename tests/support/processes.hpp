#pragma once
// Runs this test binary again in a child process that runs one hidden test case
// (a tag the suite skips), for tests that kill a process or need several.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.hpp"

namespace diffctl::testing {

class ChildProcess {
 public:
  // `tag` names the hidden case ("[.name]"); `environment` ("NAME=value") is the
  // child's whole environment. Its standard output is dropped and its standard
  // error goes to `error_file` when given.
  ChildProcess(const std::string& tag, std::vector<std::string> environment,
               const std::filesystem::path& error_file = {}) {
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::vector<std::string> arguments{self, tag};
    std::vector<char*> argv, envp;
    for (auto& a : arguments) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : environment) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 1, "/dev/null", O_WRONLY, 0);
    if (!error_file.empty())
      posix_spawn_file_actions_addopen(&files, 2, error_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int failed = posix_spawn(&pid_, self.c_str(), &files, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&files);
    if (failed != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(failed));
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (!status_) {
      kill();
      wait();
    }
  }

  void kill() const { ::kill(pid_, SIGKILL); }

  // The wait status (as waitpid gives it) once the child has ended, or nothing
  // when it is still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::hours(1)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
      else if (std::chrono::steady_clock::now() >= deadline) break;
      else std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }

 private:
  pid_t pid_ = 0;
  std::optional<int> status_;
};

// The environment of rank r of a run of n processes on this machine that meet
// through the store file `store` (empty: through TCP, at the MASTER_ADDR and
// MASTER_PORT in `extra`), with `extra` variables ("NAME=value").
inline std::vector<std::string> rank_environment(int r, int n, const std::filesystem::path& store,
                                                 std::vector<std::string> extra = {}) {
  extra.insert(extra.end(), {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(n), "OMP_NUM_THREADS=1"});
  if (!store.empty()) extra.push_back("DIFFCTL_STORE_FILE=" + store.string());
  return extra;
}

// Runs the hidden case `tag` as the n ranks of one run, meeting through `store`
// (see rank_environment), each rank's standard error in dir/rank<r>.err, and waits
// for them. Returns what went wrong (with every rank's standard error), or nothing
// when all ranks exited with status 0 within `timeout`.
inline std::string run_ranks(const std::string& tag, int n, const std::filesystem::path& dir,
                             const std::filesystem::path& store, const std::vector<std::string>& extra,
                             std::chrono::milliseconds timeout) {
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  const auto err = [&](int r) { return dir / ("rank" + std::to_string(r) + ".err"); };
  for (int r = 0; r < n; ++r)
    ranks.push_back(std::make_unique<ChildProcess>(tag, rank_environment(r, n, store, extra), err(r)));
  std::string problems;
  for (int r = 0; r < n; ++r) {
    const auto status = ranks[static_cast<std::size_t>(r)]->wait(timeout);
    if (!status) problems += "rank " + std::to_string(r) + " still runs after the timeout\n";
    else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0)
      problems += "rank " + std::to_string(r) + " ended with wait status " + std::to_string(*status) + "\n";
  }
  if (problems.empty()) return problems;
  for (int r = 0; r < n; ++r) problems += "rank " + std::to_string(r) + ": " + read_bytes(err(r)) + "\n";
  return problems;
}

}  // namespace diffctl::testing
