#pragma once
// Flag parsing for the example binaries: --help prints the usage and exits 0; a bad
// flag prints one line naming it and exits non-zero, like every other error.

#include <filesystem>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>

namespace diffctl::examples {

// Parses the flags; returns the exit code when the program should stop now.
inline std::optional<int> parse_flags(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return app.exit(error);  // --help
    std::cerr << std::filesystem::path(argv[0]).filename().string() << ": " << error.what() << " (see --help)\n";
    return error.get_exit_code();
  }
  return std::nullopt;
}

}  // namespace diffctl::examples
