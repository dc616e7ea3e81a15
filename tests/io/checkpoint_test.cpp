#include "diffctl/io/checkpoint.hpp"

#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "diffctl/runtime.hpp"
#include "support/temp_dir.hpp"

using diffctl::testing::read_bytes;
using diffctl::testing::TempDir;
using diffctl::testing::write_bytes;

namespace {

using Catch::Matchers::Contains;
namespace fs = std::filesystem;
namespace io = diffctl::io;

struct TinyImpl : torch::nn::Module {
  explicit TinyImpl(int64_t hidden = 8) {
    first = register_module("first", torch::nn::Linear(4, hidden));
    second = register_module("second", torch::nn::Linear(hidden, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return second(torch::tanh(first(x))); }
  torch::nn::Linear first{nullptr}, second{nullptr};
};
TORCH_MODULE(Tiny);

// A run's state: a model, its exponential moving average, Adam, a noise generator
// and a running loss kept as an extra tensor.
struct Run {
  explicit Run(std::uint64_t seed, int64_t hidden = 8)
      : model(init(seed, hidden)),
        ema(init(seed + 1, hidden)),
        optimizer(model->parameters(), torch::optim::AdamOptions(1e-2)),
        generator(diffctl::make_generator(seed + 2)),
        running_loss(torch::zeros({})) {}

  static Tiny init(std::uint64_t seed, int64_t hidden) {
    torch::manual_seed(seed);
    return Tiny(hidden);
  }

  void train(int steps) {
    for (int i = 0; i < steps; ++i) {
      const torch::Tensor x = torch::randn({16, 4}, generator);
      const torch::Tensor target = torch::sin(x.sum(1, true)) + 0.1 * torch::randn({16, 1}, generator);
      optimizer.zero_grad();
      const torch::Tensor loss = torch::mse_loss(model->forward(x), target);
      loss.backward();
      optimizer.step();
      torch::NoGradGuard no_grad;
      running_loss.mul_(0.9).add_(0.1 * loss.detach());
      const auto from = model->parameters();
      auto to = ema->parameters();
      for (std::size_t p = 0; p < from.size(); ++p) to[p].mul_(0.9).add_(0.1 * from[p]);
      ++step;
    }
  }

  io::Checkpoint checkpoint() {
    io::Checkpoint out{.modules = {{"model", model.get()}, {"ema", ema.get()}},
                       .optimizers = {{"adam", &optimizer}},
                       .generators = {{"noise", generator}},
                       .tensors = {{"running_loss", &running_loss}}};
    out.step = step;
    return out;
  }

  Tiny model;
  Tiny ema;
  torch::optim::Adam optimizer;
  at::Generator generator;
  torch::Tensor running_loss;
  std::int64_t step = 0;
};

void check_same(Run& a, Run& b) {
  const auto pa = a.model->parameters(), pb = b.model->parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));
  const auto ea = a.ema->parameters(), eb = b.ema->parameters();
  for (std::size_t i = 0; i < ea.size(); ++i) CHECK(torch::equal(ea[i], eb[i]));
  CHECK(torch::equal(a.running_loss, b.running_loss));
  CHECK(torch::equal(torch::randn({5}, a.generator), torch::randn({5}, b.generator)));
  CHECK(a.step == b.step);
}

// A module whose save fails, to make a checkpoint write throw halfway.
struct FailingImpl : torch::nn::Module {
  void save(torch::serialize::OutputArchive&) const override { throw std::runtime_error("disk full"); }
};
TORCH_MODULE(Failing);

}  // namespace

TEST_CASE("a resumed run continues bit for bit", "[checkpoint]") {
  TempDir dir;
  const fs::path path = dir.path() / "run" / "checkpoint.pt";

  Run original(1);
  original.train(5);
  io::save_checkpoint(path, original.checkpoint());
  CHECK(fs::exists(path));
  CHECK_FALSE(fs::exists(path.string() + ".partial"));
  original.train(5);

  Run resumed(100);  // other initial weights, other noise
  io::Checkpoint checkpoint = resumed.checkpoint();
  CHECK(io::load_checkpoint(path, checkpoint) == 5);
  CHECK(checkpoint.step == 5);
  resumed.step = checkpoint.step;
  resumed.train(5);
  check_same(original, resumed);

  // An undefined extra tensor is assigned from the file.
  Run blank(200);
  blank.running_loss = torch::Tensor();
  io::Checkpoint partial = blank.checkpoint();
  io::load_checkpoint(path, partial);
  CHECK(blank.running_loss.defined());
  CHECK(blank.running_loss.dim() == 0);
}

TEST_CASE("a checkpoint that does not fit names the file and the entry", "[checkpoint]") {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.pt";
  Run original(1);
  original.train(2);
  io::save_checkpoint(path, original.checkpoint());

  SECTION("a model of another shape") {
    Run wider(5, /*hidden=*/16);
    const torch::Tensor before = wider.model->first->weight.clone();
    io::Checkpoint checkpoint = wider.checkpoint();
    CHECK_THROWS_WITH(io::load_checkpoint(path, checkpoint),
                      Contains(path.string()) && Contains("modules/model") &&
                          Contains("first.weight: file [8, 4] vs model [16, 4]") && Contains("mismatched 3"));
    CHECK(torch::equal(wider.model->first->weight, before));  // left as it was
  }
  SECTION("an entry the file does not hold") {
    Run run(5);
    io::Checkpoint checkpoint = run.checkpoint();
    checkpoint.modules.emplace_back("teacher", run.ema.get());
    CHECK_THROWS_WITH(io::load_checkpoint(path, checkpoint),
                      Contains(path.string()) && Contains("no entry modules/teacher") && Contains("model, ema"));
    io::Checkpoint other = run.checkpoint();
    other.generators.emplace_back("dropout", diffctl::make_generator(3));
    CHECK_THROWS_WITH(io::load_checkpoint(path, other), Contains("no entry generators/dropout"));
  }
  SECTION("a missing file") {
    Run run(5);
    io::Checkpoint checkpoint = run.checkpoint();
    CHECK_THROWS_WITH(io::load_checkpoint(dir.path() / "absent.pt", checkpoint),
                      Contains("absent.pt") && Contains("no such file"));
  }
  SECTION("a truncated file") {
    const std::string bytes = read_bytes(path);
    const fs::path truncated = dir.path() / "truncated.pt";
    write_bytes(truncated, bytes.substr(0, bytes.size() * 2 / 3));
    Run run(5);
    io::Checkpoint checkpoint = run.checkpoint();
    CHECK_THROWS_AS(io::load_checkpoint(truncated, checkpoint), std::invalid_argument);
    CHECK_THROWS_WITH(io::load_checkpoint(truncated, checkpoint),
                      Contains(truncated.string()) && Contains("SHA-256") && Contains("truncated or corrupt"));
  }
  SECTION("a changed byte, a bare archive, another file") {
    std::string bytes = read_bytes(path);
    const fs::path changed = dir.path() / "changed.pt";
    Run run(5);
    io::Checkpoint checkpoint = run.checkpoint();
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x04);
    write_bytes(changed, bytes);
    CHECK_THROWS_WITH(io::load_checkpoint(changed, checkpoint), Contains("SHA-256") && Contains("corrupt"));
    write_bytes(changed, bytes.substr(73));  // the archive alone, as before digests
    CHECK_THROWS_WITH(io::load_checkpoint(changed, checkpoint), Contains("bare LibTorch archive"));
    write_bytes(changed, "hi");
    CHECK_THROWS_WITH(io::load_checkpoint(changed, checkpoint), Contains("not a diffctl checkpoint"));
  }
  SECTION("bad names") {
    Run run(5);
    io::Checkpoint checkpoint = run.checkpoint();
    checkpoint.modules.emplace_back("model", run.ema.get());
    CHECK_THROWS_WITH(io::save_checkpoint(path, checkpoint), Contains("\"model\" appears twice"));
    checkpoint.modules.back().first = "the.ema";
    CHECK_THROWS_WITH(io::save_checkpoint(path, checkpoint), Contains("expected an identifier"));
  }
}

TEST_CASE("a failed save leaves the previous checkpoint whole", "[checkpoint]") {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.pt";
  Run original(1);
  original.train(3);
  io::save_checkpoint(path, original.checkpoint());
  const std::string saved = read_bytes(path);
  original.train(3);

  SECTION("the archive cannot be built") {
    Failing failing;
    io::Checkpoint checkpoint = original.checkpoint();
    checkpoint.modules.emplace_back("broken", failing.get());
    CHECK_THROWS_WITH(io::save_checkpoint(path, checkpoint), Contains("disk full"));
  }
  SECTION("the file cannot be written") {
    // A folder where the temporary file goes: opening it fails, even as root.
    fs::create_directories(path.string() + ".partial");
    CHECK_THROWS_WITH(io::save_checkpoint(path, original.checkpoint()),
                      Contains("could not write checkpoint") && Contains(path.string()));
  }
  CHECK(read_bytes(path) == saved);
  CHECK_FALSE(fs::exists(path.string() + ".partial"));
  Run resumed(100);
  io::Checkpoint checkpoint = resumed.checkpoint();
  CHECK(io::load_checkpoint(path, checkpoint) == 3);
}
