#pragma once
// Connects the processes of a run through LibTorch's c10d: where this process
// stands (rank, world size, rendezvous) from the variables that launchers set
// (torchrun, Slurm's srun, Open MPI's and MPICH's mpirun), a store for the
// rendezvous (TCP at MASTER_ADDR:MASTER_PORT, or a file on a shared filesystem),
// and a process group: NCCL for CUDA tensors where LibTorch was built with it,
// Gloo otherwise. A world of one process needs no store and connects nothing.
//
// The c10d headers declare Gloo and NCCL only when USE_C10D_GLOO / USE_C10D_NCCL
// are defined, and include Gloo's and NCCL's own headers. diffctl's CMake package
// defines DIFFCTL_WITH_GLOO (and USE_C10D_GLOO) when Gloo is found (Debian's
// libgloo-dev), and DIFFCTL_WITH_NCCL (and
// USE_C10D_NCCL) when asked for NCCL (DIFFCTL_NCCL): a CUDA LibTorch from PyTorch
// defines USE_C10D_GLOO for its users without shipping Gloo's headers.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include <torch/torch.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DIFFCTL_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DIFFCTL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "diffctl/distributed/group.hpp"
#include "diffctl/error.hpp"

namespace diffctl::distributed {

// Where this process stands in its run.
struct Launch {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // among the run's processes on this machine: picks the GPU
  int local_world_size = 1;  // the run's processes on this machine: share its cores
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // DIFFCTL_STORE_FILE: rendezvous through this file (on a filesystem every
  // process sees) instead of TCP; it must not exist before the run.
  std::string store_file;
};

namespace detail {

using Environment = std::function<const char*(const char*)>;

inline std::optional<int> integer_variable(const Environment& env, const char* name) {
  const char* value = env(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  require(*end == '\0' && parsed >= 0 && parsed <= 1'000'000, "distributed: ", name,
          " must be a non-negative integer, found '", value, "'");
  return static_cast<int>(parsed);
}

}  // namespace detail

// Reads the launcher's variables: torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, then Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// SLURM_NTASKS_PER_NODE, Open MPI's OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE},
// MPICH's PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS (the first launcher
// whose world size is set wins); MASTER_ADDR, MASTER_PORT and
// DIFFCTL_STORE_FILE for the rendezvous. Nothing set: a world of one.
inline Launch launch_from_environment(const detail::Environment& env = [](const char* name) {
  return std::getenv(name);
}) {
  struct Names {
    const char *rank, *size, *local_rank, *local_size;
  };
  constexpr Names kLaunchers[] = {
      {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"}};
  Launch launch;
  for (const auto& names : kLaunchers) {
    const auto size = detail::integer_variable(env, names.size);
    if (!size) continue;
    const auto rank = detail::integer_variable(env, names.rank);
    require(rank.has_value(), "distributed: ", names.size, " is set but ", names.rank, " is not");
    require(*size >= 1, "distributed: ", names.size, " must be >= 1, found ", *size);
    require(*rank < *size, "distributed: ", names.rank, " = ", *rank, " is not below ", names.size, " = ", *size);
    launch.rank = *rank;
    launch.world_size = *size;
    launch.local_rank = detail::integer_variable(env, names.local_rank).value_or(*rank);
    // Without the launcher's count, assume every process is on this machine.
    launch.local_world_size = std::max(1, detail::integer_variable(env, names.local_size).value_or(*size));
    break;
  }
  if (const char* addr = env("MASTER_ADDR"); addr != nullptr && *addr != '\0') launch.master_addr = addr;
  if (const auto port = detail::integer_variable(env, "MASTER_PORT")) {
    require(*port >= 1 && *port <= 65535, "distributed: MASTER_PORT must lie in [1, 65535], found ", *port);
    launch.master_port = *port;
  }
  if (const char* file = env("DIFFCTL_STORE_FILE"); file != nullptr) launch.store_file = file;
  return launch;
}

struct ConnectOptions {
  // How long a collective or the rendezvous waits for the other processes before
  // it fails (a process that died is usually noticed at once, by its closed socket).
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
  // CUDA selects NCCL where LibTorch has it (see device_of below).
  torch::Device device = torch::kCPU;
};

namespace detail {

#if TORCH_VERSION_MAJOR >= 2
using Backend = c10d::Backend;
#else
using Backend = c10d::ProcessGroup;
#endif

// Collectives over a c10d process group; every failure becomes a distributed::Error
// naming the rank and the operation.
class C10dCollectives final : public Collectives {
 public:
  C10dCollectives(c10::intrusive_ptr<Backend> backend, int rank, int size)
      : backend_(std::move(backend)), rank_(rank), size_(size) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(torch::Tensor& tensor) override {
    std::vector<torch::Tensor> tensors{tensor};
    run("all_reduce", [&] { return backend_->allreduce(tensors); });
  }
  void all_gather(torch::Tensor& gathered, const torch::Tensor& local) override {
    std::vector<torch::Tensor> inputs{local};
    std::vector<std::vector<torch::Tensor>> outputs(1, gathered.chunk(size_));
    run("all_gather", [&] { return backend_->allgather(outputs, inputs); });
  }
  void broadcast(torch::Tensor& tensor, int root) override {
    std::vector<torch::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    run("broadcast", [&] { return backend_->broadcast(tensors, options); });
  }
  void barrier() override {
    run("barrier", [&] { return backend_->barrier(); });
  }

 private:
  template <class Start>
  void run(const char* operation, Start&& start) {
    try {
      start()->wait();
    } catch (const std::exception& e) {
      throw Error(diffctl::detail::concat("distributed: rank ", rank_, " of ", size_, ": ", operation,
                                          " failed; did another process of the run stop? (", e.what(), ")"));
    }
  }

  c10::intrusive_ptr<Backend> backend_;
  int rank_, size_;
};

}  // namespace detail

// The intra-op threads a process of the run takes by default: its share of this
// machine's cores (at least one).
inline int threads_per_process(const Launch& launch) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / launch.local_world_size);
}

// The device a rank computes on: its own GPU (cuda:local_rank) when `requested`
// is CUDA without an index, else `requested`.
inline torch::Device device_of(const Launch& launch, const torch::Device& requested) {
  if (requested.is_cuda() && !requested.has_index())
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  return requested;
}

// Whether this build can connect processes on `device`.
inline bool can_connect(const torch::Device& device) {
#ifdef DIFFCTL_WITH_NCCL
  if (device.is_cuda()) return true;
#endif
#ifdef DIFFCTL_WITH_GLOO
  return device.is_cpu();
#else
  (void)device;
  return false;
#endif
}

namespace detail {

// Fails before any rendezvous when this process cannot take part.
inline void require_joinable(const Launch& launch, const ConnectOptions& options) {
  require(launch.rank >= 0 && launch.rank < launch.world_size, "distributed: rank ", launch.rank,
          " outside a world of ", launch.world_size);
  require(can_connect(options.device), "distributed: this build cannot connect processes on ", options.device.str(),
          " (Gloo needs diffctl built with Gloo found; NCCL needs a CUDA LibTorch and DIFFCTL_NCCL)");
}

// The store through which the processes of `launch` meet: DIFFCTL_STORE_FILE's
// file, else the TCP store that rank 0 serves at MASTER_ADDR:MASTER_PORT.
inline c10::intrusive_ptr<c10d::Store> open_store(const Launch& launch, const ConnectOptions& options) {
  try {
    c10::intrusive_ptr<c10d::Store> store;
    if (!launch.store_file.empty()) {
      store = c10::make_intrusive<c10d::FileStore>(launch.store_file, launch.world_size);
    } else {
      c10d::TCPStoreOptions tcp;
      tcp.port = static_cast<std::uint16_t>(launch.master_port);
      tcp.isServer = launch.rank == 0;
      tcp.numWorkers = launch.world_size;
      tcp.timeout = options.timeout;
      store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, tcp);
    }
    store->setTimeout(options.timeout);
    return store;
  } catch (const std::exception& e) {
    throw Error(diffctl::detail::concat(
        "distributed: rank ", launch.rank, " of ", launch.world_size, ": rendezvous at ",
        launch.store_file.empty() ? launch.master_addr + ":" + std::to_string(launch.master_port) : launch.store_file,
        " failed (", e.what(), ")"));
  }
}

// The collectives of `launch`'s c10d process group over `store`: NCCL for CUDA
// where this build has it, else Gloo. Any world size, one included: connect()
// skips this for a world of one (a Group alone sends nothing), and a test joins
// one to run NCCL itself on a single GPU.
inline std::shared_ptr<Collectives> join(const Launch& launch, const c10::intrusive_ptr<c10d::Store>& store,
                                         const ConnectOptions& options) {
  require_joinable(launch, options);
  c10::intrusive_ptr<Backend> backend;
  try {
#ifdef DIFFCTL_WITH_NCCL
    if (options.device.is_cuda()) {
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = options.timeout;
      backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, launch.rank, launch.world_size, nccl);
    }
#endif
#ifdef DIFFCTL_WITH_GLOO
    if (!backend) {
      auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
      // A run on this machine alone talks over the loopback (rank 0 at a loopback
      // address over TCP, or a store file with every process local); across
      // machines each process is reached at the address its host name resolves to.
      const bool loopback_master = launch.master_addr == "127.0.0.1" || launch.master_addr == "localhost";
      const bool one_machine =
          loopback_master && (launch.store_file.empty() || launch.local_world_size == launch.world_size);
      gloo->devices.push_back(one_machine ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                          : c10d::ProcessGroupGloo::createDefaultDevice());
      backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, launch.rank, launch.world_size, gloo);
    }
#endif
  } catch (const std::exception& e) {
    throw Error(diffctl::detail::concat("distributed: rank ", launch.rank, " of ", launch.world_size,
                                        ": joining the process group failed (", e.what(), ")"));
  }
  return std::make_shared<C10dCollectives>(std::move(backend), launch.rank, launch.world_size);
}

}  // namespace detail

// The group of the run that `launch` describes; blocks until every process has
// joined (or the timeout passes). A world of one returns the lone Group at once.
inline Group connect(const Launch& launch, const ConnectOptions& options = {}) {
  if (launch.world_size == 1) return Group();
  detail::require_joinable(launch, options);
  return Group(detail::join(launch, detail::open_store(launch, options), options));
}

// The run's group as the environment describes it (a world of one when no
// launcher variables are set).
inline Group connect_from_environment(const ConnectOptions& options = {}) {
  return connect(launch_from_environment(), options);
}

}  // namespace diffctl::distributed
