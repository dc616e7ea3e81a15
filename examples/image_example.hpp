#pragma once
// What the image examples share: the common flags (device, threads, seed, output,
// preset, data), loading the data set, the model configurations written beside
// the weights (so that `sample` and later stages rebuild the same networks), and
// sampling with a solver chosen by name.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include "cli.hpp"
#include "json_file.hpp"

#include "diffctl/data/cifar10.hpp"
#include "diffctl/data/idx.hpp"
#include "diffctl/distributed/c10d.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/models/resnet.hpp"
#include "diffctl/models/state_dict.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/solvers.hpp"

#if defined(__GLIBC__)
#include <dlfcn.h>
#endif
#include <ATen/Version.h>
#include <torch/version.h>

namespace diffctl::examples {

struct ImageFlags {
  std::string device = "auto";
  std::optional<int> threads;
  std::uint64_t seed = 0;
  std::string out;
  std::string preset = "small";
  std::string dataset = "fashion-mnist";
  std::string data_dir;  // default: the Debian package's Fashion-MNIST
};

inline void add_image_flags(CLI::App& app, ImageFlags& f) {
  app.add_option("--device", f.device, "cpu, cuda or auto (cuda when available)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--threads", f.threads, "LibTorch intra-op threads (default: all cores)")->check(CLI::PositiveNumber);
  app.add_option("--seed", f.seed, "random seed");
  app.add_option("--out", f.out, "output directory");
  app.add_option("--preset", f.preset, "small (a 2-core CPU) or paper (a GPU, minimal-diffusion's sizes)")
      ->check(CLI::IsMember({"small", "paper"}));
  app.add_option("--dataset", f.dataset, "fashion-mnist or cifar10 (binary version)")
      ->check(CLI::IsMember({"fashion-mnist", "cifar10"}));
  app.add_option("--data", f.data_dir, "data directory (default: /usr/share/datasets/fashion-mnist)");
}

inline torch::Device resolve_device(const std::string& name) {
  if (name == "cuda") {
    require(torch::cuda::is_available(), "--device cuda: this LibTorch has no CUDA device available");
    return torch::kCUDA;
  }
  if (name == "auto" && torch::cuda::is_available()) return torch::kCUDA;
  return torch::kCPU;
}

// Sets up the process from the common flags and returns the run's generator (CPU,
// so that a seed gives the same noise whatever the device).
inline at::Generator start_run(const ImageFlags& flags) {
  keep_freed_memory();
  configure_threads(flags.threads);
  return seed_everything(flags.seed);
}

// Where a result was computed: the CPU, the vector kernels LibTorch and OpenBLAS
// chose for it, the threads and LibTorch's version. A seed gives the same weights
// and figures only where these agree: kernels for another instruction set or
// thread count sum in another order, and training carries those last bits into
// other weights (examples/RESULTS.md, "Four more seeds on another machine").
// Recorded beside the weights (config.json) and the figures (metrics.json).
inline nlohmann::json machine_json() {
  // The first processor's name, family and model (a virtual machine may show only
  // the vendor's name: the family and model tell its generation).
  std::string name = "unknown", family, model;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line) && !line.empty();) {
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon + 2 > line.size()) continue;
    const std::string key = line.substr(0, line.find_first_of(" \t")), value = line.substr(colon + 2);
    if (line.rfind("model name", 0) == 0) name = value;
    else if (line.rfind("cpu family", 0) == 0) family = value;
    else if (key == "model") model = value;
  }
  const std::string cpu = family.empty() ? name : name + " (family " + family + ", model " + model + ")";
  // at::show_config() names the kernels LibTorch dispatches to ("CPU capability usage: AVX2").
  std::string kernels = "unknown";
  const std::string config = at::show_config(), key = "CPU capability usage: ";
  if (const auto found = config.find(key); found != std::string::npos)
    kernels = config.substr(found + key.size(), config.find('\n', found) - found - key.size());
  std::string blas_core = "none";
#if defined(__GLIBC__)
  using CoreName = char* (*)();
  if (const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename")))
    blas_core = core_name();
#endif
  return {{"cpu", cpu},
          {"libtorch_kernels", kernels},
          {"openblas_kernels", blas_core},
          {"threads", torch::get_num_threads()},
          {"libtorch", TORCH_VERSION}};
}

// A training run of one or more processes.
struct DistributedRun {
  at::Generator generator;  // the same on every rank
  torch::Device device;     // this rank's
  distributed::Group group;
};

// start_run for the examples that train data parallel: the run's processes are
// several when a launcher started them (scripts/launch, torchrun, srun, mpirun:
// distributed/c10d.hpp reads their variables), else this one alone, which then
// runs exactly as start_run and resolve_device set it up. Each rank takes its share
// of the machine's cores (unless --threads) and its own GPU. The run's generator is
// the same on every rank (each draws a global batch's noise and keeps its rows);
// LibTorch's default generators, which dropout draws from, get a seed of their own
// on ranks above 0. A resumed run restores rank 0's default generators on every
// rank, so only dropout masks differ from the uninterrupted run.
inline DistributedRun start_distributed_run(const ImageFlags& flags) {
  const distributed::Launch launch = distributed::launch_from_environment();
  keep_freed_memory();
  configure_threads(flags.threads ? flags.threads : distributed::threads_per_process(launch));
  at::Generator generator = seed_everything(flags.seed);
  if (launch.rank > 0)
    torch::manual_seed(flags.seed ^ (0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(launch.rank)));
  const torch::Device device = distributed::device_of(launch, resolve_device(flags.device));
  distributed::Group group = distributed::connect(launch, {.device = device});
  if (!group.alone())
    std::cerr << "run of " << group.size() << " processes: rank " << group.rank() << " on " << device.str() << "\n";
  return {generator, device, std::move(group)};
}

// The generators a checkpoint must restore for a resumed run to continue exactly:
// the run's own, and LibTorch's default ones, which layers such as dropout draw from.
inline std::vector<std::pair<std::string, at::Generator>> run_generators(const at::Generator& generator,
                                                                         const torch::Device& device) {
  std::vector<std::pair<std::string, at::Generator>> generators{
      {"run", generator}, {"torch_cpu", at::globalContext().defaultGenerator(torch::kCPU)}};
  if (device.is_cuda()) generators.emplace_back("torch_cuda", at::globalContext().defaultGenerator(device));
  return generators;
}

inline data::ImageDataset load_dataset(const ImageFlags& flags, data::Split split) {
  if (flags.dataset == "cifar10") {
    require(!flags.data_dir.empty(), "--dataset cifar10 needs --data DIR (the directory of data_batch_*.bin)");
    return data::load_cifar10(flags.data_dir, split);
  }
  return data::load_fashion_mnist(flags.data_dir.empty() ? data::kFashionMnistDir : flags.data_dir, split);
}

// --- configurations written beside the weights -------------------------------

inline nlohmann::json to_json(const models::UNetOptions& o) {
  return {{"image_size", o.image_size},
          {"in_channels", o.in_channels},
          {"base_width", o.base_width},
          {"out_channels", o.out_channels},
          {"channel_mult", o.channel_mult},
          {"blocks_per_level", o.blocks_per_level},
          {"attention_resolutions", o.attention_resolutions},
          {"dropout", o.dropout},
          {"num_classes", o.num_classes},
          {"num_heads", o.num_heads},
          {"norm_groups", o.norm_groups},
          {"head_channels", o.head_channels},
          {"time_embed_factor", o.time_embed_factor},
          {"scale_shift_norm", o.scale_shift_norm},
          {"resblock_updown", o.resblock_updown},
          {"conv_resample", o.conv_resample},
          {"new_attention_order", o.new_attention_order}};
}

inline models::UNetOptions unet_options_from_json(const nlohmann::json& j) {
  models::UNetOptions o;
  o.image_size = j.at("image_size");
  o.in_channels = j.at("in_channels");
  o.base_width = j.at("base_width");
  o.out_channels = j.at("out_channels");
  o.channel_mult = j.at("channel_mult").get<std::vector<int>>();
  o.blocks_per_level = j.at("blocks_per_level");
  o.attention_resolutions = j.at("attention_resolutions").get<std::vector<int>>();
  o.dropout = j.at("dropout");
  o.num_classes = j.at("num_classes");
  o.num_heads = j.at("num_heads");
  o.norm_groups = j.at("norm_groups");
  o.head_channels = j.at("head_channels");
  o.time_embed_factor = j.at("time_embed_factor");
  o.scale_shift_norm = j.at("scale_shift_norm");
  o.resblock_updown = j.at("resblock_updown");
  o.conv_resample = j.at("conv_resample");
  o.new_attention_order = j.at("new_attention_order");
  return o;
}

inline nlohmann::json to_json(const models::ResNet18Options& o) {
  return {{"in_channels", o.in_channels}, {"num_classes", o.num_classes}, {"width", o.width}};
}

inline models::ResNet18Options resnet_options_from_json(const nlohmann::json& j) {
  models::ResNet18Options o;
  o.in_channels = j.at("in_channels");
  o.num_classes = j.at("num_classes");
  o.width = j.at("width");
  return o;
}

// Reading options for the weights file `file` of a run whose config.json is
// `config`: its SHA-256 as recorded there when it was written, so a corrupt or
// replaced file is refused (runs of earlier versions record none and load
// unchecked).
inline models::ReadStateDictOptions recorded_weights(const nlohmann::json& config, const std::string& file) {
  models::ReadStateDictOptions options;
  if (config.contains("sha256")) options.sha256 = config.at("sha256").value(file, std::string());
  return options;
}

// The ResNet18 a train_classifier run wrote into `dir` (config.json and
// classifier.pt), on `device`, in evaluation mode; it must take `image_size` pixels.
inline models::ResNet18 load_classifier(const std::filesystem::path& dir, int64_t image_size,
                                        const torch::Device& device) {
  const nlohmann::json config = read_json(dir / "config.json");
  require(config.at("image_size") == image_size, (dir / "config.json").string(), ": the classifier takes ",
          config.at("image_size").dump(), "-pixel images, these have ", image_size);
  models::ResNet18 classifier(resnet_options_from_json(config.at("resnet")));
  models::load_weights(*classifier, dir / "classifier.pt", recorded_weights(config, "classifier.pt"));
  classifier->to(device);
  classifier->eval();
  return classifier;
}

// Runs `body(schedule)` with the VP schedule named `name` (what config.json records).
template <class Body>
decltype(auto) with_schedule(const std::string& name, Body&& body) {
  if (name == sde::VpCosine::name) return body(sde::VpCosine{});
  if (name == sde::VpLinear::name) return body(sde::VpLinear{});
  throw std::invalid_argument("unknown schedule \"" + name + "\": expected vp-cosine or vp-linear");
}

// Runs `body(solver)` with the solver named `name`.
template <class Body>
decltype(auto) with_solver(const std::string& name, Body&& body) {
  // Images lie in [-1, 1]: the samplers that predict x0 clamp it there.
  if (name == "ddpm") return body(sde::Ddpm({.clip_x0 = 1.0}));
  if (name == "ddim") return body(sde::Ddim({.clip_x0 = 1.0}));
  if (name == "euler-maruyama") return body(sde::EulerMaruyama{});
  if (name == "pf-euler") return body(sde::ProbabilityFlowEuler{});
  if (name == "heun") return body(sde::Heun{});
  throw std::invalid_argument("unknown sampler \"" + name + "\"");
}

inline const std::vector<std::string> kSamplerNames{"ddpm", "ddim", "euler-maruyama", "pf-euler", "heun"};

// Samples images [N, C, H, W] with labels z (undefined: unconditional) from a
// score model, in chunks of `chunk` so that memory stays bounded.
template <NoiseSchedule Schedule, class Score>
torch::Tensor sample_images(const Schedule& schedule, const Score& score, const std::string& sampler, int64_t steps,
                            std::vector<int64_t> shape, const torch::Tensor& z, const torch::Device& device,
                            at::Generator& generator, int64_t chunk = 100) {
  torch::NoGradGuard no_grad;
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), static_cast<std::size_t>(steps));
  const int64_t n = shape[0];
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    shape[0] = count;
    sde::IntegrateOptions options;
    options.generator = generator;
    const torch::Tensor x_init = sde::sample_prior(schedule, shape, generator, torch::TensorOptions(device));
    const torch::Tensor labels = z.defined() ? z.narrow(0, begin, count).to(device) : torch::Tensor();
    parts.push_back(with_solver(sampler, [&](const auto& solver) {
      return sde::integrate(schedule, score, solver, grid, x_init, labels, options).final_state;
    }));
  }
  return torch::cat(parts).clamp(-1.0, 1.0);
}

// Runs main's body, turning an exception into one line on stderr and exit code 1
// (LibTorch's errors carry a backtrace and line breaks: both are dropped).
template <class Body>
int run_main(const char* program, Body&& body) {
  const auto report = [&](std::string message) {
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::cerr << program << ": " << message << "\n";
    return 1;
  };
  try {
    return body();
  } catch (const c10::Error& error) {
    return report(error.what_without_backtrace());
  } catch (const std::exception& error) {
    return report(error.what());
  }
}

}  // namespace diffctl::examples
