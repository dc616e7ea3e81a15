// Runs of several processes: the launchers' variables, shards, and data-parallel
// training over Gloo on localhost, against one process on the same global batch.

#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "diffctl/algorithms/denoising_pretraining.hpp"
#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/distributed/c10d.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/schedules.hpp"
#include "support/processes.hpp"
#include "support/ranks.hpp"
#include "support/temp_dir.hpp"

namespace {

using namespace diffctl;
using Catch::Matchers::Contains;
using diffctl::testing::ChildProcess;
using diffctl::testing::TempDir;
namespace fs = std::filesystem;

distributed::Launch launch_with(const std::map<std::string, std::string>& variables) {
  return distributed::launch_from_environment([&](const char* name) -> const char* {
    const auto it = variables.find(name);
    return it == variables.end() ? nullptr : it->second.c_str();
  });
}

}  // namespace

TEST_CASE("a launcher's variables give the rank and world size and the rendezvous", "[distributed]") {
  const auto alone = launch_with({});
  CHECK(alone.rank == 0);
  CHECK(alone.world_size == 1);
  CHECK(alone.master_addr == "127.0.0.1");

  const auto torchrun = launch_with(
      {{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29400"}});
  CHECK(torchrun.rank == 3);
  CHECK(torchrun.world_size == 8);
  CHECK(torchrun.local_rank == 1);
  CHECK(torchrun.local_world_size == 8);  // not given: all on this machine
  CHECK(torchrun.master_addr == "node7");
  CHECK(torchrun.master_port == 29400);

  const auto slurm = launch_with(
      {{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}, {"SLURM_LOCALID", "2"}, {"SLURM_NTASKS_PER_NODE", "3"}});
  CHECK(slurm.rank == 5);
  CHECK(slurm.world_size == 6);
  CHECK(slurm.local_rank == 2);
  CHECK(slurm.local_world_size == 3);
  CHECK(distributed::device_of(slurm, torch::kCUDA) == torch::Device(torch::kCUDA, 2));
  CHECK(distributed::device_of(slurm, torch::kCPU) == torch::Device(torch::kCPU));
  const auto mpi = launch_with({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
  CHECK(mpi.rank == 1);
  CHECK(mpi.local_rank == 1);  // no local rank given: the rank
  // torchrun's names win over a Slurm allocation's around it.
  CHECK(launch_with({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "9"}}).world_size ==
        2);
  CHECK(launch_with({{"DIFFCTL_STORE_FILE", "/shared/run.store"}}).store_file == "/shared/run.store");

  CHECK_THROWS_WITH(launch_with({{"RANK", "2"}, {"WORLD_SIZE", "2"}}),
                    Contains("RANK = 2 is not below WORLD_SIZE = 2"));
  CHECK_THROWS_WITH(launch_with({{"WORLD_SIZE", "2"}}), Contains("WORLD_SIZE is set but RANK is not"));
  CHECK_THROWS_WITH(launch_with({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), Contains("RANK must be a non-negative integer"));
  CHECK_THROWS_WITH(launch_with({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), Contains("WORLD_SIZE must be >= 1"));
  CHECK_THROWS_WITH(launch_with({{"MASTER_PORT", "70000"}}), Contains("MASTER_PORT must lie in [1, 65535]"));
}

namespace {
distributed::Launch two_ranks_but(int rank) {
  distributed::Launch launch;
  launch.world_size = 2;
  launch.rank = rank;
  return launch;
}
}  // namespace

TEST_CASE("shards split a batch in rank order with the first ones a row longer", "[distributed]") {
  const std::vector<std::pair<int64_t, int64_t>> five_in_three{{0, 2}, {2, 4}, {4, 5}};
  for (int r = 0; r < 3; ++r) {
    const auto s = distributed::shard_of(r, 3, 5);
    CHECK(std::pair(s.begin, s.end) == five_in_three[r]);
  }
  CHECK(distributed::shard_of(1, 2, 1).size() == 0);
  const distributed::Group alone;
  CHECK(alone.shard(7).begin == 0);
  CHECK(alone.shard(7).end == 7);
  const torch::Tensor x = torch::arange(6);
  CHECK(alone.local_rows(x).data_ptr() == x.data_ptr());  // alone: the batch itself, no copy
  CHECK(torch::equal(alone.all_gather_rows(x), x));
  CHECK_THROWS_WITH(distributed::shard_of(2, 2, 4), Contains("no shard 2 of 2"));
  CHECK_THROWS_WITH(distributed::connect(two_ranks_but(2)), Contains("rank 2 outside a world of 2"));
}

namespace {

// A small UNet in double precision, without dropout (whose masks each process draws
// for its own rows), so that the one-process run is the reference to 1e-10.
models::UNet small_unet() {
  models::UNetOptions options = models::UNetOptions::small(8, 1, 3);
  options.base_width = 8;
  options.channel_mult = {1, 2};
  options.blocks_per_level = 1;
  options.attention_resolutions = {};
  options.head_channels = 8;
  options.norm_groups = 4;
  options.dropout = 0.0;
  models::UNet net(options);
  net->to(torch::kDouble);
  return net;
}

constexpr int64_t kGlobalBatch = 5;  // shards of 3 and 2 rows on two processes
constexpr int kSteps = 4;

// Trains on fixed global batches in `group`; returns the model's and the moving
// average's parameters after the steps, then the losses, flattened.
torch::Tensor train_denoiser(const distributed::Group& group) {
  torch::manual_seed(100 + group.rank());  // each process initialises its own way; rank 0's wins
  models::UNet model = small_unet(), ema = small_unet();
  algorithms::DenoisingTrainer<sde::VpCosine, models::UNet> trainer(sde::VpCosine{}, model, ema,
                                                                    {.learning_rate = 1e-2}, group);
  auto data = make_generator(11), noise = make_generator(12);
  std::vector<torch::Tensor> out;
  for (int step = 0; step < kSteps; ++step) {
    const torch::Tensor x0 = torch::rand({kGlobalBatch, 1, 8, 8}, data, torch::kDouble) * 2 - 1;
    const torch::Tensor labels = torch::randint(3, {kGlobalBatch}, data, torch::kLong);
    out.push_back(trainer.step(x0, labels, noise).loss.reshape(1));
  }
  for (const auto& p : model->parameters()) out.insert(out.begin(), p.detach().reshape(-1));
  for (const auto& p : ema->parameters()) out.insert(out.begin(), p.detach().reshape(-1));
  return torch::cat(out);
}

}  // namespace

// One rank of the two-process training below (hidden from the suite).
TEST_CASE("data-parallel denoising rank", "[.data-parallel-denoising]") { testing::save_rank_result(train_denoiser); }

TEST_CASE("two processes train a UNet as one process does on the same global batch", "[distributed][gloo]") {
  // Every rank holds the same model after every step (rank 0's initialisation, the
  // same summed gradient), the model one process trains on the whole batch from
  // rank 0's start, up to the order of the floating-point sums.
  TempDir dir;
  const auto run = testing::run_two_and_one("[.data-parallel-denoising]", dir.path(), train_denoiser);
  const double difference = run.largest_relative_difference(1e-6);
  INFO("largest relative difference from one process: " << difference);
  CHECK(difference < 1e-9);
  CHECK((run.alone.narrow(0, run.alone.size(0) - kSteps, kSteps) > 0).all().item<bool>());  // the losses were written
}

namespace {

// -|y - 2|^2: a reward that tilts the samples.
struct NearTwo {
  torch::Tensor operator()(const torch::Tensor& y, const torch::Tensor&) const { return -(y - 2.0).square().sum(1); }
};

// 20 episodes of conditional q-learning (2-D, two classes, 25 trajectories: shards
// of 13 and 12) in double precision in `group`; returns the episodes' statistics
// and the networks' parameters, flattened.
torch::Tensor train_qlearning(const distributed::Group& group) {
  using Schedule = sde::OrnsteinUhlenbeck;
  const Schedule schedule({.horizon = 1.0});
  auto data_generator = make_generator(4);
  const torch::Tensor data = torch::randn({100, 2}, data_generator, torch::kDouble);
  const torch::Tensor labels = torch::randint(2, {100}, data_generator, torch::kLong);
  torch::manual_seed(200 + group.rank());  // rank 0's initialisation wins
  algorithms::QLearning<Schedule, models::RatioScore<Schedule>, NearTwo> learner(
      schedule, models::RatioScore<Schedule>(schedule, data, labels), 2, 2,
      {.temperature = 0.1,
       .beta = 1.0,
       .dt = 0.1,
       .batch = 25,
       .learning_rate = 0.01,
       .dtype = torch::kDouble,
       .group = group});
  auto generator = make_generator(5);
  std::vector<torch::Tensor> out;
  for (int episode = 0; episode < 20; ++episode) {
    const auto stats = learner.train_episode(generator);
    out.push_back(torch::tensor({stats.loss, stats.terminal_reward, stats.score_gap}, torch::kDouble));
  }
  const auto [policy, value] = learner.backend().networks();
  for (const auto& network : {policy, value})
    for (const auto& p : network->parameters()) out.push_back(p.detach().reshape(-1));
  return torch::cat(out);
}

}  // namespace

// One rank of the two-process q-learning run below (hidden from the suite).
TEST_CASE("data-parallel q-learning rank", "[.data-parallel-qlearning]") { testing::save_rank_result(train_qlearning); }

TEST_CASE("two processes run q-learning episodes as one process does", "[distributed][gloo]") {
  TempDir dir;
  const auto run = testing::run_two_and_one("[.data-parallel-qlearning]", dir.path(), train_qlearning);
  const double difference = run.largest_relative_difference(1e-6);
  INFO("largest relative difference from one process: " << difference);
  CHECK(difference < 1e-9);
}

namespace {

// 6 iterations of DDPO (is_dpok: DPOK) fine-tuning a conditional 2-D MLP policy in
// double precision, 25 chains (shards of 13 and 12) on DDPM's steps with the
// forward variance (noisy to the end) and x0 clipped (not affine, so step by step,
// as for the UNet), in `group`; returns the iterations' statistics and the
// networks' parameters.
torch::Tensor fine_tune(const distributed::Group& group, bool is_dpok) {
  using Schedule = sde::VpLinear;
  torch::manual_seed(7);
  models::TimeStateMlp network(models::TimeStateMlpOptions{.state_dim = 2, .out_dim = 2, .classes = 2, .hidden = 16});
  network->to(torch::kDouble);
  const algorithms::PolicyScore pretrained(network);
  torch::manual_seed(300 + group.rank());  // DPOK's value network: rank 0's wins
  const auto shape = algorithms::chain_shape(network);
  const sde::Ddpm solver({.variance = sde::DdpmVariance::forward, .clip_x0 = 3.0});
  auto generator = make_generator(9);
  std::vector<torch::Tensor> out;
  const auto record = [&](auto& algorithm) {
    for (int iteration = 0; iteration < 6; ++iteration) {
      const auto stats = algorithm.train_iteration(generator);
      out.push_back(torch::tensor({stats.reward, stats.kl, stats.loss, stats.clip_fraction}, torch::kDouble));
    }
    for (const auto& p : algorithm.policy().network()->parameters()) out.push_back(p.detach().reshape(-1));
  };
  if (is_dpok) {
    algorithms::Dpok<Schedule, algorithms::PolicyScore, NearTwo, sde::Ddpm> dpok(Schedule{}, pretrained, NearTwo{},
                                                                                 shape,
                                                                                 {.dt = 0.1,
                                                                                  .batch = 25,
                                                                                  .learning_rate = 0.01,
                                                                                  .reward_weight = 1.0,
                                                                                  .kl_weight = 0.1,
                                                                                  .value_hidden = 8,
                                                                                  .group = group},
                                                                                 solver);
    record(dpok);
    for (const auto& p : dpok.value()->parameters()) out.push_back(p.detach().reshape(-1));
  } else {
    algorithms::Ddpo<Schedule, algorithms::PolicyScore, NearTwo, sde::Ddpm> ddpo(
        Schedule{}, pretrained, NearTwo{}, shape,
        {.dt = 0.1, .batch = 25, .learning_rate = 0.01, .inner_epochs = 2, .group = group}, solver);
    record(ddpo);
  }
  return torch::cat(out);
}

}  // namespace

// One rank of the two-process DDPO and DPOK runs below (hidden from the suite).
TEST_CASE("data-parallel fine-tuning rank", "[.data-parallel-fine-tuning]") {
  testing::save_rank_result(
      [](const distributed::Group& group) { return fine_tune(group, std::getenv("DIFFCTL_TEST_DPOK") != nullptr); });
}

TEST_CASE("two processes fine-tune by DDPO and DPOK as one process does", "[distributed][gloo]") {
  for (const bool is_dpok : {false, true}) {
    INFO((is_dpok ? "DPOK" : "DDPO"));
    TempDir dir;
    const auto run = testing::run_two_and_one(
        "[.data-parallel-fine-tuning]", dir.path(),
        [&](const distributed::Group& group) { return fine_tune(group, is_dpok); },
        is_dpok ? std::vector<std::string>{"DIFFCTL_TEST_DPOK=1"} : std::vector<std::string>{});
    const double difference = run.largest_relative_difference(1e-6);
    INFO("largest relative difference from one process: " << difference);
    CHECK(difference < 1e-9);
  }
}

// One rank of the TCP run below (hidden from the suite): a sum and a gather of
// uneven rows, checked on the rank (a failed check is its exit status).
TEST_CASE("data-parallel TCP rank", "[.data-parallel-tcp]") {
  const distributed::Group group = distributed::connect_from_environment({.timeout = std::chrono::seconds(60)});
  REQUIRE(group.size() == 2);
  REQUIRE(group.all_reduce_sum(torch::full({3}, double(group.rank() + 1))).equal(torch::full({3}, 3.0)));
  const torch::Tensor rows = torch::full({group.rank() + 1, 2}, int64_t(group.rank()));  // 1 row, then 2
  REQUIRE(group.all_gather_rows(rows).equal(torch::tensor({{0, 0}, {1, 1}, {1, 1}}, torch::kLong)));
}

TEST_CASE("two processes meet through TCP at MASTER_ADDR and MASTER_PORT as torchrun starts them",
          "[distributed][gloo]") {
  // A free port below the ephemeral range (32768 and up on Linux), from which the
  // connections of other tests running beside this one take theirs.
  int port = 0;
  for (int candidate = 20000 + ::getpid() % 5000; port == 0 && candidate < 30000; candidate += 7) {
    const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(candidate));
    if (::bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) port = candidate;
    ::close(probe);
  }
  REQUIRE(port != 0);
  TempDir dir;
  const std::string failed =
      testing::run_ranks("[.data-parallel-tcp]", 2, dir.path(), {},
                         {"MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)}, std::chrono::minutes(2));
  INFO("port " << port << "\n" << failed);
  CHECK(failed.empty());
}

namespace {

// NCCL through the same Group as Gloo: a sum, a gather of uneven rows, a
// broadcast, a gradient sum and a barrier, on CUDA tensors of this rank's GPU.
void check_group_on_cuda(const distributed::Group& group, const torch::Device& device) {
  const int n = group.size(), r = group.rank();
  const auto on = torch::TensorOptions().device(device);
  const torch::Tensor sum = group.all_reduce_sum(torch::full({3}, double(r + 1), on.dtype(torch::kDouble)));
  CHECK(sum.device() == device);
  CHECK(sum.cpu().equal(torch::full({3}, n * (n + 1) / 2.0, torch::kDouble)));
  const torch::Tensor rows = group.all_gather_rows(torch::full({r + 1, 2}, float(r), on));  // 1 row, 2 rows, ...
  torch::Tensor expected = torch::empty({0, 2});
  for (int k = 0; k < n; ++k) expected = torch::cat({expected, torch::full({k + 1, 2}, float(k))});
  CHECK(rows.cpu().equal(expected));
  torch::Tensor root = torch::full({4}, float(r == 0 ? 7 : -1), on);
  group.broadcast(root);
  CHECK(root.cpu().equal(torch::full({4}, 7.0f)));
  torch::Tensor weight = torch::zeros({5}, on).requires_grad_();
  (weight * float(r + 1)).sum().backward();
  group.all_reduce_gradients({weight});
  CHECK(weight.grad().cpu().equal(torch::full({5}, n * (n + 1) / 2.0f)));
  group.barrier();
}

}  // namespace

TEST_CASE("NCCL joins a world of one on a GPU and runs every collective on CUDA tensors", "[distributed][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("CUDA is not available: the CUDA path was not exercised");
    return;
  }
  if (!distributed::can_connect(torch::kCUDA)) {
    WARN("NCCL is not built in (DIFFCTL_NCCL=OFF): the NCCL path was not exercised");
    return;
  }
  // A Group of one sends nothing, so this drives the process group's collectives
  // themselves, as a Group of several does. In a world of one a sum and a
  // broadcast leave their tensor as it was, so those show only that NCCL takes
  // them on CUDA tensors; the gather must fill a buffer of zeros.
  TempDir dir;
  distributed::Launch alone;
  alone.store_file = (dir / "store").string();
  const distributed::ConnectOptions options{.timeout = std::chrono::seconds(60), .device = torch::kCUDA};
  const auto nccl = distributed::detail::join(alone, distributed::detail::open_store(alone, options), options);
  REQUIRE(nccl->size() == 1);
  const auto on_gpu = torch::TensorOptions().device(torch::kCUDA, 0);
  torch::Tensor sum = torch::arange(6, on_gpu.dtype(torch::kDouble));
  nccl->all_reduce_sum(sum);
  CHECK(sum.cpu().equal(torch::arange(6, torch::kDouble)));
  torch::Tensor gathered = torch::zeros({3, 2}, on_gpu);
  nccl->all_gather(gathered, torch::ones({3, 2}, on_gpu));
  CHECK(gathered.cpu().equal(torch::ones({3, 2})));
  torch::Tensor root = torch::full({4}, 7.0f, on_gpu);
  nccl->broadcast(root, 0);
  CHECK(root.cpu().equal(torch::full({4}, 7.0f)));
  nccl->barrier();
}

// One rank of the NCCL run below (hidden from the suite), on its own GPU.
TEST_CASE("data-parallel NCCL rank", "[.data-parallel-nccl]") {
  const auto launch = distributed::launch_from_environment();
  const distributed::Group group =
      distributed::connect(launch, {.timeout = std::chrono::seconds(60), .device = torch::kCUDA});
  REQUIRE(group.size() == 2);
  check_group_on_cuda(group, distributed::device_of(launch, torch::kCUDA));
}

TEST_CASE("two processes on two GPUs run every collective over NCCL", "[distributed][cuda]") {
  // NCCL refuses two ranks on one GPU, so this needs two.
  if (torch::cuda::device_count() < 2 || !distributed::can_connect(torch::kCUDA)) {
    WARN("fewer than two GPUs, or NCCL not built in: the two-process NCCL path was not exercised");
    return;
  }
  TempDir dir;
  const std::string failed =
      testing::run_ranks("[.data-parallel-nccl]", 2, dir.path(), dir / "store", {}, std::chrono::minutes(2));
  INFO(failed);
  CHECK(failed.empty());
}

// Rank 1 of the run below dies after the first collective (hidden from the suite).
TEST_CASE("data-parallel rank that dies", "[.data-parallel-dies]") {
  torch::set_num_threads(1);
  try {
    const distributed::Group group = distributed::connect_from_environment({.timeout = std::chrono::seconds(60)});
    group.all_reduce_sum(torch::ones({4}));
    if (group.rank() == 1) std::_Exit(9);
    for (int step = 0; step < 100; ++step) group.all_reduce_sum(torch::ones({4}));
  } catch (const distributed::Error& e) {
    std::cerr << e.what() << "\n";
    std::_Exit(7);
  }
}

TEST_CASE("a process that dies ends the others with a clear error and no hang", "[distributed][gloo]") {
  TempDir dir;
  ChildProcess rank0("[.data-parallel-dies]", testing::rank_environment(0, 2, dir / "store"), dir / "rank0.err");
  ChildProcess rank1("[.data-parallel-dies]", testing::rank_environment(1, 2, dir / "store"), dir / "rank1.err");
  const auto start = std::chrono::steady_clock::now();
  const auto died = rank1.wait(std::chrono::minutes(2));
  REQUIRE(died.has_value());
  CHECK(WEXITSTATUS(*died) == 9);
  // Well within the 60 s collective timeout: the closed connection is noticed.
  const auto status = rank0.wait(std::chrono::seconds(50));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string message = testing::read_bytes(dir / "rank0.err");
  INFO("rank 0 after " << seconds << " s: " << message);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 7);
  CHECK_THAT(message, Contains("distributed: rank 0 of 2: all_reduce failed; did another process of the run stop?"));
}
