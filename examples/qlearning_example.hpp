#pragma once
// What the q-learning examples share: their flags, training with progress and
// checkpoints, the evaluation of the paper (reward and kNN KL, mean +- 95% CI over
// batches of generated samples) and the output files. Each example supplies its
// data, reward and picture.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

#include "cli.hpp"

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/algorithms/qlearning_eigen.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/io/png.hpp"
#include "diffctl/io/progress.hpp"
#include "diffctl/metrics/sample_quality.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/runtime.hpp"

namespace diffctl::examples {

struct QLearningFlags {
  int64_t episodes = 50000;
  double beta = 0.0;
  std::string sampler = "sde";
  std::string backend = "torch";  // torch (LibTorch) or eigen (the CPU fast path)
  double horizon = 5.0;
  double dt = 0.25;
  double temperature = 0.1;
  double lr = 1e-3;
  int64_t batch = 300;
  double density_floor = 1e-8;
  int64_t eval_batches = 100;
  int64_t eval_batch_size = 300;
  // float32 samples in 1-D coincide with data points now and then, which k = 1
  // cannot take (a zero distance); k = 2 looks past single coincidences.
  int64_t knn_k = 2;
  std::uint64_t seed = 0;
  std::optional<int> threads;
  std::string out;
  std::string init;
  std::string method_name = "train";  // the progress line's label
};

inline void add_qlearning_flags(CLI::App& app, QLearningFlags& f) {
  app.add_option("--episodes", f.episodes, "training episodes")->check(CLI::NonNegativeNumber);
  app.add_option("--beta", f.beta, "weight of the terminal reward (0: score matching)");
  app.add_option("--sampler", f.sampler, "simulator: sde (Euler-Maruyama), ode-euler, ddim")
      ->check(CLI::IsMember({"sde", "ode-euler", "ddim"}));
  app.add_option("--backend", f.backend,
                 "networks on torch (LibTorch) or eigen (the CPU fast path; sde and ode-euler samplers)")
      ->check(CLI::IsMember({"torch", "eigen"}));
  app.add_option("--horizon", f.horizon, "T of the OU forward process")->check(CLI::PositiveNumber);
  app.add_option("--dt", f.dt, "time step (must divide T)")->check(CLI::PositiveNumber);
  app.add_option("--temperature", f.temperature, "entropy temperature theta")->check(CLI::PositiveNumber);
  app.add_option("--lr", f.lr, "Adam learning rate of both networks")->check(CLI::PositiveNumber);
  app.add_option("--batch", f.batch, "trajectories per episode")->check(CLI::PositiveNumber);
  app.add_option("--density-floor", f.density_floor, "ratio estimator's lower bound eps")
      ->check(CLI::PositiveNumber);
  app.add_option("--eval-batches", f.eval_batches, "evaluation batches")->check(CLI::Range(2, 100000));
  app.add_option("--eval-batch-size", f.eval_batch_size, "samples per evaluation batch")
      ->check(CLI::Range(2, 1000000));
  app.add_option("--knn-k", f.knn_k, "neighbour order of the kNN KL estimate")->check(CLI::Range(1, 100));
  app.add_option("--seed", f.seed, "random seed");
  app.add_option("--threads", f.threads, "LibTorch intra-op threads (default: all cores)");
  app.add_option("--out", f.out, "output directory");
  app.add_option("--init", f.init, "start from this checkpoint (checkpoint.pt of an earlier run)");
}

namespace detail {

constexpr int64_t kWrittenSamples = 3000;  // in samples.csv and the picture

inline std::string csv_rows(const torch::Tensor& x) {
  std::ostringstream out;
  const torch::Tensor rows = x.to(torch::kCPU, torch::kDouble).contiguous();
  for (int64_t i = 0; i < rows.size(0); ++i)
    for (int64_t j = 0; j < rows.size(1); ++j)
      out << rows[i][j].item<double>() << (j + 1 < rows.size(1) ? ',' : '\n');
  return out.str();
}

}  // namespace detail

// Evaluates a trained model, whose samples draw(n) gives, as the paper does, and
// writes DIR/samples.csv, data.csv, metrics.json and samples.png.
template <class Draw, class Reward, class Picture>
int write_report(const QLearningFlags& f, Draw&& draw, const torch::Tensor& data,
                 const Reward& reward, const Picture& picture, double train_seconds) {
  const std::filesystem::path out(f.out);
  const auto quality = metrics::sample_quality(
      draw, [&](const torch::Tensor& y) { return reward(y, {}); }, data,
      {.batches = f.eval_batches, .batch_size = f.eval_batch_size, .knn = {.k = f.knn_k, .k_q = std::nullopt}});
  const torch::Tensor samples = draw(detail::kWrittenSamples);
  std::ostringstream json;
  json << "{\n  \"reward_mean\": " << quality.reward.mean << ",\n  \"reward_ci95\": "
       << quality.reward.ci95 << ",\n  \"kl_mean\": " << quality.kl.mean
       << ",\n  \"kl_ci95\": " << quality.kl.ci95 << ",\n  \"episodes\": " << f.episodes
       << ",\n  \"train_seconds\": " << train_seconds << ",\n  \"beta\": " << f.beta
       << ",\n  \"sampler\": \"" << f.sampler << "\",\n  \"dt\": " << f.dt
       << ",\n  \"knn_k\": " << f.knn_k << "\n}\n";
  io::write_text(out / "samples.csv", detail::csv_rows(samples));
  io::write_text(out / "data.csv", detail::csv_rows(data));
  io::write_text(out / "metrics.json", json.str());
  io::write_png(out / "samples.png", picture(samples, data));
  std::cout << "reward " << quality.reward.mean << " +- " << quality.reward.ci95 << ", KL "
            << quality.kl.mean << " +- " << quality.kl.ci95 << " nats, " << f.episodes
            << " episodes in " << train_seconds << " s; wrote " << out.string() << "/\n";
  return 0;
}

namespace detail {

template <class Simulator, class Backend, class Reward, class Picture>
int train_and_report(const QLearningFlags& f, const torch::Tensor& data, const Reward& reward,
                     const Picture& picture, at::Generator& generator) {
  using Schedule = sde::OrnsteinUhlenbeck;
  using Estimate = models::RatioScore<Schedule>;
  const Schedule schedule({.horizon = f.horizon});
  algorithms::QLearning<Schedule, Estimate, Reward, Simulator, Backend> learner(
      schedule, Estimate(schedule, data, {}, {.density_floor = f.density_floor}), data.size(1), 0,
      {.temperature = f.temperature, .beta = f.beta, .dt = f.dt, .batch = f.batch, .learning_rate = f.lr},
      reward);
  if (!f.init.empty()) learner.load(f.init);

  const std::filesystem::path out(f.out);
  const auto checkpoint = out / "checkpoint.pt";
  io::Progress progress(f.method_name, f.episodes);
  const int64_t save_every = std::max<int64_t>(1, f.episodes / 10);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t episode = 1; episode <= f.episodes; ++episode) {
    const auto stats = learner.train_episode(generator);
    if (episode % save_every == 0) learner.save(checkpoint);  // a crash loses <= a tenth
    std::ostringstream status;
    status << "loss " << stats.loss << "  reward " << stats.terminal_reward;
    progress.update(episode, status.str());
  }
  const double train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  learner.save(checkpoint);

  const Simulator solver;
  return write_report(
      f, [&](int64_t n) { return learner.sample(n, {}, generator, solver); }, data, reward, picture,
      train_seconds);
}

}  // namespace detail

// Trains on `data` with `reward` as the flags say and writes DIR/checkpoint.pt,
// samples.csv, data.csv, metrics.json and samples.png (drawn by `picture`).
template <class Reward, class Picture>
int run_qlearning(const QLearningFlags& f, const torch::Tensor& data, const Reward& reward,
                  const Picture& picture, at::Generator& generator) {
  using algorithms::EigenBackend, algorithms::TorchBackend;
  if (f.backend == "eigen") {
    require(f.sampler != "ddim", "--backend eigen: simulates with sde or ode-euler, not ", f.sampler);
    if (f.sampler == "ode-euler")
      return detail::train_and_report<sde::ProbabilityFlowEuler, EigenBackend<float>>(f, data, reward, picture, generator);
    return detail::train_and_report<sde::EulerMaruyama, EigenBackend<float>>(f, data, reward, picture, generator);
  }
  if (f.sampler == "ode-euler")
    return detail::train_and_report<sde::ProbabilityFlowEuler, TorchBackend>(f, data, reward, picture, generator);
  if (f.sampler == "ddim") return detail::train_and_report<sde::Ddim, TorchBackend>(f, data, reward, picture, generator);
  return detail::train_and_report<sde::EulerMaruyama, TorchBackend>(f, data, reward, picture, generator);
}

}  // namespace diffctl::examples
