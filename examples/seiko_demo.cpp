// Continuous-time SEIKO on Fashion-MNIST: online fine-tuning of a pretrained
// diffusion model (unconditional by default, so that control alone must meet the
// prompts) with a feedback budget. The oracle is the strong classifier (reward:
// its probability of the prompted class, plus label noise), or any reward model
// brought as a TorchScript file (--oracle-script); the reward ensemble starts from
// the weak classifier. It needs the outputs of
//
//   pretrain_diffusion --unconditional --out out/diffusion
//   train_classifier --strength strong --out out/oracle
//   train_classifier --strength weak --out out/weak
//
// and writes into --out:
//   rounds.csv       round, queries_total, oracle_reward_mean, ensemble_reward_mean,
//                    uncertainty_mean, kl_to_pretrained, control_points_mean, seconds,
//                    oracle_accuracy, diversity, class_fd (round 0: the pretrained
//                    model; the last three in the oracle's terms against the test
//                    images, metrics/conditional_quality.hpp)
//   rounds.svg       accuracy, reward, path KL, diversity and class FD against the
//                    labels spent, redrawn after each round
//   round_<i>.png    samples after round i, one row per prompt
//   samples.npy      the final model's evaluation samples, uint8 [N, H, W] (or
//   prompts.npy      [N, H, W, C]), at least 100 per prompt, and their prompts int64 [N]
//   metrics.json     the final evaluation's figures (overall and per prompt) and the
//                    run's settings
//   feedback.sqlite  every label paid for (SQLite: `sqlite3 feedback.sqlite .schema`);
//                    seiko.pt the last round's checkpoint (score matching:
//                    score_matching.pt, and pool.pt its pool) (--resume continues
//                    a killed run without asking again, and replays it: the same
//                    figures as an uninterrupted run)
//   queries/<id>.png with --external-labels, a picture per query awaiting a label
//
// Exit status: 0 done; 3 stopped to wait for labels from outside (--label-wait;
// go on with --resume); 4 a round diverged (seiko.pt keeps the last good round);
// 1 any other error, in one line.
//
// --variant picks the algorithm: mean-std (continuous SEIKO: top-k uncertain
// control times, optimism mean + std), max, thompson, ucb (feature covariance),
// greedy (no bonus), discrete (control at every measured time), uniform (--top-k
// evenly spaced control times, whatever the uncertainty), non-adaptive (one round
// with the whole budget); ddpo and dpok fine-tune the UNet itself at the same
// oracle budget (one query per chain; the class embedding of a conditional copy
// of the unconditional UNet starts at zero), reported on the same axes;
// score-matching solves SEIKO's objective in closed form on a pool of pretrained
// samples (--pool) each round and trains that UNet toward it by weighted denoising
// score matching. --control picks how a control acts: impulse (the state jumps at
// the control time) or held (policy::Held: a drift until the next measured time,
// at a KL that stays bounded as the grid refines). --reward log-probability with
// --alpha 1 is the objective in nats whose optimum is the class-conditional data
// distribution; --guidance w adds the reward model's gradient at the Tweedie
// estimate to the control (policy::Guided, gain w / alpha).
// --null-prompt takes a model trained with --label-dropout as the pretrained
// unconditional model (its null label), so that the conditional model it learned
// beside is the reference optimum of the same network (--optimal-from the same
// directory).
// examples/RESULTS.md has what each measured.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>
#include <tuple>

#include "diffctl/algorithms/continuous_seiko.hpp"
#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/tilted_score_matching.hpp"
#include "diffctl/callbacks.hpp"
#include "diffctl/io/charts.hpp"
#include "diffctl/io/metrics_log.hpp"
#include "diffctl/io/npy.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/metrics/conditional_quality.hpp"
#include "diffctl/metrics/tilted_optimum.hpp"
#include "diffctl/objective/sample_kl.hpp"
#include "diffctl/io/png.hpp"
#include "diffctl/models/diffusion_features.hpp"
#include "diffctl/models/epsilon_score.hpp"
#include "diffctl/models/guided_drift.hpp"
#include "diffctl/models/switched_drift.hpp"
#include "diffctl/policy/control.hpp"
#include "diffctl/reward/ensemble.hpp"
#include "diffctl/reward/external_oracle.hpp"
#include "diffctl/reward/scripted_reward.hpp"
#include "image_example.hpp"

using namespace diffctl;

namespace {

struct DemoSettings {
  std::string diffusion_dir = "out/diffusion", oracle_dir = "out/oracle", weak_dir = "out/weak";
  std::string variant = "mean-std";
  std::string control = "impulse";
  std::string reward = "probability";
  std::string reward_features;  // the ensemble's backbone: "weak" or "diffusion" ("": the variant's choice)
  std::vector<int64_t> queries;
  std::vector<std::string> tune_drift;
  // 0 (-1 for optimize_steps, where 0 is a choice): the preset's value.
  int64_t sample_steps = 0, batch = 0, optimize_steps = -1, eval_samples = 0, top_k = 3, measure_every = 2;
  int64_t ensemble_size = 4, ensemble_steps = 300, control_width = 32, per_prompt = 8, final_per_prompt = 100;
  double alpha = 1e-4, beta = 1e-4, guidance = 0.0, lr = 3e-3, class_image_scale = 20.0, noise = 0.05, jitter = 0.1,
         ensemble_lr = 3e-3, ensemble_l2 = 0.01, bonus = 1.0;
  bool anchored = true, resume = false, learn_gain = true, null_prompt = false;
  std::string optimal_from, oracle_script;
  bool external_labels = false;
  double label_wait = -1.0;           // seconds to wait for outside labels; < 0: as long as it takes
  double pg_lr = 1e-4;                // DDPO's and DPOK's Adam learning rate on the UNet
  double optimal_cfg = 0.0;           // --optimal-from's classifier-free guidance scale
  int64_t tilt_samples = 0;           // pretrained samples for the tilted optima (0: none)
  int64_t pool = 6000;                // score-matching: pretrained samples whose tilt is the round's optimum
  double embedding_lr_factor = 30.0;  // score-matching: the class embedding's learning rate over --pg-lr's
  double min_snr_gamma = 0.0;         // score-matching: Min-SNR-gamma loss weights (0: none)
  std::string final_tilt;             // score-matching: the last round's tilt, "mean" or "optimistic" ("": mean)
  int64_t optimistic_rounds = -1;     // score-matching: rounds tilted by the optimistic reward (-1: all it may)
  std::vector<int64_t> round_steps;   // score-matching: denoising steps in each round (empty: --optimize-steps each)
  // score-matching and --optimal-from: the tuned model's share of the path, from the noise on, and its
  // difference from the pretrained drift, scaled
  double steer_until = 1.0, tuned_scale = 1.0;
  std::vector<double> tilt_alphas{1.0, 0.5, 0.25, 0.1};
};

// The reward's scale: p(z | x) or log p(z | x).
reward::RewardScale reward_scale(const DemoSettings& s) {
  return s.reward == "probability" ? reward::RewardScale::probability : reward::RewardScale::log_probability;
}

// The oracle's reward: the strong classifier's p(z | x) (or its log), or what a
// TorchScript file computes (--oracle-script). The classifier measures accuracy,
// diversity and class FD either way.
struct DemoOracleReward {
  reward::ClassifierReward<models::ResNet18> classifier;
  std::optional<reward::ScriptedReward> script;
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& z) const {
    return script ? (*script)(x, z) : classifier(x, z);
  }
};

DemoOracleReward oracle_reward(const DemoSettings& s, const models::ResNet18& strong, const torch::Device& device) {
  std::optional<reward::ScriptedReward> script;
  if (!s.oracle_script.empty()) script.emplace(s.oracle_script, device);
  return {reward::ClassifierReward<models::ResNet18>(strong, reward_scale(s)), std::move(script)};
}

// The sampler: DDPM's ancestral steps with x0_hat clipped to the images' range.
// Its last step (posterior variance 0) is deterministic; DDPO and DPOK need a
// density for every step, so they sample with the forward process's variance.
const sde::Ddpm kSolver({.clip_x0 = 1.0});
const sde::Ddpm kNoisySolver({.variance = sde::DdpmVariance::forward, .clip_x0 = 1.0});
// A tuned model that never hands over to the pretrained one.
constexpr double kNever = std::numeric_limits<double>::infinity();

// The exit status of a run that stopped to wait for labels from outside, and of
// one whose optimisation diverged.
constexpr int kLabelsPendingExit = 3;
constexpr int kDivergedExit = 4;

const std::vector<std::string> kVariants{"mean-std",     "max",     "thompson", "ucb",  "greedy",        "discrete",
                                         "non-adaptive", "uniform", "ddpo",     "dpok", "score-matching"};

// Prompted samples in the oracle's terms: accuracy, diversity and per-class
// Frechet distance in its penultimate features, against the test images.
class QualityMeter {
 public:
  QualityMeter(models::ResNet18 oracle, const data::ImageDataset& test, const torch::Device& device)
      : oracle_(std::move(oracle)), device_(device), real_labels_(test.labels) {
    real_features_ = evaluate(data::normalize_images(test.images)).second;
  }

  metrics::ConditionalQuality measure(const torch::Tensor& x, const torch::Tensor& z) const {
    const auto [logits, features] = evaluate(x);
    return metrics::conditional_quality(logits, features, z, real_features_, real_labels_);
  }

 private:
  // Logits and features of images in [-1, 1], in batches, in eval mode.
  std::pair<torch::Tensor, torch::Tensor> evaluate(const torch::Tensor& images) const {
    torch::NoGradGuard no_grad;
    auto& net = *oracle_.ptr();
    const bool was_training = net.is_training();
    net.eval();
    std::vector<torch::Tensor> logits, features;
    for (int64_t begin = 0; begin < images.size(0); begin += 256) {
      const torch::Tensor f =
          net.features(images.narrow(0, begin, std::min<int64_t>(256, images.size(0) - begin)).to(device_));
      logits.push_back(net.head()(f).cpu());
      features.push_back(f.cpu());
    }
    net.train(was_training);
    return {torch::cat(logits), torch::cat(features)};
  }

  models::ResNet18 oracle_;
  torch::Device device_;
  torch::Tensor real_features_, real_labels_;
};

// The guidance gain of a guided control (0: none).
template <class Policy>
double gain_of(Policy& policy) {
  if constexpr (!GuidedControl<Policy>) return 0.0;
  else if (!policy.guided()) return 0.0;
  else if constexpr (requires { policy.policy(); }) return policy.policy().gain();
  else return policy.gain();
}

// One row of rounds.csv: the columns of kRoundColumns.
std::vector<double> round_row(const algorithms::SeikoRound& r, const metrics::ConditionalQuality& q) {
  return {double(r.queries_total),
          r.oracle_reward_mean,
          r.ensemble_reward_mean,
          r.uncertainty_mean,
          r.kl_to_pretrained,
          r.control_points_mean,
          r.seconds,
          q.accuracy,
          q.diversity,
          q.frechet};
}

// The rounds as an aligned table (the CSV rows, one column per field).
void print_table(const std::vector<std::string>& rows) {
  const std::vector<std::string> header{"round",    "queries", "oracle r", "ensemble r", "g_hat",   "KL",
                                        "controls", "seconds", "accuracy", "diversity",  "class FD"};
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

const std::vector<std::string> kRoundColumns{"round",
                                             "queries_total",
                                             "oracle_reward_mean",
                                             "ensemble_reward_mean",
                                             "uncertainty_mean",
                                             "kl_to_pretrained",
                                             "control_points_mean",
                                             "seconds",
                                             "oracle_accuracy",
                                             "diversity",
                                             "class_fd"};

// rounds.csv, a row per round as it ends; on --resume, the rows up to the
// checkpoint's round are kept.
io::MetricsLog rounds_log(const std::filesystem::path& out, std::optional<int64_t> resumed_after = std::nullopt) {
  io::MetricsLog log(out / "rounds.csv", kRoundColumns, resumed_after);
  for (std::size_t i = 0; i < kRoundColumns.size(); ++i) std::cout << (i ? "," : "") << kRoundColumns[i];
  std::cout << "\n";
  for (const auto& row : log.rows()) std::cout << row << "\n";
  return log;
}

// rounds.svg: rounds.csv's figures against the labels spent, redrawn as each round ends.
void write_rounds_chart(const io::MetricsLog& log) {
  const std::vector<double> labels = log.column("queries_total");
  const auto panel = [&](std::string title, std::vector<std::pair<std::string, std::string>> series) {
    io::ChartPanel p{.title = std::move(title), .x_label = "oracle labels", .y_label = ""};
    for (auto& [name, column] : series) p.series.push_back({.name = name, .x = labels, .y = log.column(column)});
    return p;
  };
  std::vector<io::ChartPanel> panels{
      panel("oracle accuracy of the prompt", {{"", "oracle_accuracy"}}),
      panel("reward", {{"oracle", "oracle_reward_mean"}, {"reward model", "ensemble_reward_mean"}}),
      panel("path KL to the pretrained model (nats)", {{"", "kl_to_pretrained"}}),
      panel("diversity within a prompt", {{"", "diversity"}}), panel("class Frechet distance", {{"", "class_fd"}})};
  panels[3].y_marks = {1.0};
  panels[3].y_mark_labels = {"real images"};
  io::write_text(log.path().parent_path() / "rounds.svg", io::svg_chart(panels, {.columns = 3}));
}

void add_round(io::MetricsLog& log, const algorithms::SeikoRound& round, const metrics::ConditionalQuality& q) {
  log.write(round.round, round_row(round, q));
  std::cout << log.rows().back() << std::endl;
  write_rounds_chart(log);
}

// The final evaluation's outputs: samples.npy (uint8 [N, H, W] or [N, H, W, C]),
// prompts.npy (int64 [N]) and metrics.json (the figures overall and per prompt,
// and the run's settings); then the rounds' table on the terminal.
// Where the objective E[r] - alpha KL would take the pretrained sampler, for the
// final reward model and for the oracle itself: the tilts of `samples` pretrained
// samples (an unconditional model: every sample serves every prompt) by
// exp(r(x, z) / alpha), judged by the oracle (metrics/tilted_optimum.hpp). Per
// reward model and alpha, the class average of the oracle's accuracy and p(z | x)
// under the tilt, its KL to the pretrained model and its effective samples; and
// the diversity and class FD of final_per_prompt draws per prompt from the tilt
// (with replacement: a tilt of few effective samples repeats them, as a collapsed
// sampler does).
template <class Schedule, class Drift, class Reward>
nlohmann::json tilted_optima(const DemoSettings& s, const Schedule& schedule, const Drift& pretrained,
                             const sde::TimeGrid& grid, std::vector<int64_t> shape, Reward& reward,
                             models::ResNet18 strong, const QualityMeter& quality, int64_t classes,
                             at::Generator& generator, const torch::Device& device) {
  require(!pretrained.conditional(), "--tilt-samples needs a pretrained model that ignores the prompts ",
          "(pretrain_diffusion --unconditional, or --null-prompt)");
  torch::NoGradGuard no_grad;
  constexpr int64_t kChunk = 128;
  std::vector<torch::Tensor> x_chunks, log_p_chunks, rhat_chunks;
  shape.insert(shape.begin(), 0);
  for (int64_t begin = 0; begin < s.tilt_samples; begin += kChunk) {
    shape[0] = std::min(kChunk, s.tilt_samples - begin);
    sde::IntegrateOptions options;
    options.record_x0 = false;
    options.generator = generator;
    const torch::Tensor x =
        sde::integrate(
            schedule, pretrained, kSolver, grid,
            sde::sample_prior(schedule, shape, generator, torch::TensorOptions(torch::kFloat).device(device)),
            torch::zeros({shape[0]}, torch::TensorOptions(torch::kLong).device(device)), options)
            .final_state;
    x_chunks.push_back(x.cpu());
    log_p_chunks.push_back(torch::log_softmax(strong->forward(x), 1).cpu().to(torch::kDouble));
    std::vector<torch::Tensor> per_class;
    for (int64_t c = 0; c < classes; ++c)
      per_class.push_back(
          reward.mean(x, torch::full({shape[0]}, c, torch::TensorOptions(torch::kLong).device(device))));
    rhat_chunks.push_back(torch::stack(per_class, 1).cpu().to(torch::kDouble));
  }
  const torch::Tensor xs = torch::cat(x_chunks), log_p = torch::cat(log_p_chunks), rhat = torch::cat(rhat_chunks);
  const torch::Tensor oracle_r = s.reward == "probability" ? log_p.exp() : log_p;
  const torch::Tensor predicted = log_p.argmax(1);
  nlohmann::json rows = nlohmann::json::array();
  std::cout << "seiko_demo: tilted optima of " << s.tilt_samples << " pretrained samples (class averages)\n"
            << "  reward model    alpha  accuracy  p(z|x)  KL (nats)  effective samples  diversity  class FD\n";
  for (const auto& [name, r] : {std::pair{"ensemble", rhat}, std::pair{"oracle", oracle_r}})
    for (const double alpha : s.tilt_alphas) {
      double accuracy = 0.0, probability = 0.0, kl = 0.0, effective = 0.0;
      std::vector<torch::Tensor> drawn;
      for (int64_t c = 0; c < classes; ++c) {
        const metrics::TiltedOptimum tilt = metrics::tilted_optimum(r.select(1, c), alpha);
        drawn.push_back(torch::multinomial(tilt.weights, s.final_per_prompt, /*replacement=*/true, generator));
        accuracy += (tilt.weights * predicted.eq(c).to(torch::kDouble)).sum().item<double>() / double(classes);
        probability += (tilt.weights * log_p.select(1, c).exp()).sum().item<double>() / double(classes);
        kl += tilt.kl / double(classes);
        effective += tilt.effective_samples / double(classes);
      }
      const metrics::ConditionalQuality q =
          quality.measure(xs.index_select(0, torch::cat(drawn)),
                          torch::arange(classes, torch::kLong).repeat_interleave(s.final_per_prompt));
      rows.push_back({{"reward_model", name},
                      {"alpha", alpha},
                      {"oracle_accuracy", accuracy},
                      {"oracle_probability", probability},
                      {"kl_to_pretrained", kl},
                      {"effective_samples", effective},
                      {"diversity", q.diversity},
                      {"class_fd", q.frechet}});
      std::cout << "  " << std::left << std::setw(14) << name << std::right << std::setw(7) << alpha << std::fixed
                << std::setprecision(3) << std::setw(10) << accuracy << std::setw(8) << probability
                << std::setprecision(2) << std::setw(11) << kl << std::setprecision(0) << std::setw(19) << effective
                << std::setprecision(2) << std::setw(11) << q.diversity << std::setw(10) << q.frechet
                << std::defaultfloat << std::setprecision(6) << "\n";
    }
  return rows;
}

void write_final_evaluation(const std::filesystem::path& out, const std::vector<std::string>& rows,
                            const std::vector<std::string>& class_names, const torch::Tensor& x, const torch::Tensor& z,
                            const algorithms::SeikoRound& figures, const metrics::ConditionalQuality& q,
                            nlohmann::json settings) {
  torch::Tensor images = data::to_uint8(x.cpu());
  images = images.size(1) == 1 ? images.squeeze(1) : images.permute({0, 2, 3, 1});
  io::write_npy(out / "samples.npy", images);
  io::write_npy(out / "prompts.npy", z.cpu());
  nlohmann::json per_prompt = nlohmann::json::array();
  for (const auto& p : q.prompts)
    per_prompt.push_back({{"prompt", p.prompt},
                          {"class_name", class_names[static_cast<std::size_t>(p.prompt)]},
                          {"samples", p.count},
                          {"oracle_accuracy", p.accuracy},
                          {"oracle_probability", p.probability},
                          {"diversity", p.diversity},
                          {"class_fd", p.frechet}});
  nlohmann::json metrics{{"queries_total", figures.queries_total},
                         {"eval_samples", x.size(0)},
                         {"oracle_reward_mean", figures.oracle_reward_mean},
                         {"ensemble_reward_mean", figures.ensemble_reward_mean},
                         {"uncertainty_mean", figures.uncertainty_mean},
                         {"kl_to_pretrained", figures.kl_to_pretrained},
                         {"control_points_mean", figures.control_points_mean},
                         {"oracle_accuracy", q.accuracy},
                         {"oracle_probability", q.probability},
                         {"diversity", q.diversity},
                         {"class_fd", q.frechet},
                         {"per_prompt", per_prompt}};
  metrics.update(settings);
  metrics["machine"] = examples::machine_json();
  examples::write_json(out / "metrics.json", metrics);
  print_table(rows);
  std::cout << "seiko_demo: " << (out / "rounds.csv").string() << ", " << (out / "metrics.json").string() << "\n";
}

// The schedule a noise-aware weak classifier was trained on (train_classifier
// --noise-schedule), or "none"; it must be the diffusion model's.
std::string weak_noise_schedule(const DemoSettings& s, std::string_view schedule) {
  const std::string noise =
      examples::read_json(std::filesystem::path(s.weak_dir) / "config.json").value("noise_schedule", "none");
  require(noise == "none" || noise == schedule, s.weak_dir, ": the weak classifier was trained on forward draws of ",
          noise, ", the diffusion model uses ", schedule);
  return noise;
}

// The ensemble's members: heads on the weak classifier's features, starting from its head.
reward::SharedBackboneHeads<models::ResNet18> weak_heads(const DemoSettings& s, int64_t image_size,
                                                         const torch::Device& device, at::Generator& generator) {
  models::ResNet18 weak = examples::load_classifier(s.weak_dir, image_size, device);
  return reward::SharedBackboneHeads<models::ResNet18>::copies_of(weak, weak->head(), s.ensemble_size, s.jitter,
                                                                  generator, {reward_scale(s)});
}

// The ensemble's members: fresh heads on the pretrained diffusion UNet's features
// (models::DiffusionFeatures), standardised on 5,000 unlabelled training images.
reward::SharedBackboneHeads<models::DiffusionFeatures> diffusion_heads(const DemoSettings& s,
                                                                       const examples::ImageFlags& flags,
                                                                       const models::UNet& network, int64_t classes,
                                                                       int64_t label, at::Generator& generator) {
  models::DiffusionFeatures features(network, models::DiffusionFeaturesOptions{.label = label});
  const data::ImageDataset train = examples::load_dataset(flags, data::Split::train);
  features->standardize(data::normalize_images(train.images.narrow(0, 0, std::min<int64_t>(5000, train.size()))));
  return reward::SharedBackboneHeads<models::DiffusionFeatures>::random(
      features, s.ensemble_size, classes, features->feature_dim(), generator, {reward_scale(s)});
}

// The reward ensemble: `members` fitted on the reward's scale; a noise-aware weak
// classifier makes it a reward model of the noisy state (members fitted on
// forward draws of each label's x).
template <class Members, class Optimism, class Schedule>
reward::BootstrapEnsemble<Members, Optimism> make_ensemble(const DemoSettings& s, const Schedule& schedule,
                                                           Members members, const std::string& weak_noise,
                                                           Optimism optimism, std::uint64_t seed,
                                                           const distributed::Group& group) {
  return reward::BootstrapEnsemble<Members, Optimism>(
      std::move(members),
      {.fit = {.steps = s.ensemble_steps,
               .batch = 1 << 20,
               .learning_rate = s.ensemble_lr,
               .l2 = s.ensemble_l2,
               .anchored = s.anchored,
               .input_noise = weak_noise == "none" ? decltype(reward::MemberFitOptions::input_noise){}
                                                   : sde::forward_noise(schedule)},
       .seed = seed,
       .group = group},  // the members fitted spread over the processes
      std::move(optimism));
}

template <class Control, class Optimism, class Mss, class Schedule, class Drift>
int run(const DemoSettings& s, const examples::ImageFlags& flags, Schedule schedule, Drift pretrained, Control control,
        const std::vector<std::string>& class_names, int64_t image_size, int64_t channels, Optimism optimism, Mss mss,
        at::Generator& generator, const torch::Device& device, const distributed::Group& group) {
  const std::filesystem::path out = flags.out;
  const int64_t classes = static_cast<int64_t>(class_names.size());
  const bool main = group.is_main();  // the rank that writes
  models::ResNet18 strong = examples::load_classifier(s.oracle_dir, image_size, device);
  const data::ImageDataset test = examples::load_dataset(flags, data::Split::test);
  const QualityMeter quality(strong, test, device);
  const std::string weak_noise = weak_noise_schedule(s, Schedule::name);
  auto ensemble = make_ensemble(s, schedule, weak_heads(s, image_size, device, generator), weak_noise,
                                std::move(optimism), flags.seed, group);

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
                                   // The guidance's prior: the images' variance per pixel.
                                   .guidance_prior_variance = data::normalize_images(test.images).var().item<double>(),
                                   .reward_of_noisy_state = weak_noise != "none",
                                   .eval_samples = s.eval_samples,
                                   .chunk = 128,
                                   .seed = flags.seed};
  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), static_cast<std::size_t>(s.sample_steps));
  const Drift reference = pretrained;  // for the tilted optima: the pretrained sampler
  algorithms::ContinuousSeiko<Schedule, Drift, decltype(control), Mss, sde::Ddpm, decltype(ensemble)> seiko(
      schedule, grid, {channels, image_size, image_size}, std::move(pretrained), std::move(control),
      std::move(ensemble), options, mss, kSolver, objective::PathKl{s.alpha, s.beta}, device, group);
  const auto feedback_path = out / "feedback.sqlite", checkpoint_path = out / "seiko.pt";
  require(s.resume || !std::filesystem::exists(feedback_path), feedback_path.string(),
          " exists: pass --resume to continue that run, or choose another --out");
  reward::FeedbackDataset feedback(feedback_path);
  std::optional<int64_t> resumed_after;
  if (s.resume && std::filesystem::exists(checkpoint_path)) {
    resumed_after = seiko.load(checkpoint_path, feedback);
    if (main)
      std::cerr << "seiko_demo: resuming after round " << *resumed_after << " with " << feedback.size() << " labels\n";
  }
  // Rank 0 alone writes; every rank takes part in the rounds (their collectives).
  std::optional<io::MetricsLog> rounds;
  if (main) rounds.emplace(rounds_log(out, resumed_after));

  const torch::Tensor prompts = torch::arange(classes, torch::kLong).repeat_interleave(s.per_prompt);
  const auto picture = [&](int64_t round) {
    const torch::Tensor images = seiko.sample(prompts.size(0), false, prompts).x;
    if (main)
      io::write_png(out / ("round_" + std::to_string(round) + ".png"),
                    io::image_grid(images.clamp(-1, 1), s.per_prompt));
  };
  const auto measured = [&] {
    const auto& samples = seiko.last_evaluation();
    return quality.measure(samples.x, samples.z);
  };
  const auto add_row = [&](const algorithms::SeikoRound& round) {
    if (main) add_round(*rounds, round, measured());
  };
  // The queries column counts the store's rows asked up to the row's round, so a
  // resumed run reports what an uninterrupted one does.
  const auto asked_through = [&](int64_t round) {
    int64_t asked = 0;
    for (int64_t r = 0; r <= round; ++r) asked += feedback.asked_in_round(r);
    return asked;
  };
  // The rounds, the oracle answering now or from outside the process.
  const auto drive = [&](auto& oracle) {
    if (seiko.rounds_done() == 0) {
      algorithms::SeikoRound before = seiko.evaluate(oracle);
      before.queries_total = asked_through(0);
      add_row(before);
      picture(0);
    }
    train(
        seiko.rounds() - seiko.rounds_done(),
        [&] {
          algorithms::SeikoRound round = seiko.run_round(oracle, feedback);
          round.queries_total = asked_through(round.round);
          return round;
        },
        // The row first: a kill between the two resumes from the previous round's
        // checkpoint, which runs this round again and rewrites its row.
        callbacks::Observe([&](int64_t, const algorithms::SeikoRound& round) {
          add_row(round);
          picture(round.round);
          seiko.save(checkpoint_path);
        }));
    // The final evaluation: final_per_prompt samples of every prompt, kept as NumPy
    // arrays, their figures in metrics.json.
    {
      seiko.set_eval_samples(classes * s.final_per_prompt);
      algorithms::SeikoRound final_round = seiko.evaluate(oracle);
      final_round.queries_total = asked_through(seiko.rounds());
      const auto& samples = seiko.last_evaluation();
      if (!main) return;
      const metrics::ConditionalQuality q = quality.measure(samples.x, samples.z);
      const nlohmann::json tilts = s.tilt_samples == 0
                                       ? nlohmann::json::array()
                                       : tilted_optima(s, schedule, reference, grid, {channels, image_size, image_size},
                                                       seiko.reward(), strong, quality, classes, generator, device);
      write_final_evaluation(out, rounds->rows(), class_names, samples.x, samples.z, final_round, q,
                             {{"variant", s.variant},
                              {"rounds", seiko.rounds()},
                              {"control", s.control},
                              {"reward", s.reward},
                              {"oracle_script", s.oracle_script},
                              {"external_labels", s.external_labels},
                              {"guidance", s.guidance},
                              {"guidance_gain", gain_of(seiko.policy())},
                              {"optimal_from", s.optimal_from},
                              {"null_prompt", s.null_prompt},
                              {"optimal_cfg", s.optimal_cfg},
                              {"tuned_scale", s.tuned_scale},
                              {"steer_until", s.steer_until},
                              {"alpha", s.alpha},
                              {"beta", s.beta},
                              {"tilted_optima", tilts},
                              {"seed", flags.seed}});
    }
  };
  try {
    if (s.external_labels) {
      const std::optional<double> wait = s.label_wait < 0 ? std::nullopt : std::optional<double>(s.label_wait);
      reward::ExternalOracle oracle(feedback, {.images_dir = out / "queries", .wait_seconds = wait});
      drive(oracle);
    } else {
      reward::Oracle oracle(oracle_reward(s, strong, device),
                            {.noise_std = s.noise, .budget = std::nullopt, .seed = flags.seed + 1});
      // The oracle's count and noise stream continue where the stored labels end.
      if (feedback.oracle_state()) oracle.restore(*feedback.oracle_state());
      drive(oracle);
    }
  } catch (const reward::LabelsPending& pending) {
    std::cerr << "seiko_demo: " << pending.what()
              << " with --resume (pictures of the queries: " << (out / "queries").string() << "/<id>.png)\n";
    return kLabelsPendingExit;
  } catch (const algorithms::Diverged& diverged) {
    // The round's checkpoint is written after its row, so seiko.pt holds the last
    // good round; its labels are in the store.
    std::cerr << "seiko_demo: " << diverged.what() << "; " << checkpoint_path.string() << " holds round "
              << seiko.rounds_done() << ", the last good one, and every label is in " << feedback_path.string() << "\n";
    return kDivergedExit;
  }
  return 0;
}

// The oracle as DDPO's and DPOK's reward: every chain they score is a paid query.
template <class Oracle>
struct PaidQueries {
  Oracle* oracle;
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& z) const {
    return oracle->query(x, z).to(x.device(), x.scalar_type());
  }
};

// The unconditional model's weights in a class-conditional UNet whose class
// embedding starts at zero: it starts as the pretrained model for every prompt and
// can learn to meet the prompts (what DDPO, DPOK and score matching tune).
models::UNet conditional_copy(const DemoSettings& s, const nlohmann::json& config, int64_t classes,
                              const torch::Device& device) {
  models::UNetOptions options = examples::unet_options_from_json(config.at("unet"));
  require(options.num_classes == 0, "--variant ", s.variant, " fine-tunes an unconditional --diffusion model");
  options.num_classes = classes;
  models::UNet network(options);
  const auto weights = std::filesystem::path(s.diffusion_dir) / "model.pt";
  const auto report =
      models::load_weights(*network, weights, examples::recorded_weights(config, "model.pt"), {.strict = false});
  require(report.unexpected.empty() && report.missing == std::vector<std::string>{"label_emb.weight"}, weights.string(),
          ": expected the unconditional UNet's weights, all but the class embedding");
  {
    torch::NoGradGuard no_grad;
    network->named_parameters()["label_emb.weight"].zero_();
  }
  network->to(device);
  network->eval();  // no dropout: the log-densities must be the sampler's
  return network;
}

// A tuned drift measured against the pretrained one on SEIKO's axes: samples for
// given prompts with their path KL, the oracle's reward and accuracy, diversity
// and class FD, the round pictures; in chunks. The measured samples come from
// `measured`, the solver the tuned model samples with: kNoisySolver for DDPO and
// DPOK, whose policies are its Gaussian steps (it has a density at every step),
// kSolver for score matching, as for SEIKO (its last step is deterministic: the
// KL counts it 0, so the tuned drift must hand over to the pretrained one before
// it). Every sample is clean: the measured ones end at their last step's mean,
// the others (pictures, queries, a pool of training data) come from kSolver. The
// forward variance would leave noise in the images (std about 0.07, the root of
// the last of 25 cosine steps' beta), which lowers the oracle's accuracy on them
// and which denoising at smaller noise levels cannot learn from.
template <class Schedule, class Pretrained, class Oracle>
class TunedDriftRuns {
 public:
  TunedDriftRuns(const DemoSettings& s, const Schedule& schedule, const Pretrained& pretrained, sde::Ddpm measured,
                 sde::TimeGrid grid, std::vector<int64_t> shape, int64_t classes, Oracle& oracle,
                 const QualityMeter& quality, std::filesystem::path out, at::Generator& generator, torch::Device device)
      : s_(s),
        schedule_(schedule),
        pretrained_(pretrained),
        measured_(measured),
        grid_(std::move(grid)),
        shape_(std::move(shape)),
        classes_(classes),
        oracle_(oracle),
        quality_(quality),
        out_(std::move(out)),
        generator_(generator),
        device_(device) {}

  // Samples of `model` for prompts [n] and their path KL to the pretrained model
  // (without with_kl: clean samples, and no KL); from time pretrained_from on,
  // `model` is the pretrained model (steered's handover).
  template <class Model>
  std::pair<torch::Tensor, torch::Tensor> sample(const Model& model, const torch::Tensor& prompts, bool with_kl = true,
                                                 double pretrained_from = kNever) const {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> xs, kls;
    for (int64_t begin = 0; begin < prompts.size(0); begin += 128) {
      const torch::Tensor z = prompts.narrow(0, begin, std::min<int64_t>(128, prompts.size(0) - begin)).to(device_);
      std::vector<int64_t> shape{z.size(0)};
      shape.insert(shape.end(), shape_.begin(), shape_.end());
      const torch::Tensor x_init =
          sde::sample_prior(schedule_, shape, generator_, torch::TensorOptions(torch::kFloat).device(device_));
      if (with_kl) {
        auto run =
            objective::sample_with_path_kl(schedule_, model, pretrained_, measured_, grid_, x_init, z, generator_,
                                           {.clean_last_step = true, .reference_from = pretrained_from});
        xs.push_back(run.x);
        kls.push_back(run.kl);
      } else {
        sde::IntegrateOptions options;
        options.record_x0 = false;
        options.generator = generator_;
        xs.push_back(sde::integrate(schedule_, model, kSolver, grid_, x_init, z, options).final_state);
      }
    }
    return {torch::cat(xs), with_kl ? torch::cat(kls) : torch::Tensor{}};
  }

  // n samples, the prompts spread evenly, and their figures (the ensemble's
  // columns NaN: the caller fills them where it has a reward model).
  template <class Model>
  std::tuple<algorithms::SeikoRound, metrics::ConditionalQuality, torch::Tensor, torch::Tensor> evaluate(
      const Model& model, int64_t round, int64_t n, double seconds, double pretrained_from = kNever) const {
    const torch::Tensor prompts = torch::arange(n, torch::kLong) % classes_;
    const auto [x, kl] = sample(model, prompts, true, pretrained_from);
    algorithms::SeikoRound figures;
    figures.round = round;
    figures.queries_total = oracle_.queries();
    figures.oracle_reward_mean = oracle_.ground_truth(x, prompts.to(device_)).mean().template item<double>();
    figures.ensemble_reward_mean = figures.uncertainty_mean = std::numeric_limits<double>::quiet_NaN();
    figures.kl_to_pretrained = kl.mean().template item<double>();
    figures.seconds = seconds;
    return {figures, quality_.measure(x, prompts), x, prompts};
  }

  template <class Model>
  void picture(const Model& model, int64_t round) const {
    const torch::Tensor images =
        sample(model, torch::arange(classes_, torch::kLong).repeat_interleave(s_.per_prompt), false).first;
    io::write_png(out_ / ("round_" + std::to_string(round) + ".png"),
                  io::image_grid(images.clamp(-1, 1), s_.per_prompt));
  }

 private:
  const DemoSettings& s_;
  const Schedule& schedule_;
  const Pretrained& pretrained_;
  sde::Ddpm measured_;
  sde::TimeGrid grid_;
  std::vector<int64_t> shape_;
  int64_t classes_;
  Oracle& oracle_;
  const QualityMeter& quality_;
  std::filesystem::path out_;
  at::Generator& generator_;
  torch::Device device_;
};

// The settings a run that tunes the UNet records in metrics.json.
nlohmann::json unet_run_settings(const DemoSettings& s, const examples::ImageFlags& flags) {
  return {
      {"variant", s.variant}, {"rounds", s.queries.size()}, {"reward", s.reward}, {"oracle_script", s.oracle_script},
      {"alpha", s.alpha},     {"learning_rate", s.pg_lr},   {"seed", flags.seed}};
}

// DDPO or DPOK on the UNet itself, at the oracle budget SEIKO gets: the
// conditional copy of the unconditional UNet, each chain's terminal reward one
// paid query, and a round the iterations (batch chains each) that spend that
// round's queries.
template <class Schedule, class MakeAlgorithm>
int run_policy_gradient(const DemoSettings& s, const examples::ImageFlags& flags, const Schedule& schedule,
                        const nlohmann::json& config, const std::vector<std::string>& class_names,
                        at::Generator& generator, const torch::Device& device, MakeAlgorithm make_algorithm) {
  const std::filesystem::path out = flags.out;
  const int64_t classes = static_cast<int64_t>(class_names.size()), size = config.at("image_size");
  models::ResNet18 strong = examples::load_classifier(s.oracle_dir, size, device);
  const QualityMeter quality(strong, examples::load_dataset(flags, data::Split::test), device);
  models::UNet network = conditional_copy(s, config, classes, device);
  using Score = models::EpsilonScore<Schedule, models::UNet>;
  const Score pretrained(schedule, network, {.time_scale = config.at("time_scale"), .guidance = 0.0, .null_label = -1});
  using Oracle = reward::Oracle<DemoOracleReward>;
  Oracle oracle(oracle_reward(s, strong, device),
                {.noise_std = s.noise, .budget = std::nullopt, .seed = flags.seed + 1});
  const int64_t channels = network->options().in_channels;
  auto algorithm =
      make_algorithm(pretrained, PaidQueries<Oracle>{&oracle}, algorithms::ChainShape{{channels, size, size}, classes});
  algorithm.policy().network().ptr()->eval();
  const TunedDriftRuns runs(s, schedule, pretrained, kNoisySolver, algorithm.grid(), {channels, size, size}, classes,
                            oracle, quality, out, generator, device);

  io::MetricsLog rounds = rounds_log(out);
  const auto add_row = [&](const algorithms::SeikoRound& figures, const metrics::ConditionalQuality& q) {
    add_round(rounds, figures, q);
    runs.picture(algorithm.policy(), figures.round);
  };
  {
    const auto [figures, q, x, z] = runs.evaluate(algorithm.policy(), 0, s.eval_samples, 0.0);
    add_row(figures, q);
  }
  for (std::size_t round = 0; round < s.queries.size(); ++round) {
    const int64_t iterations = std::max<int64_t>(1, s.queries[round] / s.batch);
    const TrainOutcome trained = train(
        iterations, [&] { return algorithm.train_iteration(generator); },
        callbacks::ProgressBar(s.variant + " round " + std::to_string(round + 1), iterations));
    const auto [figures, q, x, z] =
        runs.evaluate(algorithm.policy(), int64_t(round) + 1, s.eval_samples, trained.seconds);
    add_row(figures, q);
  }
  const auto [figures, q, x, z] =
      runs.evaluate(algorithm.policy(), int64_t(s.queries.size()), classes * s.final_per_prompt, 0.0);
  write_final_evaluation(out, rounds.rows(), class_names, x, z, figures, q, unet_run_settings(s, flags));
  return 0;
}

// The drift a tuned model samples with: its difference from the pretrained drift
// scaled by --tuned-scale (guidance: above 1 a sharper tilt), until --steer-until
// of the horizon, the pretrained drift after (the path KL accrues before it). It
// never steers the last of the --sample-steps steps: kSolver's is deterministic,
// without a density, and SEIKO places no control before it either (the switch
// falls inside the step before it, clear of rounding at the grid's times).
template <class Schedule>
double handover_time(const DemoSettings& s, const Schedule& schedule) {
  const double last_step = 1.0 - 1.5 / double(s.sample_steps);
  return std::min(s.steer_until, last_step) * schedule.horizon();
}

template <class Schedule, DriftModel Tuned, DriftModel Pretrained>
auto steered(const DemoSettings& s, const Schedule& schedule, Tuned tuned, const Pretrained& pretrained) {
  return models::SwitchedDrift(models::GuidedDrift(std::move(tuned), pretrained, s.tuned_scale), pretrained,
                               handover_time(s, schedule));
}

// The pool optima, a row (round, then the other columns) per round, as JSON objects.
nlohmann::json optimum_rows_json(const torch::Tensor& rows, const std::vector<std::string>& columns) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t r = 0; r < rows.size(0); ++r) {
    nlohmann::json row{{columns.front(), rows[r][0].item<int64_t>()}};
    for (std::size_t c = 1; c < columns.size(); ++c) row[columns[c]] = rows[r][int64_t(c)].item<double>();
    out.push_back(std::move(row));
  }
  return out;
}

// SEIKO's objective solved on a pool of pretrained samples and distilled into the
// UNet by weighted denoising score matching (algorithms/tilted_score_matching.hpp):
// each round asks the oracle about samples of the current model (the previous
// round's optimum, drawn from the pool by its weights), refits the reward
// ensemble, takes the closed-form optimum of E[optimistic r_hat] - alpha KL(p ||
// p_pre) - beta KL(p || p_prev) on the pool (the last round, whose model is
// delivered, with the ensemble's mean r_hat unless --final-tilt optimistic: no
// queries follow it to explore), and trains the conditional copy of the
// UNet toward it for --optimize-steps steps of --batch pool draws. Each round
// reports the pool optimum it aims at (the oracle's accuracy under the tilt, its KL
// and effective samples) beside what the tuned model reaches.
template <class Schedule, class Optimism>
int run_score_matching(const DemoSettings& s, const examples::ImageFlags& flags, const Schedule& schedule,
                       const nlohmann::json& config, const std::vector<std::string>& class_names, Optimism optimism,
                       at::Generator& generator, const torch::Device& device, const distributed::Group& group) {
  const std::filesystem::path out = flags.out;
  const int64_t classes = static_cast<int64_t>(class_names.size()), size = config.at("image_size");
  models::ResNet18 strong = examples::load_classifier(s.oracle_dir, size, device);
  const QualityMeter quality(strong, examples::load_dataset(flags, data::Split::test), device);
  models::UNet network = conditional_copy(s, config, classes, device);
  // The reward model reads clean samples: heads on the weak classifier's or on the
  // pretrained UNet's features (through the conditional copy, whose zero class
  // embedding makes any label read the pretrained network).
  const auto with_ensemble = [&](auto&& body) {
    if (s.reward_features == "diffusion")
      return body(make_ensemble(s, schedule, diffusion_heads(s, flags, network, classes, 0, generator), "none",
                                std::move(optimism), flags.seed, group));
    require(weak_noise_schedule(s, Schedule::name) == "none", "--variant score-matching reads the reward model at ",
            "clean samples: --weak needs a classifier of clean images, not ", s.weak_dir);
    return body(make_ensemble(s, schedule, weak_heads(s, size, device, generator), "none", std::move(optimism),
                              flags.seed, group));
  };
  return with_ensemble([&](auto ensemble) {
    models::UNet model = models::clone_module(network), ema = models::clone_module(network);
    for (auto& p : network->parameters()) p.requires_grad_(false);
    using Score = models::EpsilonScore<Schedule, models::UNet>;
    const double time_scale = config.at("time_scale");
    const Score pretrained(schedule, network, {.time_scale = time_scale, .guidance = 0.0, .null_label = -1});
    using Oracle = reward::Oracle<DemoOracleReward>;
    Oracle oracle(oracle_reward(s, strong, device),
                  {.noise_std = s.noise, .budget = std::nullopt, .seed = flags.seed + 1});
    // A killed run resumes from its last round: pool.pt holds the pool (and the
    // generator after drawing it), score_matching.pt each round's state, and the
    // labels of a round cut short stay in feedback.sqlite (asked again of no one).
    const auto feedback_path = out / "feedback.sqlite", pool_path = out / "pool.pt",
               checkpoint_path = out / "score_matching.pt";
    require(s.resume || !std::filesystem::exists(feedback_path), feedback_path.string(),
            " exists: pass --resume to continue that run, or choose another --out");
    reward::FeedbackDataset feedback(feedback_path);
    if (feedback.oracle_state()) oracle.restore(*feedback.oracle_state());
    const int64_t channels = network->options().in_channels;
    const TunedDriftRuns runs(s, schedule, pretrained, kSolver,
                              sde::TimeGrid::uniform(schedule.horizon(), static_cast<std::size_t>(s.sample_steps)),
                              {channels, size, size}, classes, oracle, quality, out, generator, device);

    // The pool, and the oracle's view of it (to report the optimum each round aims at).
    torch::Tensor pool, pool_class;
    io::Checkpoint pool_entries{.generators = examples::run_generators(generator, device),
                                .tensors = {{"pool", &pool}, {"pool_class", &pool_class}}};
    const bool resuming = s.resume && std::filesystem::exists(pool_path);
    if (resuming) {
      io::load_checkpoint(pool_path, pool_entries);
      require(pool.size(0) == s.pool, pool_path.string(), " holds a pool of ", pool.size(0), ", not --pool ", s.pool);
      pool = pool.to(device);
    } else {
      require(feedback.empty(), feedback_path.string(), " holds labels but ", pool_path.string(),
              " is missing: that run cannot be resumed; choose another --out");
      io::Progress progress("score-matching pool", s.pool);
      std::vector<torch::Tensor> parts;
      for (int64_t begin = 0; begin < s.pool; begin += 512) {
        const int64_t n = std::min<int64_t>(512, s.pool - begin);
        parts.push_back(runs.sample(pretrained, torch::zeros({n}, torch::kLong), false).first);
        progress.update(begin + n);
      }
      pool = torch::cat(parts);
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> predicted;
      for (int64_t begin = 0; begin < s.pool; begin += 256)
        predicted.push_back(strong->forward(pool.narrow(0, begin, std::min<int64_t>(256, s.pool - begin))).argmax(1));
      pool_class = torch::cat(predicted).cpu();
      io::save_checkpoint(pool_path, pool_entries);
    }
    algorithms::TiltedScoreMatching<Schedule, models::UNet> tuner(
        schedule, model, ema, pool, classes,
        {.alpha = s.alpha,
         .beta = s.beta,
         .batch = s.batch,
         .denoising = {.learning_rate = s.pg_lr,
                       .ema_decay = 0.99,
                       .time_scale = time_scale,
                       .learning_rate_factors = {{"label_emb", s.embedding_lr_factor}},
                       .min_snr_gamma = s.min_snr_gamma}});
    const auto tuned = [&] { return steered(s, schedule, tuner.trainer().score(), pretrained); };
    // The round's optimum on the pool, in the oracle's terms (class averages): a row
    // (round, accuracy, KL, effective samples) per round, in the checkpoint too.
    const std::vector<std::string> optimum_columns{"round", "oracle_accuracy", "kl_to_pretrained", "effective_samples"};
    torch::Tensor optima = torch::zeros({0, int64_t(optimum_columns.size())}, torch::kDouble);
    const auto aim = [&](int64_t round, const std::vector<algorithms::PoolTilt>& tilts) {
      double accuracy = 0.0, kl = 0.0, effective = 0.0;
      for (int64_t c = 0; c < classes; ++c) {
        accuracy += (tuner.log_weights().select(1, c).exp() * pool_class.eq(c).to(torch::kDouble))
                        .sum()
                        .template item<double>();
        kl += tilts[static_cast<std::size_t>(c)].kl;
        effective += tilts[static_cast<std::size_t>(c)].effective_samples;
      }
      const std::vector<double> row{double(round), accuracy / double(classes), kl / double(classes),
                                    effective / double(classes)};
      optima = torch::cat({optima, torch::tensor(row, torch::kDouble).unsqueeze(0)});
      std::cout << "score-matching round " << round << ": the pool optimum has oracle accuracy "
                << accuracy / double(classes) << " at " << kl / double(classes) << " nats, "
                << effective / double(classes) << " effective samples per prompt" << std::endl;
    };

    // A round's checkpoint: the tuner, the reward ensemble, the generators (the
    // UNet's dropout draws from LibTorch's default one), and the pool optima so far.
    // The queries draw from a generator of their own, so that which samples the
    // oracle is asked about follows from the labels so far alone, not from how many
    // denoising steps or evaluation samples ran between rounds: runs that differ
    // only in how they train (--round-steps, --min-snr, --eval-samples) ask the same
    // labels, and a run that trains nothing (--round-steps 0 ...) asks a full run's.
    at::Generator query_generator = make_generator(mix_seeds(flags.seed, 0x717565727973ull));  // "querys" in ASCII
    io::Checkpoint round_entries{.generators = examples::run_generators(generator, device),
                                 .tensors = {{"pool_optima", &optima}}};
    round_entries.generators.emplace_back("queries", query_generator);
    tuner.add_to(round_entries);
    ensemble.add_to(round_entries);
    const auto save_round = [&](int64_t round) {
      round_entries.step = round;
      io::save_checkpoint(checkpoint_path, round_entries);
    };
    std::optional<int64_t> resumed_after;
    if (resuming && std::filesystem::exists(checkpoint_path)) {
      optima = torch::Tensor();  // as many rows as rounds done: the file's shape
      resumed_after = io::load_checkpoint(checkpoint_path, round_entries);
      require(*resumed_after >= 0 && *resumed_after <= int64_t(s.queries.size()), checkpoint_path.string(),
              " is at round ", *resumed_after, " of a run of ", s.queries.size(), " rounds");
      ensemble.refresh(feedback);
      tuner.trainer().set_steps(
          std::accumulate(s.round_steps.begin(), s.round_steps.begin() + *resumed_after, int64_t{0}));
      std::cerr << "seiko_demo: resuming after round " << *resumed_after << " with " << feedback.size() << " labels\n";
    }

    io::MetricsLog rounds = rounds_log(out, resumed_after);
    const auto measure = [&](int64_t round, int64_t n, double seconds) {
      auto [figures, q, x, z] = runs.evaluate(tuned(), round, n, seconds, handover_time(s, schedule));
      torch::NoGradGuard no_grad;
      const auto estimate = ensemble.estimate(x, z.to(device));
      figures.ensemble_reward_mean = estimate.mean.mean().template item<double>();
      figures.uncertainty_mean = estimate.uncertainty.mean().template item<double>();
      return std::tuple{figures, q, x, z};
    };
    if (!resumed_after) {
      const auto [figures, q, x, z] = runs.evaluate(pretrained, 0, s.eval_samples, 0.0, 0.0);
      add_round(rounds, figures, q);
      runs.picture(pretrained, 0);
      save_round(0);
    }
    for (std::size_t i = std::size_t(resumed_after.value_or(0)); i < s.queries.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      const int64_t round = int64_t(i) + 1;
      // The labels are asked of the previous round's optimum itself, drawn from the
      // pool (the pretrained model in round 1), not of the UNet distilled from it:
      // the UNet lags its optimum most on a prompt's rare modes, and a prompt whose
      // class the labels never showed stays unlearnt (examples/RESULTS.md, "Prompts
      // that no label showed"). What a killed run asked about in this round is not
      // asked again.
      reward::RoundQueries queries(feedback, round);
      const torch::Tensor prompts = torch::randint(classes, {s.queries[i]}, query_generator);
      const torch::Tensor rows = tuner.draw_queries(prompts, query_generator).to(device);
      for (int64_t asked = 0; asked < s.queries[i]; asked += 128) {
        const int64_t count = std::min<int64_t>(128, s.queries[i] - asked);
        queries.ask(oracle, pool.index_select(0, rows.narrow(0, asked, count)),
                    prompts.narrow(0, asked, count).to(device));
      }
      ensemble.fit(feedback);
      std::vector<torch::Tensor> rewards;
      {
        torch::NoGradGuard no_grad;
        const torch::Tensor every_class = torch::arange(classes, torch::kLong).to(device);
        // Optimism explores through the next round's queries; the last round's
        // model has none after it, so --final-tilt mean aims it at the greedy reward,
        // and --optimistic-rounds ends exploring sooner.
        const bool greedy = (round == int64_t(s.queries.size()) && s.final_tilt == "mean") ||
                            (s.optimistic_rounds >= 0 && round > s.optimistic_rounds);
        for (int64_t begin = 0; begin < s.pool; begin += 256) {
          const torch::Tensor part = pool.narrow(0, begin, std::min<int64_t>(256, s.pool - begin));
          rewards.push_back(
              (greedy ? ensemble.mean_each(part, every_class) : ensemble.optimistic_each(part, every_class)).cpu());
        }
      }
      aim(round, tuner.retilt(torch::cat(rewards)));
      train(
          s.round_steps[i], [&] { return tuner.step(generator); },
          callbacks::ProgressBar("score-matching round " + std::to_string(round), s.round_steps[i]));
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const auto [figures, q, x, z] = measure(round, s.eval_samples, seconds);
      // The row first: a kill before the checkpoint runs this round again and
      // rewrites its row.
      add_round(rounds, figures, q);
      runs.picture(tuned(), round);
      save_round(round);
    }
    const auto [figures, q, x, z] = measure(int64_t(s.queries.size()), classes * s.final_per_prompt, 0.0);
    nlohmann::json settings = unet_run_settings(s, flags);
    settings.update({{"beta", s.beta},
                     {"bonus", s.bonus},
                     {"final_tilt", s.final_tilt},
                     {"optimistic_rounds", s.optimistic_rounds},
                     {"pool", s.pool},
                     {"reward_features", s.reward_features},
                     {"pool_optima", optimum_rows_json(optima, optimum_columns)},
                     {"embedding_lr_factor", s.embedding_lr_factor},
                     {"min_snr_gamma", s.min_snr_gamma},
                     {"steer_until", s.steer_until},
                     {"tuned_scale", s.tuned_scale},
                     {"optimize_steps", s.optimize_steps},
                     {"round_steps", s.round_steps}});
    write_final_evaluation(out, rounds.rows(), class_names, x, z, figures, q, settings);
    // The tuned network, as a class-conditional pretrain_diffusion output: `sample`
    // draws from it, and --optimal-from evaluates it again at another --tuned-scale
    // or --steer-until without training it again.
    nlohmann::json tuned_config = config;
    tuned_config["conditional"] = true;
    tuned_config["unet"]["num_classes"] = classes;
    tuned_config["fine_tuned_from"] = s.diffusion_dir;
    tuned_config["sha256"] = {{"model.pt", models::save_state_dict(*tuner.trainer().ema(), out / "model.pt")}};
    examples::write_json(out / "config.json", tuned_config);
    return 0;
  });
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
  app.add_option("--oracle-script", s.oracle_script,
                 "a TorchScript reward model as the oracle: forward(images [B, C, H, W] in [-1, 1], prompts [B] "
                 "int64) -> rewards [B], on the scale --reward names; --oracle still measures the samples")
      ->check(CLI::ExistingFile);
  app.add_flag("--external-labels", s.external_labels,
               "labels from outside the process: each round's queries become rows with label NULL in "
               "feedback.sqlite (pictures in queries/<id>.png), and the round goes on once something fills them in");
  app.add_option("--label-wait", s.label_wait,
                 "with --external-labels, seconds to wait for a round's labels before stopping (exit 3; go on "
                 "with --resume); default: as long as it takes");
  app.add_option("--reward-features", s.reward_features,
                 "the reward ensemble's backbone: weak (the --weak classifier's features, heads from its head) or "
                 "diffusion (the pretrained UNet's, fresh heads; the default of --variant score-matching, the only "
                 "variant that takes it)")
      ->check(CLI::IsMember({"weak", "diffusion"}));
  app.add_option("--weak", s.weak_dir, "train_classifier --strength weak output (the ensemble's start)");
  app.add_option("--variant", s.variant,
                 "mean-std, max, thompson, ucb, greedy, discrete, uniform, non-adaptive (SEIKO), ddpo, dpok or "
                 "score-matching (SEIKO's objective solved on a pool of pretrained samples)")
      ->check(CLI::IsMember(kVariants));
  app.add_option("--control", s.control,
                 "impulse (the state jumps at a control time) or held (a drift until the next measured time)")
      ->check(CLI::IsMember({"impulse", "held"}));
  app.add_option("--queries", s.queries,
                 "oracle queries per round (small: 64 128 256, score-matching 128 256 512; paper: 1024 ... 8192)");
  app.add_option("--sample-steps", s.sample_steps, "DDPM steps (small: 25, paper: 100)")->check(CLI::PositiveNumber);
  app.add_option("--batch", s.batch, "trajectories per optimisation step (small: 16, paper: 64; score-matching: 64)")
      ->check(CLI::PositiveNumber);
  app.add_option("--optimize-steps", s.optimize_steps,
                 "optimisation steps per round (small: 40, paper: 200; score-matching: 700, 2000 in the last "
                 "round, half as many in each before it)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-samples", s.eval_samples, "samples measured after each round (small: 200, paper: 1000)")
      ->check(CLI::PositiveNumber);
  app.add_option("--top-k", s.top_k, "control points per trajectory (mean-std, max, thompson, ucb, greedy)")
      ->check(CLI::PositiveNumber);
  app.add_option("--measure-every", s.measure_every, "sampler steps between measured (controllable) times")
      ->check(CLI::PositiveNumber);
  app.add_option("--reward", s.reward, "the oracle's reward: log-probability (log p(z | x)) or probability (p(z | x))")
      ->check(CLI::IsMember({"log-probability", "probability"}));
  app.add_option("--alpha", s.alpha,
                 "weight of the KL to the pretrained model (nats per unit of reward; score-matching: 0.05)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--beta", s.beta, "weight of the KL to the previous round (score-matching: 0)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--guidance", s.guidance,
                 "the control's initial guidance gain, in units of 1 / alpha (0: the control network alone)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--learn-gain,!--fixed-gain", s.learn_gain, "train the guidance gain with the control network");
  app.add_option("--lr", s.lr, "AdamW learning rate of the control and initial distribution")
      ->check(CLI::PositiveNumber);
  app.add_option("--bonus", s.bonus, "c of mean + c std and of the feature UCB")->check(CLI::NonNegativeNumber);
  app.add_option("--noise", s.noise, "oracle label noise sigma")->check(CLI::NonNegativeNumber);
  app.add_option("--ensemble-size", s.ensemble_size, "reward ensemble members")
      ->check(CLI::Range(int64_t{2}, int64_t{64}));
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
  app.add_option("--final-per-prompt", s.final_per_prompt,
                 "samples per prompt of the final evaluation (samples.npy, metrics.json)")
      ->check(CLI::Range(int64_t{2}, int64_t{100000}));
  app.add_option("--tune-drift", s.tune_drift,
                 "also fine-tune the UNet's parameters whose names start with these prefixes (\"\" for all)");
  app.add_option("--pg-lr", s.pg_lr,
                 "ddpo, dpok, score-matching: Adam learning rate of the UNet (score-matching: 3e-4)")
      ->check(CLI::PositiveNumber);
  app.add_option("--embedding-lr-factor", s.embedding_lr_factor,
                 "score-matching: the class embedding's learning rate (it starts at zero) as a multiple of --pg-lr")
      ->check(CLI::PositiveNumber);
  app.add_option("--steer-until", s.steer_until,
                 "score-matching and --optimal-from: sample with the tuned model until this fraction of the path, "
                 "then with the pretrained one (the path KL accrues before it; score-matching: 0.75)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--tuned-scale", s.tuned_scale,
                 "score-matching and --optimal-from: sample with the pretrained drift plus this multiple of the tuned "
                 "model's difference from it (1: the tuned model; above 1: a sharper tilt, like classifier-free "
                 "guidance, at about its square in KL)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--final-tilt", s.final_tilt,
                 "score-matching: the reward the last round's model is tilted by: mean (the ensemble's greedy "
                 "estimate, the default: optimism explores, and no queries follow the last round) or optimistic "
                 "(as the rounds before it)")
      ->check(CLI::IsMember({"optimistic", "mean"}));
  app.add_option("--optimistic-rounds", s.optimistic_rounds,
                 "score-matching: tilt by the optimistic reward in the first N rounds only, by the mean after them "
                 "(explore, then commit; -1, the default: every round --final-tilt allows)")
      ->check(CLI::Range(int64_t(-1), std::numeric_limits<int64_t>::max()));
  app.add_option("--min-snr", s.min_snr_gamma,
                 "score-matching: weigh each denoising sample's loss by min(SNR, gamma) / SNR (Min-SNR-gamma; "
                 "default 5; 0: unweighted), which takes the low-noise steps' share of the gradient away from them")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--round-steps", s.round_steps,
                 "score-matching: denoising steps in each round, one value per --queries round (default: "
                 "--optimize-steps in the last round, half of it in each round before; 0 0 1400: the UNet learns "
                 "the last round's optimum only, since each round's labels come from the previous round's optimum "
                 "on the pool, not from the UNet)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pool", s.pool, "score-matching: pretrained samples whose tilt is each round's optimum")
      ->check(CLI::PositiveNumber);
  app.add_option("--optimal-from", s.optimal_from,
                 "no fine-tuning: control by the drift difference to the class-conditional model in this "
                 "pretrain_diffusion output (the optimal control of --reward log-probability --alpha 1, as exact as "
                 "the two models; needs --control held --measure-every 1 --optimize-steps 0)");
  app.add_option("--optimal-cfg", s.optimal_cfg,
                 "with --optimal-from: steer to that model's classifier-free guidance at scale w, eps = (1 + w) "
                 "eps(x, z) - w eps(x, null) (0: the optimal control of --alpha 1; > 0: a sharper reference at more "
                 "KL; needs a model trained with --label-dropout)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--tilt-samples", s.tilt_samples,
                 "after the run, tilt this many pretrained samples by exp(r / alpha) for the final reward model and "
                 "for the oracle: where the objective would take the sampler (metrics.json: tilted_optima)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--tilt-alpha", s.tilt_alphas, "the alphas of --tilt-samples")->check(CLI::PositiveNumber);
  app.add_flag("--null-prompt", s.null_prompt,
               "run a --diffusion model trained with --label-dropout under its null label, as the unconditional "
               "model it learned beside the conditional one");
  app.add_flag("--resume", s.resume, "continue the run in --out");
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;

  return examples::run_main("seiko_demo", [&] {
    const bool small = flags.preset == "small";
    // Score matching's optimum is as good as what its labels teach the reward model:
    // it asks twice SEIKO's small budget (examples/RESULTS.md, "The last round's tilt,
    // and how many labels").
    if (s.queries.empty())
      s.queries = !small                          ? std::vector<int64_t>{1024, 2048, 4096, 8192}
                  : s.variant == "score-matching" ? std::vector<int64_t>{128, 256, 512}
                                                  : std::vector<int64_t>{64, 128, 256};
    for (const int64_t q : s.queries) require(q >= 1, "--queries: every round needs >= 1 query, found ", q);
    // DDPO, DPOK and score matching tune the UNet in this process, with the oracle in it.
    const bool tunes_unet = s.variant == "ddpo" || s.variant == "dpok" || s.variant == "score-matching";
    require(!s.external_labels || !tunes_unet, "--external-labels: --variant ", s.variant,
            " needs an oracle in the process");
    require(!s.external_labels || s.oracle_script.empty(),
            "--external-labels and --oracle-script name two oracles; choose one");
    require(s.external_labels || s.label_wait < 0, "--label-wait needs --external-labels");
    require(s.optimal_cfg == 0.0 || !s.optimal_from.empty(), "--optimal-cfg needs --optimal-from");
    if (s.sample_steps == 0) s.sample_steps = small ? 25 : 100;
    const bool score_matching = s.variant == "score-matching";
    if (score_matching) {
      // Its measured settings (examples/RESULTS.md), where no flag says otherwise:
      // SEIKO's alpha = 1e-4 would make its tilt a point mass per prompt; 0.05
      // keeps about 150 pool samples per prompt in the last round's tilt (0.03:
      // about 100, and less diversity within a prompt than real images').
      const auto unless_given = [&](const std::string& flag, double& value, double measured) {
        if (app.count(flag) == 0) value = measured;
      };
      unless_given("--alpha", s.alpha, 0.05);
      unless_given("--beta", s.beta, 0.0);
      unless_given("--pg-lr", s.pg_lr, 3e-4);
      unless_given("--steer-until", s.steer_until, 0.75);
      // Min-SNR-5 weights: in 1,400 denoising steps a UNet closer to its optimum
      // than 2,100 unweighted ones gave (examples/RESULTS.md, "Min-SNR in three rounds").
      unless_given("--min-snr", s.min_snr_gamma, 5.0);
    }
    if (s.reward_features.empty()) s.reward_features = score_matching ? "diffusion" : "weak";
    require(s.reward_features == "weak" || score_matching, "--reward-features ", s.reward_features,
            ": the pretrained UNet's features serve --variant score-matching, whose reward model reads clean samples");
    require((s.steer_until == 1.0 && s.tuned_scale == 1.0) || score_matching || !s.optimal_from.empty(),
            "--steer-until and --tuned-scale shape a tuned model's drift: --variant score-matching or --optimal-from");
    require(s.final_tilt.empty() || score_matching, "--final-tilt: only --variant score-matching tilts a pool");
    require(s.optimistic_rounds < 0 || score_matching,
            "--optimistic-rounds: only --variant score-matching tilts a pool");
    if (score_matching && s.final_tilt.empty()) s.final_tilt = "mean";
    // Labels are asked of pool samples, each (sample, prompt) pair once.
    const int64_t labels = std::accumulate(s.queries.begin(), s.queries.end(), int64_t{0});
    require(!score_matching || labels <= s.pool, "--queries: ", labels, " labels are asked of the pool's samples, ",
            "more than --pool ", s.pool, " holds");
    if (s.batch == 0) s.batch = score_matching ? 64 : small ? 16 : 64;
    // Score matching's steps are denoising steps on pool draws: cheaper and more of them.
    if (s.optimize_steps < 0) s.optimize_steps = score_matching ? (small ? 700 : 2000) : small ? 40 : 200;
    require(s.round_steps.empty() || score_matching, "--round-steps: only --variant score-matching has them");
    require(s.min_snr_gamma == 0.0 || score_matching, "--min-snr: only --variant score-matching trains by denoising");
    require(s.round_steps.empty() || s.round_steps.size() == s.queries.size(),
            "--round-steps: needs one value per round of --queries (", s.queries.size(), "), found ",
            s.round_steps.size());
    // A round's labels come from the previous round's optimum on the pool, not from
    // the UNet, so the UNet delivered is the last round's: the rounds before it
    // train half as long, enough for their rows to show the way.
    if (score_matching && s.round_steps.empty()) {
      s.round_steps.assign(s.queries.size(), s.optimize_steps / 2);
      s.round_steps.back() = s.optimize_steps;
    }
    if (s.eval_samples == 0) s.eval_samples = small ? 200 : 1000;

    auto [generator, device, group] = examples::start_distributed_run(flags);
    require(group.alone() || (!tunes_unet && s.optimal_from.empty() && !s.external_labels),
            "--variant ddpo/dpok/score-matching, --optimal-from and --external-labels run in one process, not ",
            group.size());
    const std::filesystem::path from = s.diffusion_dir;
    require(std::filesystem::exists(from / "model.pt"), "--diffusion ", from.string(),
            ": no model.pt; run pretrain_diffusion --unconditional --out ", from.string(), " first");
    const nlohmann::json config = examples::read_json(from / "config.json");
    const models::UNetOptions unet = examples::unet_options_from_json(config.at("unet"));
    models::UNet network(unet);
    models::load_weights(*network, from / "model.pt", examples::recorded_weights(config, "model.pt"));
    network->to(device);
    network->eval();
    const auto class_names = config.at("class_names").get<std::vector<std::string>>();
    const int64_t null_label = config.value("null_label", int64_t{-1});
    require(!s.null_prompt || (config.at("conditional").get<bool>() && null_label >= 0), "--null-prompt: --diffusion ",
            from.string(), " has no null label; train it with pretrain_diffusion --label-dropout");
    // Whether the pretrained model sees the prompts.
    const bool conditional = config.at("conditional").get<bool>() && !s.null_prompt;
    const int64_t size = config.at("image_size");
    require(s.eval_samples >= 2 * int64_t(class_names.size()), "--eval-samples ", s.eval_samples,
            ": the per-prompt diversity and class FD need at least 2 samples of each of the ", class_names.size(),
            " prompts");

    return examples::with_schedule(config.at("schedule").get<std::string>(), [&](auto schedule) {
      using Schedule = decltype(schedule);
      using Score = models::EpsilonScore<Schedule, models::UNet>;
      const Score score(schedule, network, {.time_scale = config.at("time_scale"), .guidance = 0.0, .null_label = -1});
      // The prompts reach the control and the reward; an unconditional model ignores them.
      const models::PromptedDrift<Score> drift(score, conditional, s.null_prompt ? null_label : -1);
      const mss::TopK top{s.top_k};
      const int64_t channels = unet.in_channels;
      const int64_t classes = static_cast<int64_t>(class_names.size());
      const auto launch = [&](auto optimism, auto selection) {
        // The reward model's guidance (gain guidance / alpha, the tilt exp(r / alpha))
        // plus the network as a learned correction; impulses at the control times, or
        // the same controls held as a drift until the next measured time.
        policy::NetworkControl network(
            policy::ImageControlNet(policy::ImageControlNetOptions{.channels = channels,
                                                                   .classes = classes,
                                                                   .width = s.control_width,
                                                                   .image_size = size,
                                                                   .class_image_scale = s.class_image_scale}));
        network.network()->to(device);
        require(s.guidance == 0.0 || s.alpha > 0.0, "--guidance ", s.guidance,
                " needs --alpha > 0 (its gain is guidance / alpha)");
        policy::Guided guided(std::move(network),
                              {.gain = s.guidance == 0.0 ? 0.0 : s.guidance / s.alpha, .learn_gain = s.learn_gain});
        if (s.control == "held")
          return run(s, flags, schedule, drift, policy::Held(std::move(guided)), class_names, size, channels, optimism,
                     selection, generator, device, group);
        return run(s, flags, schedule, drift, std::move(guided), class_names, size, channels, optimism, selection,
                   generator, device, group);
      };
      const double dt = schedule.horizon() / double(s.sample_steps);
      if (s.variant == "ddpo")
        return run_policy_gradient(
            s, flags, schedule, config, class_names, generator, device,
            [&](const auto& pretrained, auto reward, algorithms::ChainShape shape) {
              return algorithms::Ddpo<Schedule, std::decay_t<decltype(pretrained)>, decltype(reward), sde::Ddpm>(
                  schedule, pretrained, reward, std::move(shape),
                  {.dt = dt, .batch = s.batch, .learning_rate = s.pg_lr}, kNoisySolver);
            });
      if (s.variant == "dpok")
        // DPOK's objective reward_weight r - kl_weight KL, with SEIKO's alpha: r - alpha KL.
        return run_policy_gradient(
            s, flags, schedule, config, class_names, generator, device,
            [&](const auto& pretrained, auto reward, algorithms::ChainShape shape) {
              return algorithms::Dpok<Schedule, std::decay_t<decltype(pretrained)>, decltype(reward), sde::Ddpm>(
                  schedule, pretrained, reward, std::move(shape),
                  {.dt = dt, .batch = s.batch, .learning_rate = s.pg_lr, .reward_weight = 1.0, .kl_weight = s.alpha},
                  kNoisySolver);
            });
      if (s.variant == "score-matching")
        return run_score_matching(s, flags, schedule, config, class_names, reward::optimism::MeanPlusStd{s.bonus},
                                  generator, device, group);
      if (!s.optimal_from.empty()) {
        require(s.control == "held" && s.measure_every == 1 && s.optimize_steps == 0 && conditional == false,
                "--optimal-from needs an unconditional --diffusion model, --control held, --measure-every 1 and "
                "--optimize-steps 0");
        const nlohmann::json target_config = examples::read_json(std::filesystem::path(s.optimal_from) / "config.json");
        require(target_config.at("conditional").get<bool>() &&
                    target_config.at("schedule").get<std::string>() == config.at("schedule").get<std::string>() &&
                    target_config.at("class_names") == config.at("class_names"),
                "--optimal-from ", s.optimal_from,
                ": needs a class-conditional model of the same classes and schedule");
        const int64_t target_null = target_config.value("null_label", int64_t{-1});
        require(s.optimal_cfg == 0.0 || target_null >= 0, "--optimal-cfg ", s.optimal_cfg, ": --optimal-from ",
                s.optimal_from, " has no null label; train it with pretrain_diffusion --label-dropout");
        models::UNet target_network(examples::unet_options_from_json(target_config.at("unet")));
        models::load_weights(*target_network, std::filesystem::path(s.optimal_from) / "model.pt",
                             examples::recorded_weights(target_config, "model.pt"));
        target_network->to(device);
        target_network->eval();
        const auto target =
            steered(s, schedule,
                    models::PromptedDrift<Score>(Score(schedule, target_network,
                                                       {.time_scale = target_config.at("time_scale"),
                                                        .guidance = s.optimal_cfg,
                                                        .null_label = s.optimal_cfg == 0.0 ? -1 : target_null}),
                                                 true),
                    drift);
        policy::DriftDifference optimal(schedule, kSolver, target, drift, schedule.horizon() / double(s.sample_steps));
        return run(s, flags, schedule, drift, std::move(optimal), class_names, size, channels,
                   reward::optimism::MeanPlusStd{s.bonus}, mss::EveryStep{}, generator, device, group);
      }
      const reward::optimism::MeanPlusStd mean_std{s.bonus};
      if (s.variant == "max") return launch(reward::optimism::MaxOfMembers{}, top);
      if (s.variant == "thompson") return launch(reward::optimism::Thompson{}, top);
      if (s.variant == "ucb") return launch(reward::optimism::FeatureUcb(s.bonus, 1.0), top);
      if (s.variant == "greedy") return launch(reward::optimism::Greedy{}, top);
      if (s.variant == "uniform") return launch(mean_std, mss::Uniform{s.top_k});
      if (s.variant == "discrete") return launch(mean_std, mss::EveryStep{});
      return launch(mean_std, top);
    });
  });
}
