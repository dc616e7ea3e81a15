#pragma once
// Training checkpoints: modules, optimizers, generators, extra tensors and the step
// in one LibTorch archive, so that a resumed run continues bit for bit.
//
//   diffctl::io::Checkpoint checkpoint{.modules = {{"model", model.get()}, {"ema", ema.get()}},
//                                      .optimizers = {{"adam", &optimizer}},
//                                      .generators = {{"noise", generator}}};
//   if (resume) start = diffctl::io::load_checkpoint(path, checkpoint);
//   ...
//   checkpoint.step = step;
//   diffctl::io::save_checkpoint(path, checkpoint);  // every N steps and at the end
//
// The file is written beside `path` and renamed over it, so a crash mid-save leaves
// the previous checkpoint whole. It is a LibTorch archive behind a short header
// with the archive's SHA-256 ("DFCKPT1\n", 64 hex digits, "\n"): LibTorch's archive
// reader crashes on some corrupted archives (found by fuzzing), so only bytes whose
// digest matches ever reach it. Loading checks every entry the Checkpoint names
// (presence, names and shapes of each module's tensors, generator state sizes)
// before it changes anything, and names the file and the entry when one does not fit.

#include <torch/torch.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/io/sha256.hpp"
#include "diffctl/models/state_dict.hpp"

namespace diffctl::io {

// What a checkpoint holds. The pointers are not owned; a Generator is a handle, so
// the copy here restores the caller's generator. Names are identifiers
// ([A-Za-z_][A-Za-z0-9_]*), unique within their kind.
struct Checkpoint {
  std::vector<std::pair<std::string, torch::nn::Module*>> modules{};
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> optimizers{};
  std::vector<std::pair<std::string, at::Generator>> generators{};
  // Extra tensors; on load an undefined one is assigned, a defined one (same shape)
  // is overwritten in place.
  std::vector<std::pair<std::string, torch::Tensor*>> tensors{};
  std::int64_t step = 0;
};

namespace detail {

constexpr std::int64_t kCheckpointFormat = 1;
constexpr std::string_view kCheckpointMagic = "DFCKPT1\n";
constexpr std::size_t kCheckpointHeader = kCheckpointMagic.size() + 64 + 1;

template <class Entries>
void check_entry_names(const Entries& entries, const char* kind) {
  std::set<std::string> seen;
  for (const auto& [name, value] : entries) {
    bool identifier = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) && name != "training";
    for (const char c : name) identifier = identifier && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    require(identifier, "checkpoint ", kind, " name \"", name,
            "\": expected an identifier ([A-Za-z_][A-Za-z0-9_]*, not \"training\")");
    require(seen.insert(name).second, "checkpoint ", kind, " name \"", name, "\" appears twice");
    if constexpr (std::is_pointer_v<std::decay_t<decltype(value)>>)
      require(value != nullptr, "checkpoint ", kind, " \"", name, "\": null pointer");
    else require(value.defined(), "checkpoint ", kind, " \"", name, "\": undefined generator");
  }
}

inline void check_checkpoint_names(const Checkpoint& checkpoint) {
  check_entry_names(checkpoint.modules, "module");
  check_entry_names(checkpoint.optimizers, "optimizer");
  check_entry_names(checkpoint.generators, "generator");
  check_entry_names(checkpoint.tensors, "tensor");
}

// The tensors under an archive written by Module::save, by dotted names.
inline void collect_archive_tensors(torch::serialize::InputArchive& archive, const std::string& prefix,
                                    models::StateDict& out) {
  for (const auto& key : archive.keys()) {
    torch::Tensor tensor;
    if (archive.try_read(key, tensor)) {
      out.insert(prefix + key, tensor);
      continue;
    }
    torch::serialize::InputArchive child;
    if (archive.try_read(key, child)) collect_archive_tensors(child, prefix + key + ".", out);
  }
}

inline std::vector<std::string> archive_children(torch::serialize::InputArchive& archive) {
  std::vector<std::string> names;
  for (const auto& key : archive.keys()) {
    torch::serialize::InputArchive child;
    torch::Tensor tensor;
    if (archive.try_read(key, child) || archive.try_read(key, tensor)) names.push_back(key);
  }
  return names;
}

// The group `group` ("modules", ...) of a checkpoint, and its entry `name`.
inline torch::serialize::InputArchive checkpoint_group(torch::serialize::InputArchive& archive,
                                                       const std::filesystem::path& path, const std::string& group,
                                                       const std::string& name) {
  torch::serialize::InputArchive entries;
  require(archive.try_read(group, entries), "checkpoint ", path.string(), ": no entry ", group, "/", name,
          " (it holds no ", group, ")");
  torch::serialize::InputArchive entry;
  require(entries.try_read(name, entry), "checkpoint ", path.string(), ": no entry ", group, "/", name, " (", group,
          " in it: ", models::detail::list_names(archive_children(entries)), ")");
  return entry;
}

inline torch::Tensor checkpoint_tensor(torch::serialize::InputArchive& archive, const std::filesystem::path& path,
                                       const std::string& group, const std::string& name) {
  torch::serialize::InputArchive entries;
  torch::Tensor tensor;
  require(archive.try_read(group, entries) && entries.try_read(name, tensor), "checkpoint ", path.string(),
          ": no entry ", group, "/", name);
  return tensor;
}

inline std::string checkpoint_entry(const std::filesystem::path& path, const std::string& group,
                                    const std::string& name) {
  return "checkpoint " + path.string() + " entry " + group + "/" + name;
}

// Where a checkpoint's tensors should land: beside the first optimized parameter,
// so optimizer state loads onto the device it is used on.
inline torch::Device checkpoint_device(const Checkpoint& checkpoint) {
  for (const auto& [name, optimizer] : checkpoint.optimizers)
    for (const auto& group : optimizer->param_groups())
      for (const auto& parameter : group.params()) return parameter.device();
  for (const auto& [name, module] : checkpoint.modules)
    for (const auto& parameter : module->parameters()) return parameter.device();
  return torch::kCPU;
}

}  // namespace detail

// Writes a LibTorch archive to `path` behind its SHA-256 (the header above), whole
// or not at all.
inline void write_archive(const std::filesystem::path& path, torch::serialize::OutputArchive& archive) {
  std::string bytes;
  try {
    archive.save_to([&](const void* data, std::size_t size) {
      bytes.append(static_cast<const char*>(data), size);
      return size;
    });
  } catch (const c10::Error& error) {
    throw std::runtime_error("could not write checkpoint " + path.string() + ": " +
                             models::detail::short_message(error));
  }
  write_atomically(path, [&](const std::filesystem::path& partial) {
    std::ofstream out(partial, std::ios::binary);
    out << detail::kCheckpointMagic << sha256(bytes) << '\n' << bytes;
    out.close();
    if (!out) throw std::runtime_error("could not write checkpoint " + path.string());
    return true;
  });
}

// Reads an archive written by write_archive onto `device`, after checking its
// digest: a truncated, corrupt or foreign file is refused with its name before
// LibTorch parses a byte of it.
inline torch::serialize::InputArchive read_archive(const std::filesystem::path& path,
                                                   c10::optional<torch::Device> device = c10::nullopt) {
  const std::string name = "checkpoint " + path.string();
  require(std::filesystem::is_regular_file(path), name, ": no such file");
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    require(static_cast<bool>(in), name, ": cannot open");
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string_view header = std::string_view(bytes).substr(0, detail::kCheckpointHeader);
  require(header.starts_with(detail::kCheckpointMagic), name, ": not a diffctl checkpoint",
          bytes.starts_with("PK") ? " (a bare LibTorch archive, as diffctl wrote before its checkpoints carried "
                                    "their SHA-256; start that run again)"
                                  : "");
  require(header.size() == detail::kCheckpointHeader && header.back() == '\n', name,
          ": truncated header (file corrupt)");
  const std::string_view recorded = header.substr(detail::kCheckpointMagic.size(), 64);
  const std::string_view archive_bytes = std::string_view(bytes).substr(detail::kCheckpointHeader);
  const std::string found = sha256(archive_bytes);
  require(found == recorded, name, ": SHA-256 ", found, " where ", recorded,
          " was recorded (the file is truncated or corrupt)");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(archive_bytes.data(), archive_bytes.size(), device);
  } catch (const c10::Error& error) {
    throw std::invalid_argument(name + ": cannot be read: " + models::detail::short_message(error));
  }
  return archive;
}

// Writes everything `checkpoint` names to `path` (a LibTorch archive behind its
// SHA-256), atomically.
inline void save_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  detail::check_checkpoint_names(checkpoint);
  torch::serialize::OutputArchive archive;
  const auto unit = archive.compilation_unit();
  archive.write("diffctl_checkpoint", torch::tensor(detail::kCheckpointFormat),
                /*is_buffer=*/true);
  archive.write("step", torch::tensor(checkpoint.step), /*is_buffer=*/true);
  if (!checkpoint.modules.empty()) {
    torch::serialize::OutputArchive group(unit);
    for (const auto& [name, module] : checkpoint.modules) {
      torch::serialize::OutputArchive entry(unit);
      module->save(entry);
      group.write(name, entry);
    }
    archive.write("modules", group);
  }
  if (!checkpoint.optimizers.empty()) {
    torch::serialize::OutputArchive group(unit);
    for (const auto& [name, optimizer] : checkpoint.optimizers) {
      torch::serialize::OutputArchive entry(unit);
      optimizer->save(entry);
      group.write(name, entry);
    }
    archive.write("optimizers", group);
  }
  if (!checkpoint.generators.empty()) {
    torch::serialize::OutputArchive group(unit);
    for (const auto& [name, handle] : checkpoint.generators) {
      at::Generator generator = handle;
      torch::Tensor state;
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        state = generator.get_state();
      }
      group.write(name, state, /*is_buffer=*/true);
    }
    archive.write("generators", group);
  }
  if (!checkpoint.tensors.empty()) {
    torch::serialize::OutputArchive group(unit);
    for (const auto& [name, tensor] : checkpoint.tensors) {
      require(tensor->defined(), "checkpoint tensor \"", name, "\" is undefined");
      group.write(name, tensor->detach(), /*is_buffer=*/true);
    }
    archive.write("tensors", group);
  }
  write_archive(path, archive);
}

// Restores everything `checkpoint` names from `path` and returns the saved step
// (also stored in checkpoint.step). Entries the file holds beyond those are ignored.
inline std::int64_t load_checkpoint(const std::filesystem::path& path, Checkpoint& checkpoint) {
  detail::check_checkpoint_names(checkpoint);
  require(std::filesystem::is_regular_file(path), "checkpoint ", path.string(), ": no such file");
  torch::serialize::InputArchive archive = read_archive(path, detail::checkpoint_device(checkpoint));
  torch::Tensor format;
  require(archive.try_read("diffctl_checkpoint", format) && format.numel() == 1, "checkpoint ", path.string(),
          ": not a diffctl checkpoint (no entry diffctl_checkpoint)");
  require(format.item<std::int64_t>() == detail::kCheckpointFormat, "checkpoint ", path.string(), ": format ",
          format.item<std::int64_t>(), ", this build reads format ", detail::kCheckpointFormat);
  torch::Tensor step;
  require(archive.try_read("step", step) && step.numel() == 1, "checkpoint ", path.string(), ": no entry step");

  // Check everything before changing anything.
  std::vector<models::StateDict> module_states;
  for (const auto& [name, module] : checkpoint.modules) {
    auto entry = detail::checkpoint_group(archive, path, "modules", name);
    models::StateDict state("tensor");
    detail::collect_archive_tensors(entry, "", state);
    models::LoadStateDictOptions options;
    options.source = detail::checkpoint_entry(path, "modules", name);
    models::check_state_dict(*module, state, options);
    module_states.push_back(std::move(state));
  }
  std::vector<torch::Tensor> generator_states;
  for (const auto& [name, handle] : checkpoint.generators) {
    torch::Tensor state = detail::checkpoint_tensor(archive, path, "generators", name).to(torch::kCPU);
    at::Generator generator = handle;
    torch::Tensor current;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      current = generator.get_state();
    }
    require(state.scalar_type() == current.scalar_type() && state.sizes().equals(current.sizes()),
            detail::checkpoint_entry(path, "generators", name), ": a state of ", state.numel(),
            " bytes does not fit a ", generator.device(), " generator (", current.numel(), " bytes)");
    generator_states.push_back(state);
  }
  std::vector<torch::Tensor> tensor_states;
  for (const auto& [name, tensor] : checkpoint.tensors) {
    torch::Tensor state = detail::checkpoint_tensor(archive, path, "tensors", name);
    require(!tensor->defined() || tensor->sizes().equals(state.sizes()),
            detail::checkpoint_entry(path, "tensors", name), ": file ", state.sizes(), " vs target ", tensor->sizes());
    tensor_states.push_back(state);
  }
  std::vector<torch::serialize::InputArchive> optimizer_archives;
  for (const auto& [name, optimizer] : checkpoint.optimizers)
    optimizer_archives.push_back(detail::checkpoint_group(archive, path, "optimizers", name));

  // Optimizers first: they are the one part whose fit is known only by loading.
  for (std::size_t i = 0; i < checkpoint.optimizers.size(); ++i) {
    const auto& [name, optimizer] = checkpoint.optimizers[i];
    try {
      optimizer->load(optimizer_archives[i]);
    } catch (const c10::Error& error) {
      throw std::invalid_argument(detail::checkpoint_entry(path, "optimizers", name) +
                                  " does not fit the optimizer: " + models::detail::short_message(error));
    }
  }
  for (std::size_t i = 0; i < checkpoint.modules.size(); ++i)
    models::load_state_dict(*checkpoint.modules[i].second, module_states[i]);
  for (std::size_t i = 0; i < checkpoint.generators.size(); ++i) {
    at::Generator generator = checkpoint.generators[i].second;
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(generator_states[i]);
  }
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < checkpoint.tensors.size(); ++i) {
      torch::Tensor& target = *checkpoint.tensors[i].second;
      if (target.defined()) target.copy_(tensor_states[i]);
      else target = tensor_states[i];
    }
  }
  checkpoint.step = step.to(torch::kCPU).item<std::int64_t>();
  return checkpoint.step;
}

}  // namespace diffctl::io
