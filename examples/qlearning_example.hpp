#pragma once
// What the q-learning examples share: their flags, training with progress and
// checkpoints, the evaluation of the paper (reward and kNN KL, mean +- 95% CI over
// batches of generated samples) and the output files. Each example supplies its
// data, reward and picture.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "json_file.hpp"

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/callbacks.hpp"
#include "diffctl/algorithms/qlearning_eigen.hpp"
#include "diffctl/distributed/c10d.hpp"
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
  std::string backend = "eigen";  // eigen (the CPU fast path) or torch (LibTorch)
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
  std::string kl_reference = "fresh";  // fresh: new data for every batch; train: the training set
  bool exact_score = false;            // no training: sample with the ratio estimator's score itself
  std::uint64_t seed = 0;
  std::optional<int> threads;
  std::string out;
  std::string init;
  double lr_decay = 1.0;  // the learning rate's factor every lr_decay_every episodes
  int64_t lr_decay_every = 1000;
  std::vector<int64_t> snapshots;       // episodes after which DIR/checkpoint_<episode>.pt is kept
  std::optional<double> target_reward;  // stop once a check's mean reward reaches it
  int64_t check_every = 100;
  int64_t check_samples = 1000;
  std::string method_name = "train";  // the progress line's label
};

inline void add_qlearning_flags(CLI::App& app, QLearningFlags& f) {
  app.add_option("--episodes", f.episodes, "training episodes")->check(CLI::NonNegativeNumber);
  app.add_option("--beta", f.beta, "weight of the terminal reward (0: score matching)");
  app.add_option("--sampler", f.sampler, "simulator: sde (Euler-Maruyama), ode-euler, ddim")
      ->check(CLI::IsMember({"sde", "ode-euler", "ddim"}));
  app.add_option("--backend", f.backend, "networks on eigen (the CPU fast path, the default) or torch (LibTorch)")
      ->check(CLI::IsMember({"torch", "eigen"}));
  app.add_option("--horizon", f.horizon, "T of the OU forward process")->check(CLI::PositiveNumber);
  app.add_option("--dt", f.dt, "time step (must divide T)")->check(CLI::PositiveNumber);
  app.add_option("--temperature", f.temperature, "entropy temperature theta")->check(CLI::PositiveNumber);
  app.add_option("--lr", f.lr, "Adam learning rate of both networks")->check(CLI::PositiveNumber);
  app.add_option("--batch", f.batch, "trajectories per episode")->check(CLI::PositiveNumber);
  app.add_option("--density-floor", f.density_floor, "ratio estimator's lower bound eps")->check(CLI::PositiveNumber);
  app.add_option("--eval-batches", f.eval_batches, "evaluation batches")->check(CLI::Range(2, 100000));
  app.add_option("--eval-batch-size", f.eval_batch_size, "samples per evaluation batch")->check(CLI::Range(2, 1000000));
  app.add_flag("--exact-score", f.exact_score,
               "train nothing: sample with the ratio estimator's score (the exact score of the noised "
               "training set), the floor a perfect learner reaches with this simulator and step");
  app.add_option("--knn-k", f.knn_k, "neighbour order of the kNN KL estimate")->check(CLI::Range(1, 100));
  app.add_option("--kl-reference", f.kl_reference,
                 "the KL's reference: fresh (new data, as many points as a batch, for every batch) or "
                 "train (the training set)")
      ->check(CLI::IsMember({"fresh", "train"}));
  app.add_option("--seed", f.seed, "random seed");
  app.add_option("--threads", f.threads, "threads (default: all cores)");
  app.add_option("--out", f.out, "output directory");
  app.add_option("--init", f.init, "start from this checkpoint (checkpoint.pt of an earlier run)");
  app.add_option("--lr-decay", f.lr_decay,
                 "scheduler factor: the learning rate is multiplied by it every --lr-decay-every episodes "
                 "(1: constant)")
      ->check(CLI::Range(1e-12, 1.0));
  app.add_option("--lr-decay-every", f.lr_decay_every, "episodes between learning-rate decays")
      ->check(CLI::PositiveNumber);
  app.add_option("--snapshots", f.snapshots,
                 "episodes after which to keep a copy DIR/checkpoint_<episode>.pt (q-learning)")
      ->check(CLI::PositiveNumber);
  app.add_option("--target-reward", f.target_reward,
                 "stop training at the first check whose mean reward reaches this value")
      ->check(CLI::Number);
  app.add_option("--check-every", f.check_every, "episodes between target-reward checks")->check(CLI::PositiveNumber);
  app.add_option("--check-samples", f.check_samples, "generated samples per target-reward check")
      ->check(CLI::Range(2, 10000000));
}

// The training data: points [n, d], and for a conditional problem (the paper's
// Algorithm 2) their classes [n] in [0, classes); and where more of the same comes
// from: draw_fresh(n, generator) gives n new points and their classes (undefined
// when unconditional), from a generator seeded with fresh_seed.
struct ExampleData {
  torch::Tensor points;
  torch::Tensor labels;  // undefined: unconditional
  std::function<std::pair<torch::Tensor, torch::Tensor>(int64_t, at::Generator&)> draw_fresh;
  std::uint64_t fresh_seed = 0;
  int64_t classes() const { return labels.defined() ? labels.max().item<int64_t>() + 1 : 0; }
};

// The conditions of n samples: undefined when unconditional, else the classes in turn.
inline torch::Tensor conditions(const ExampleData& data, int64_t n) {
  const int64_t classes = data.classes();
  return classes > 0 ? torch::arange(n, torch::kLong) % classes : torch::Tensor{};
}

// The loop the examples share around a method's own step: train() with the
// library's callbacks for progress, the learning-rate schedule, a checkpoint every
// tenth of the run (save(episode)), the --snapshot episodes (snapshot(episode)),
// metrics.csv (the step's figures at 500 points of the run) and the stop at
// --target-reward, where check(n) is the mean reward of n fresh samples of the
// current model. Only the process that `shows` (rank 0 of a group) prints and logs.
template <class Method, class Step, class Check, class Save, class Snapshot>
TrainOutcome train_loop(const QLearningFlags& f, Method& method, Step&& step, Check&& check, Save&& save,
                        Snapshot&& snapshot, bool shows = true) {
  std::optional<callbacks::MetricsCsv> log;
  if (shows) log.emplace(std::filesystem::path(f.out) / "metrics.csv", std::max<int64_t>(1, f.episodes / 500));
  std::optional<callbacks::StopAtTarget> stop;
  if (f.target_reward)
    stop.emplace(
        f.method_name + ": the mean reward of " + std::to_string(f.check_samples) + " samples",
        [&] { return check(f.check_samples); }, *f.target_reward, f.check_every, shows);
  return train(f.episodes, step, callbacks::ProgressBar(f.method_name, f.episodes, shows),
               callbacks::LearningRateDecay([&](double lr) { method.set_learning_rate(lr); }, f.lr, f.lr_decay,
                                            f.lr_decay_every),
               callbacks::Every(std::max<int64_t>(1, f.episodes / 10), save),  // a crash loses <= a tenth
               callbacks::Every(1,
                                [&](int64_t episode) {
                                  if (std::ranges::find(f.snapshots, episode) != f.snapshots.end()) snapshot(episode);
                                }),
               log, stop);
}

// The mean reward of n samples drawn by draw(n, z), z as conditions() gives them.
template <class Draw, class Reward>
double mean_reward(const ExampleData& data, Draw&& draw, const Reward& reward, int64_t n) {
  const torch::Tensor z = conditions(data, n);
  return torch::Tensor(reward(draw(n, z), z)).to(torch::kDouble).mean().template item<double>();
}

namespace detail {

constexpr int64_t kWrittenSamples = 3000;  // in samples.csv and the picture

// Rows of x [n, d], with the class as a last column when z is defined.
inline std::string csv_rows(const torch::Tensor& x, const torch::Tensor& z = {}) {
  std::ostringstream out;
  const torch::Tensor rows = x.to(torch::kCPU, torch::kDouble).contiguous();
  for (int64_t i = 0; i < rows.size(0); ++i) {
    for (int64_t j = 0; j < rows.size(1); ++j) out << (j ? "," : "") << rows[i][j].item<double>();
    if (z.defined()) out << "," << z[i].item<int64_t>();
    out << '\n';
  }
  return out.str();
}

inline nlohmann::ordered_json json_quality(const metrics::SampleQuality& q) {
  return {{"reward_mean", q.reward.mean},
          {"reward_ci95", q.reward.half_width},
          {"kl_mean", q.kl.mean},
          {"kl_ci95", q.kl.half_width},
          {"forward_kl_mean", q.forward_kl.mean},
          {"forward_kl_ci95", q.forward_kl.half_width}};
}

}  // namespace detail

// Evaluates a trained model, whose samples draw(n, z) gives, as the paper does
// (reward and kNN KL to the data, mean +- 95% CI over batches), and writes
// DIR/samples.csv, data.csv, metrics.json and samples.png. The KL's reference is
// fresh data (--kl-reference fresh: as many new points as a batch, drawn anew for
// every batch) or the training set (train). A conditional model is evaluated class
// by class against that class's data; its reported reward and KL are the means
// over classes (CIs combined as independent).
template <class Draw, class Reward, class Picture>
int write_report(const QLearningFlags& f, Draw&& draw, const ExampleData& data, const Reward& reward,
                 const Picture& picture, const TrainOutcome& trained) {
  const std::filesystem::path out(f.out);
  const metrics::SampleQualityOptions options{
      .batches = f.eval_batches, .batch_size = f.eval_batch_size, .knn = {.k = f.knn_k, .k_q = std::nullopt}};
  const bool fresh = f.kl_reference == "fresh";
  require(!fresh || data.draw_fresh, "--kl-reference fresh: this problem has no source of fresh data");
  at::Generator fresh_generator = make_generator(data.fresh_seed);
  const int64_t classes = data.classes();
  // n new points of class c (all of them when unconditional, c = -1); about n for a class.
  const auto fresh_points = [&](int64_t n, int64_t c) {
    const auto [x, labels] = data.draw_fresh(c < 0 ? n : n * classes, fresh_generator);
    return c < 0 ? x : x.index({labels == c});
  };
  std::vector<metrics::SampleQuality> per_class;
  double data_reward = 0.0;  // the mean reward of fresh data, the paper's reference row
  std::vector<torch::Tensor> panels, drawn;
  for (int64_t c = classes > 0 ? 0 : -1; c < std::max<int64_t>(classes, 0); ++c) {
    const auto z = [c](int64_t n) { return c < 0 ? torch::Tensor{} : torch::full({n}, c, torch::kLong); };
    const torch::Tensor training = c < 0 ? data.points : data.points.index({data.labels == c});
    const auto class_reward = [&](const torch::Tensor& y) { return torch::Tensor(reward(y, z(y.size(0)))); };
    per_class.push_back(metrics::sample_quality([&](int64_t n) { return draw(n, z(n)); }, class_reward,
                                                [&](int64_t n) { return fresh ? fresh_points(n, c) : training; },
                                                options));
    if (data.draw_fresh) {
      const torch::Tensor held_out = fresh_points(options.batches * options.batch_size, c);
      data_reward += class_reward(held_out).to(torch::kDouble).mean().template item<double>() /
                     double(std::max<int64_t>(classes, 1));
    }
    const int64_t shown = detail::kWrittenSamples / std::max<int64_t>(classes, 1);
    drawn.push_back(draw(shown, z(shown)));
    panels.push_back(picture(drawn.back(), training));
  }
  const torch::Tensor samples = torch::cat(drawn);
  const torch::Tensor sample_classes =
      classes > 0 ? torch::arange(classes, torch::kLong).repeat_interleave(detail::kWrittenSamples / classes)
                  : torch::Tensor{};
  metrics::SampleQuality quality{};
  for (const auto& q : per_class)
    for (auto [total, one] : {std::pair{&quality.reward, q.reward}, std::pair{&quality.kl, q.kl},
                              std::pair{&quality.forward_kl, q.forward_kl}}) {
      total->mean += one.mean / double(per_class.size());
      total->half_width += one.half_width * one.half_width;
    }
  for (auto* total : {&quality.reward, &quality.kl, &quality.forward_kl})
    total->half_width = std::sqrt(total->half_width) / double(per_class.size());

  // The overall figures first, the settings, then per class (keys in this order).
  nlohmann::ordered_json metrics = detail::json_quality(quality);
  metrics.update({{"episodes", trained.steps},
                  {"train_seconds", trained.seconds},
                  {"beta", f.beta},
                  {"sampler", f.sampler},
                  {"dt", f.dt},
                  {"temperature", f.temperature},
                  {"lr", f.lr},
                  {"knn_k", f.knn_k},
                  {"kl_reference", fresh ? "fresh data, " + std::to_string(f.eval_batch_size) + " new points per batch"
                                         : "the training data, " + std::to_string(data.points.size(0)) + " points"},
                  {"exact_score", f.exact_score}});
  if (data.draw_fresh) metrics["data_reward"] = data_reward;
  if (classes > 0) {
    nlohmann::ordered_json classes_json = nlohmann::ordered_json::array();
    for (int64_t c = 0; c < classes; ++c) {
      nlohmann::ordered_json one{{"class", c}};
      one.update(detail::json_quality(per_class[std::size_t(c)]));
      classes_json.push_back(one);
    }
    metrics["per_class"] = classes_json;
  }
  io::write_text(out / "samples.csv", detail::csv_rows(samples, sample_classes));
  io::write_text(out / "data.csv", detail::csv_rows(data.points, data.labels));
  write_json(out / "metrics.json", metrics);
  io::write_png(out / "samples.png", io::tile(panels, 1));
  std::cout << "reward " << quality.reward.mean << " +- " << quality.reward.half_width << ", KL " << quality.kl.mean
            << " +- " << quality.kl.half_width << " nats (data || samples: " << quality.forward_kl.mean << ")";
  for (std::size_t c = 0; classes > 0 && c < per_class.size(); ++c)
    std::cout << (c ? "; " : " (") << "class " << c << ": reward " << per_class[c].reward.mean << ", KL "
              << per_class[c].kl.mean << (c + 1 == per_class.size() ? ")" : "");
  std::cout << ", " << trained.steps << " episodes in " << trained.seconds << " s; wrote " << out.string() << "/\n";
  return 0;
}

namespace detail {

template <class Simulator, class Backend, class Reward, class Picture>
int train_and_report(const QLearningFlags& f, const ExampleData& data, const Reward& reward, const Picture& picture,
                     at::Generator& generator, const distributed::Group& group) {
  using Schedule = sde::OrnsteinUhlenbeck;
  using Estimate = models::RatioScore<Schedule>;
  const Schedule schedule({.horizon = f.horizon});
  algorithms::QLearning<Schedule, Estimate, Reward, Simulator, Backend> learner(
      schedule, Estimate(schedule, data.points, data.labels, {.density_floor = f.density_floor}), data.points.size(1),
      data.classes(),
      {.temperature = f.temperature,
       .beta = f.beta,
       .dt = f.dt,
       .batch = f.batch,
       .learning_rate = f.lr,
       .group = group},
      reward);
  if (!f.init.empty()) learner.load(f.init);

  const std::filesystem::path out(f.out);
  const auto checkpoint = out / "checkpoint.pt";
  const Simulator solver;
  const auto draw = [&](int64_t n, const torch::Tensor& z) { return learner.sample(n, z, generator, solver); };
  const TrainOutcome trained = train_loop(
      f, learner, [&] { return learner.train_episode(generator); },
      [&](int64_t n) { return mean_reward(data, draw, reward, n); }, [&](int64_t) { learner.save(checkpoint); },
      [&](int64_t episode) { learner.save(out / ("checkpoint_" + std::to_string(episode) + ".pt")); }, group.is_main());
  learner.save(checkpoint);
  if (!group.is_main()) return 0;  // rank 0 reports
  return write_report(f, draw, data, reward, picture, trained);
}

}  // namespace detail

// The floor a perfect score learner reaches at these settings: the same simulator
// on the same grid, driven by the ratio estimator's score itself (the exact score
// of the noised training set), with no network and no training.
template <class Simulator, class Reward, class Picture>
int report_exact_score(const QLearningFlags& f, const ExampleData& data, const Reward& reward, const Picture& picture,
                       at::Generator& generator) {
  using Schedule = sde::OrnsteinUhlenbeck;
  const Schedule schedule({.horizon = f.horizon});
  const models::RatioScore<Schedule> score(schedule, data.points, data.labels, {.density_floor = f.density_floor});
  const sde::TimeGrid grid = algorithms::grid_with_step(schedule, f.dt);
  const Simulator solver;
  const auto draw = [&](int64_t n, const torch::Tensor& z) {
    torch::NoGradGuard no_grad;
    sde::IntegrateOptions options;
    options.generator = generator;
    const torch::Tensor prior = sde::sample_prior(schedule, {n, data.points.size(1)}, generator, data.points.options());
    return sde::integrate(schedule, score, solver, grid, prior, z, options).final_state;
  };
  return write_report(f, draw, data, reward, picture, {});
}

// The run's processes: several when a launcher started them (scripts/launch,
// torchrun, srun, mpirun), which needs --backend torch; else this one alone.
inline distributed::Group join_run(const QLearningFlags& f) {
  distributed::Group group = distributed::connect_from_environment();
  require(group.alone() || (f.backend == "torch" && !f.exact_score), "a run of ", group.size(),
          " processes needs --backend torch (the Eigen backend and --exact-score run in one process)");
  return group;
}

// Trains on `data` with `reward` as the flags say and writes DIR/checkpoint.pt,
// samples.csv, data.csv, metrics.json and samples.png (drawn by `picture`); with
// --exact-score, reports the exact-score floor instead of training. In a group of
// processes each episode's trajectories are split over them (--backend torch).
template <class Reward, class Picture>
int run_qlearning(const QLearningFlags& f, const ExampleData& data, const Reward& reward, const Picture& picture,
                  at::Generator& generator, const distributed::Group& group) {
  using algorithms::EigenBackend, algorithms::TorchBackend;
  require(data.points.size(0) >= 1, "the training data is empty");
  if (f.exact_score) {
    require(f.init.empty() && f.beta == 0.0,
            "--exact-score samples with the ratio estimator's score: it takes no --init and no --beta");
    if (f.sampler == "ode-euler")
      return report_exact_score<sde::ProbabilityFlowEuler>(f, data, reward, picture, generator);
    if (f.sampler == "ddim") return report_exact_score<sde::Ddim>(f, data, reward, picture, generator);
    return report_exact_score<sde::EulerMaruyama>(f, data, reward, picture, generator);
  }
  if (f.backend == "eigen") {
    if (f.sampler == "ode-euler")
      return detail::train_and_report<sde::ProbabilityFlowEuler, EigenBackend<float>>(f, data, reward, picture,
                                                                                      generator, group);
    if (f.sampler == "ddim")
      return detail::train_and_report<sde::Ddim, EigenBackend<float>>(f, data, reward, picture, generator, group);
    return detail::train_and_report<sde::EulerMaruyama, EigenBackend<float>>(f, data, reward, picture, generator,
                                                                             group);
  }
  if (f.sampler == "ode-euler")
    return detail::train_and_report<sde::ProbabilityFlowEuler, TorchBackend>(f, data, reward, picture, generator,
                                                                             group);
  if (f.sampler == "ddim")
    return detail::train_and_report<sde::Ddim, TorchBackend>(f, data, reward, picture, generator, group);
  return detail::train_and_report<sde::EulerMaruyama, TorchBackend>(f, data, reward, picture, generator, group);
}

}  // namespace diffctl::examples
