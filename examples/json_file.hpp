#pragma once
// The examples' JSON files (metrics.json, config.json): written whole or not at
// all through io::write_text, read with the file's name in every error.

#include <concepts>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"

namespace diffctl::examples {

inline void write_json(const std::filesystem::path& path, const nlohmann::json& value) {
  io::write_text(path, value.dump(2) + "\n");
}

// The same with the keys in the order they were inserted, for files that scripts
// read line by line (a template, so that a braced list still means nlohmann::json).
template <class Json>
  requires std::same_as<Json, nlohmann::ordered_json>
void write_json(const std::filesystem::path& path, const Json& value) { io::write_text(path, value.dump(2) + "\n"); }

inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(static_cast<bool>(in), "cannot read ", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& error) {
    throw std::invalid_argument(path.string() + ": " + error.what());
  }
}

}  // namespace diffctl::examples
