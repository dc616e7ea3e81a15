// Continuous-time SEIKO on Fashion-MNIST: online fine-tuning of a pretrained
// diffusion model (unconditional by default, so that control alone must meet the
// prompts) with a feedback budget. The oracle is the strong classifier (reward:
// its probability of the prompted class, plus label noise); the reward ensemble
// starts from the weak classifier. It needs the outputs of
//
//   pretrain_diffusion --unconditional --out out/diffusion
//   train_classifier --strength strong --out out/oracle
//   train_classifier --strength weak --out out/weak
//
// and writes into --out:
//   rounds.csv       round, queries_total, oracle_reward_mean, ensemble_reward_mean,
//                    uncertainty_mean, kl_to_pretrained, control_points_mean, seconds
//                    (round 0: the pretrained model)
//   round_<i>.png    samples after round i, one row per prompt
//   metrics.json     the last round's figures and the run's settings
//   feedback.bin     every label paid for; seiko.pt the last round's checkpoint
//                    (--resume continues a killed run without asking again)
//
// --variant picks the algorithm: mean-std (continuous SEIKO: top-k uncertain
// control times, optimism mean + std), max, thompson, ucb (feature covariance),
// greedy (no bonus), discrete (control at every measured time), uniform (--top-k
// evenly spaced control times, whatever the uncertainty), non-adaptive (one round
// with the whole budget).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "diffctl/algorithms/continuous_seiko.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/io/png.hpp"
#include "diffctl/models/epsilon_score.hpp"
#include "diffctl/policy/control.hpp"
#include "diffctl/reward/ensemble.hpp"
#include "image_example.hpp"

using namespace diffctl;

namespace {

struct DemoSettings {
  std::string diffusion_dir = "out/diffusion", oracle_dir = "out/oracle", weak_dir = "out/weak";
  std::string variant = "mean-std";
  std::vector<int64_t> queries;
  std::vector<std::string> tune_drift;
  int64_t sample_steps = 0, batch = 0, optimize_steps = 0, eval_samples = 0, top_k = 3, measure_every = 2;
  int64_t ensemble_size = 4, ensemble_steps = 300, control_width = 32, per_prompt = 8;
  double alpha = 1e-4, beta = 1e-4, lr = 3e-3, class_image_scale = 20.0, noise = 0.05, jitter = 0.1, ensemble_lr = 3e-3, ensemble_l2 = 0.01, bonus = 1.0;
  bool anchored = true, resume = false;
};

const std::vector<std::string> kVariants{"mean-std", "max",      "thompson",    "ucb",
                                         "greedy",   "discrete", "non-adaptive", "uniform"};

std::string csv_row(const algorithms::SeikoRound& r) {
  char line[256];
  std::snprintf(line, sizeof line, "%lld,%lld,%.4f,%.4f,%.4f,%.3f,%.2f,%.1f", static_cast<long long>(r.round),
                static_cast<long long>(r.queries_total), r.oracle_reward_mean, r.ensemble_reward_mean,
                r.uncertainty_mean, r.kl_to_pretrained, r.control_points_mean, r.seconds);
  return line;
}

// The rounds as an aligned table (the CSV rows, one column per field).
void print_table(const std::vector<std::string>& rows) {
  const std::vector<std::string> header{"round", "queries", "oracle r", "ensemble r", "g_hat", "KL", "controls", "seconds"};
  std::printf("\n");
  for (const auto& name : header) std::printf("%11s", name.c_str());
  std::printf("\n");
  for (const auto& row : rows) {
    std::stringstream fields(row);
    std::string field;
    while (std::getline(fields, field, ',')) std::printf("%11s", field.c_str());
    std::printf("\n");
  }
  std::fflush(stdout);
}

constexpr const char* kCsvHeader =
    "round,queries_total,oracle_reward_mean,ensemble_reward_mean,uncertainty_mean,kl_to_pretrained,"
    "control_points_mean,seconds";

template <class Optimism, class Mss, class Schedule, class Drift>
int run(const DemoSettings& s, const examples::ImageFlags& flags, Schedule schedule, Drift pretrained,
        const std::vector<std::string>& class_names, int64_t image_size, int64_t channels, Optimism optimism, Mss mss,
        at::Generator& generator, const torch::Device& device) {
  const std::filesystem::path out = flags.out;
  const int64_t classes = static_cast<int64_t>(class_names.size());
  models::ResNet18 strong = examples::load_classifier(s.oracle_dir, image_size, device);
  models::ResNet18 weak = examples::load_classifier(s.weak_dir, image_size, device);

  using Members = reward::SharedBackboneHeads<models::ResNet18>;
  using Ensemble = reward::BootstrapEnsemble<Members, Optimism>;
  Ensemble ensemble(Members::copies_of(weak, weak->head(), s.ensemble_size, s.jitter, generator),
                    {.fit = {.steps = s.ensemble_steps, .batch = 1 << 20, .learning_rate = s.ensemble_lr, .l2 = s.ensemble_l2,
                             .anchored = s.anchored},
                     .seed = flags.seed},
                    std::move(optimism));
  policy::NetworkControl control(policy::ImageControlNet(policy::ImageControlNetOptions{
      .channels = channels, .classes = classes, .width = s.control_width, .image_size = image_size,
      .class_image_scale = s.class_image_scale}));
  control.network()->to(device);

  // Non-adaptive: the whole budget asked of the pretrained model in one round,
  // with as many optimisation steps as the K rounds of the other variants.
  std::vector<int64_t> queries = s.queries;
  int64_t optimize_steps = s.optimize_steps;
  if (s.variant == "non-adaptive") {
    int64_t total = 0;
    for (const int64_t q : queries) total += q;
    queries = {total};
    optimize_steps *= static_cast<int64_t>(s.queries.size());
  }
  algorithms::SeikoOptions options{.queries_per_round = queries,
                                   .batch = s.batch,
                                   .optimize_steps = optimize_steps,
                                   .learning_rate = s.lr,
                                   .measure_every = s.measure_every,
                                   .tune_drift = s.tune_drift,
                                   .classes = classes,
                                   .eval_samples = s.eval_samples,
                                   .chunk = 128,
                                   .seed = flags.seed};
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), static_cast<std::size_t>(s.sample_steps));
  algorithms::ContinuousSeiko<Schedule, Drift, decltype(control), Mss, sde::Ddpm, Ensemble> seiko(
      schedule, grid, {channels, image_size, image_size}, std::move(pretrained), std::move(control),
      std::move(ensemble), options, mss, sde::Ddpm({.clip_x0 = 1.0}), objective::PathKl{s.alpha, s.beta}, device);
  reward::Oracle oracle(reward::ClassifierReward<models::ResNet18>(strong),
                        {.noise_std = s.noise, .budget = std::nullopt, .seed = flags.seed + 1});

  const auto feedback_path = out / "feedback.bin", checkpoint_path = out / "seiko.pt";
  require(s.resume || !std::filesystem::exists(feedback_path), feedback_path.string(),
          " exists: pass --resume to continue that run, or choose another --out");
  reward::FeedbackDataset feedback(feedback_path);
  std::vector<std::string> rows;
  if (s.resume && std::filesystem::exists(checkpoint_path)) {
    if (feedback.oracle_state()) oracle.restore(*feedback.oracle_state());
    const int64_t done = seiko.load(checkpoint_path, feedback);
    std::ifstream in(out / "rounds.csv");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line) && static_cast<int64_t>(rows.size()) <= done) rows.push_back(line);
    std::cerr << "seiko_demo: resuming after round " << done << " with " << feedback.size() << " labels\n";
  } else if (feedback.oracle_state()) {
    oracle.restore(*feedback.oracle_state());  // labels of a run killed in round 1
  }

  const torch::Tensor prompts = torch::arange(classes, torch::kLong).repeat_interleave(s.per_prompt);
  const auto picture = [&](int64_t round) {
    const torch::Tensor images = seiko.sample(prompts.size(0), false, prompts).x;
    io::write_png(out / ("round_" + std::to_string(round) + ".png"), io::image_grid(images.clamp(-1, 1), s.per_prompt));
  };
  const auto write_rows = [&] {
    std::string text = std::string(kCsvHeader) + "\n";
    for (const auto& row : rows) text += row + "\n";
    io::write_text(out / "rounds.csv", text);
  };
  std::cout << kCsvHeader << "\n";
  for (const auto& row : rows) std::cout << row << "\n";
  algorithms::SeikoRound last;
  if (rows.empty()) {
    last = seiko.evaluate(oracle);
    rows.push_back(csv_row(last));
    std::cout << rows.back() << std::endl;
    picture(0);
    write_rows();
  }
  while (seiko.rounds_done() < seiko.rounds()) {
    last = seiko.run_round(oracle, feedback);
    rows.push_back(csv_row(last));
    std::cout << rows.back() << std::endl;
    picture(last.round);
    seiko.save(checkpoint_path);
    write_rows();
  }
  examples::write_json(out / "metrics.json", {{"variant", s.variant},
                                              {"rounds", seiko.rounds()},
                                              {"queries_total", last.queries_total},
                                              {"oracle_reward_mean", last.oracle_reward_mean},
                                              {"ensemble_reward_mean", last.ensemble_reward_mean},
                                              {"uncertainty_mean", last.uncertainty_mean},
                                              {"kl_to_pretrained", last.kl_to_pretrained},
                                              {"control_points_mean", last.control_points_mean},
                                              {"alpha", s.alpha},
                                              {"beta", s.beta},
                                              {"seed", flags.seed}});
  print_table(rows);
  std::cout << "seiko_demo: " << (out / "rounds.csv").string() << ", " << (out / "metrics.json").string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Continuous-time SEIKO: fine-tune a pretrained diffusion model with oracle feedback"};
  examples::ImageFlags flags;
  flags.out = "out/seiko";
  DemoSettings s;
  examples::add_image_flags(app, flags);
  app.add_option("--diffusion", s.diffusion_dir, "pretrain_diffusion output (the pretrained model)");
  app.add_option("--oracle", s.oracle_dir, "train_classifier --strength strong output (the oracle)");
  app.add_option("--weak", s.weak_dir, "train_classifier --strength weak output (the ensemble's start)");
  app.add_option("--variant", s.variant, "mean-std, max, thompson, ucb, greedy, discrete, uniform or non-adaptive")
      ->check(CLI::IsMember(kVariants));
  app.add_option("--queries", s.queries, "oracle queries per round (small: 64 128 256, paper: 1024 ... 8192)");
  app.add_option("--sample-steps", s.sample_steps, "DDPM steps (small: 25, paper: 100)")->check(CLI::PositiveNumber);
  app.add_option("--batch", s.batch, "trajectories per optimisation step (small: 16, paper: 64)")
      ->check(CLI::PositiveNumber);
  app.add_option("--optimize-steps", s.optimize_steps, "optimisation steps per round (small: 40, paper: 200)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-samples", s.eval_samples, "samples measured after each round (small: 200, paper: 1000)")
      ->check(CLI::PositiveNumber);
  app.add_option("--top-k", s.top_k, "control points per trajectory (mean-std, max, thompson, ucb, greedy)")
      ->check(CLI::PositiveNumber);
  app.add_option("--measure-every", s.measure_every, "sampler steps between measured (controllable) times")
      ->check(CLI::PositiveNumber);
  app.add_option("--alpha", s.alpha, "weight of the KL to the pretrained model")->check(CLI::NonNegativeNumber);
  app.add_option("--beta", s.beta, "weight of the KL to the previous round")->check(CLI::NonNegativeNumber);
  app.add_option("--lr", s.lr, "AdamW learning rate of the control and initial distribution")->check(CLI::PositiveNumber);
  app.add_option("--bonus", s.bonus, "c of mean + c std and of the feature UCB")->check(CLI::NonNegativeNumber);
  app.add_option("--noise", s.noise, "oracle label noise sigma")->check(CLI::NonNegativeNumber);
  app.add_option("--ensemble-size", s.ensemble_size, "reward ensemble members")->check(CLI::Range(int64_t{2}, int64_t{64}));
  app.add_option("--ensemble-steps", s.ensemble_steps, "Adam steps per ensemble refit")->check(CLI::NonNegativeNumber);
  app.add_option("--ensemble-l2", s.ensemble_l2, "weight of the heads' squared distance to their anchor")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--anchored,!--unanchored", s.anchored,
               "anchor the heads' l2 at their initial weights (the weak classifier's), or at 0");
  app.add_option("--control-width", s.control_width, "channels of the control network")->check(CLI::PositiveNumber);
  app.add_option("--class-image-scale", s.class_image_scale,
                 "scale of the control's per-class impulse image (its learning-rate multiplier)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--per-prompt", s.per_prompt, "samples per prompt in the round pictures")->check(CLI::PositiveNumber);
  app.add_option("--tune-drift", s.tune_drift,
                 "also fine-tune the UNet's parameters whose names start with these prefixes (\"\" for all)");
  app.add_flag("--resume", s.resume, "continue the run in --out");
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;

  return examples::run_main("seiko_demo", [&] {
    const bool small = flags.preset == "small";
    if (s.queries.empty()) s.queries = small ? std::vector<int64_t>{64, 128, 256} : std::vector<int64_t>{1024, 2048, 4096, 8192};
    for (const int64_t q : s.queries) require(q >= 1, "--queries: every round needs >= 1 query, found ", q);
    if (s.sample_steps == 0) s.sample_steps = small ? 25 : 100;
    if (s.batch == 0) s.batch = small ? 16 : 64;
    if (s.optimize_steps == 0) s.optimize_steps = small ? 40 : 200;
    if (s.eval_samples == 0) s.eval_samples = small ? 200 : 1000;

    auto generator = examples::start_run(flags);
    const torch::Device device = examples::resolve_device(flags.device);
    const std::filesystem::path from = s.diffusion_dir;
    require(std::filesystem::exists(from / "model.pt"), "--diffusion ", from.string(),
            ": no model.pt; run pretrain_diffusion --unconditional --out ", from.string(), " first");
    const nlohmann::json config = examples::read_json(from / "config.json");
    const models::UNetOptions unet = examples::unet_options_from_json(config.at("unet"));
    models::UNet network(unet);
    models::load_weights(*network, from / "model.pt");
    network->to(device);
    network->eval();
    const auto class_names = config.at("class_names").get<std::vector<std::string>>();
    const bool conditional = config.at("conditional");
    const int64_t size = config.at("image_size");

    return examples::with_schedule(config.at("schedule").get<std::string>(), [&](auto schedule) {
      using Schedule = decltype(schedule);
      using Score = models::EpsilonScore<Schedule, models::UNet>;
      const Score score(schedule, network, {.time_scale = config.at("time_scale"), .guidance = 0.0, .null_label = -1});
      // The prompts reach the control and the reward; an unconditional model ignores them.
      const models::PromptedDrift<Score> drift(score, conditional);
      const mss::TopK top{s.top_k};
      const int64_t channels = unet.in_channels;
      if (s.variant == "max")
        return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::MaxOfMembers{}, top, generator, device);
      if (s.variant == "thompson")
        return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::Thompson{}, top, generator, device);
      if (s.variant == "ucb")
        return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::FeatureUcb(s.bonus, 1.0), top, generator, device);
      if (s.variant == "greedy")
        return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::Greedy{}, top, generator, device);
      if (s.variant == "uniform")
        return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::MeanPlusStd{s.bonus}, mss::Uniform{s.top_k}, generator, device);
      if (s.variant == "discrete")
        return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::MeanPlusStd{s.bonus}, mss::EveryStep{}, generator, device);
      return run(s, flags, schedule, drift, class_names, size, channels, reward::optimism::MeanPlusStd{s.bonus}, top, generator, device);
    });
  });
}
