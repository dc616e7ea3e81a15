// libFuzzer harnesses for every reader of files the library did not necessarily
// write itself: IDX images and labels, CIFAR-10 batches, state dicts (torch.save
// zip + pickle, TorchScript), checkpoints and the feedback store. One binary; the
// parser is chosen by DIFFCTL_FUZZ_TARGET:
//
//   DIFFCTL_FUZZ_TARGET=idx fuzz_parsers corpus/idx -max_total_time=60
//   DIFFCTL_FUZZ_TARGET=idx DIFFCTL_FUZZ_SEEDS=corpus/idx fuzz_parsers   (writes seeds, exits)
//
// A reader may refuse an input with an exception (that is its contract: one clear
// error naming the file); anything else (a crash, a sanitizer report, a hang, a
// leak) is a finding.

#include <torch/torch.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include "diffctl/data/cifar10.hpp"
#include "diffctl/data/idx.hpp"
#include "diffctl/io/checkpoint.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/models/state_dict.hpp"
#include "diffctl/reward/feedback_dataset.hpp"

namespace {

namespace fs = std::filesystem;
using namespace diffctl;

std::string target;
fs::path work;  // where each input is written, on tmpfs when there is one

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The small module, optimiser and generator a fuzzed checkpoint or state dict is
// loaded into.
struct Model {
  torch::nn::Sequential net{torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2)};
  torch::optim::Adam adam{net->parameters(), torch::optim::AdamOptions(1e-3)};
  at::Generator generator = at::detail::createCPUGenerator(1);
  torch::Tensor extra;
  io::Checkpoint checkpoint() {
    return {.modules = {{"model", net.ptr().get()}},
            .optimizers = {{"adam", &adam}},
            .generators = {{"noise", generator}},
            .tensors = {{"extra", &extra}}};
  }
};

void parse(const fs::path& file) {
  if (target == "idx") {
    data::read_idx_images(file);
  } else if (target == "idx-labels") {
    data::read_idx_labels(file);
  } else if (target == "cifar") {
    data::read_cifar10_batch(file);
  } else if (target == "state-dict") {
    const models::StateDict dict = models::read_state_dict(file);
    static Model model;  // built once: loading only overwrites its tensors
    models::load_state_dict(*model.net, dict, {.strict = false});
  } else if (target == "checkpoint") {
    static Model model;
    io::Checkpoint checkpoint = model.checkpoint();
    io::load_checkpoint(file, checkpoint);
  } else if (target == "feedback") {
    const reward::FeedbackDataset data(file);
    if (data.size() > 0) (void)data.x().sum().item<float>();
  }
}

// Valid files of each kind, for the corpus to start from.
void write_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path scratch = work / "seed";
  if (target == "idx") {
    const std::string header("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x02", 16);
    write_file(dir / "images.idx", header + std::string(12, '\x7f'));
  } else if (target == "idx-labels") {
    write_file(dir / "labels.idx", std::string("\x00\x00\x08\x01\x00\x00\x00\x03\x01\x09\x00", 11));
  } else if (target == "cifar") {
    std::string record(static_cast<std::size_t>(data::kCifar10RecordBytes), '\x40');
    record[0] = 3;
    write_file(dir / "batch.bin", record + record);
  } else if (target == "state-dict") {
    Model model;
    models::save_state_dict(*model.net, dir / "model.pt");
  } else if (target == "checkpoint") {
    Model model;
    model.extra = torch::arange(3.0);
    io::Checkpoint checkpoint = model.checkpoint();
    checkpoint.step = 7;
    io::save_checkpoint(dir / "checkpoint.pt", checkpoint);
  } else if (target == "feedback") {
    fs::remove(scratch);
    {
      reward::FeedbackDataset data(scratch);
      data.append(torch::randn({2, 1, 2, 2}), torch::tensor({0, 3}, torch::kLong), torch::tensor({0.5, 0.25}), 1,
                  reward::OracleState{2, at::detail::createCPUGenerator(5).get_state()});
      data.ask(torch::zeros({1, 1, 2, 2}), torch::tensor({1}, torch::kLong), 2);
    }  // closed: one file, the journal folded in
    write_file(dir / "feedback.sqlite", read_file(scratch));
    fs::remove(scratch);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* chosen = std::getenv("DIFFCTL_FUZZ_TARGET");
  target = chosen ? chosen : "";
  if (target != "idx" && target != "idx-labels" && target != "cifar" && target != "state-dict" &&
      target != "checkpoint" && target != "feedback") {
    std::cerr << "fuzz_parsers: set DIFFCTL_FUZZ_TARGET to idx, idx-labels, cifar, state-dict, checkpoint or "
                 "feedback\n";
    std::exit(2);
  }
  torch::set_num_threads(1);
  // LibTorch captures and symbolizes a stack trace for every c10::Error it throws,
  // milliseconds each; refused inputs throw all the time.
  c10::SetStackTraceFetcher([] { return std::string(); });
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  work = base / ("diffctl_fuzz_" + target + "_" + std::to_string(::getpid()));
  fs::create_directories(work);
  if (const char* seeds = std::getenv("DIFFCTL_FUZZ_SEEDS")) {
    write_seeds(seeds);
    diffctl::io::remove_tree(work);
    std::exit(0);
  }
  std::atexit([] { diffctl::io::remove_tree(work); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path file = work / "input";
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(file.string() + suffix);
  write_file(file, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    parse(file);
  } catch (const std::exception&) {
    // Refused with an error: what a reader should do with a bad file.
  }
  return 0;
}
