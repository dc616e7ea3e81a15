// How the bootstrap reward ensemble learns from oracle feedback, and whether its
// uncertainty can be trusted. The oracle is the strong classifier (reward: the
// probability of the prompted class, plus label noise); the ensemble starts from
// the weak classifier. Each round asks the oracle about a doubling number of
// Fashion-MNIST test images (prompted with their own class half of the time, a
// random class otherwise), refits the ensemble on all labels so far, and measures
// it on 1,000 held-out test images against the noiseless reward.
//
// Writes into --out:
//   feedback.sqlite  every label paid for (a killed run resumes from it and asks the
//                 oracle nothing twice; the ensemble is refitted from the labels)
//   rounds.csv    per round: queries, mean |r_hat - r|, mean g_hat, coverage of
//                 |r_hat - r| <= k g_hat (k = 1, 2, 3), correlation of g_hat with
//                 the error, fit seconds; round 0 is the ensemble before feedback
//   metrics.json  the last round's figures and the run's settings
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "diffctl/data/image_dataset.hpp"
#include "diffctl/io/progress.hpp"
#include "diffctl/reward/calibration.hpp"
#include "diffctl/reward/ensemble.hpp"
#include "image_example.hpp"

using namespace diffctl;

namespace {

struct Settings {
  std::string oracle_dir = "out/oracle", weak_dir = "out/weak", members = "heads";
  int64_t ensemble_size = 4, rounds = 4, first_round = 128, held_out = 1000, steps = 300, batch = 64;
  double noise = 0.05, jitter = 0.1, lr = 3e-3, l2 = 1e-4;
};

// Runs the rounds with an ensemble of the given member type; returns the CSV.
template <class Members>
std::string run_rounds(const Settings& s, Members members, const data::ImageDataset& test, const torch::Tensor& prompts,
                       models::ResNet18 strong, const std::filesystem::path& out, const torch::Device& device,
                       nlohmann::json& last) {
  reward::Oracle oracle(reward::ClassifierReward<models::ResNet18>(strong),
                        {.noise_std = s.noise, .budget = std::nullopt, .seed = 1});
  reward::BootstrapEnsemble ensemble(
      std::move(members), {.fit = {.steps = s.steps, .batch = s.batch, .learning_rate = s.lr, .l2 = s.l2}, .seed = 2});
  reward::FeedbackDataset feedback(out / "feedback.sqlite");
  if (feedback.oracle_state()) {
    oracle.restore(*feedback.oracle_state());
    std::cerr << "reward_calibration: resuming with " << feedback.size() << " labels from " << feedback.file().string()
              << "\n";
  }

  const int64_t pool = test.size() - s.held_out;
  const torch::Tensor images = data::normalize_images(test.images);
  const torch::Tensor held_x = images.narrow(0, pool, s.held_out).to(device);
  const torch::Tensor held_z = prompts.narrow(0, pool, s.held_out).to(device);
  const torch::Tensor held_truth = oracle.ground_truth(held_x, held_z);

  std::ostringstream csv;
  csv << "round,queries,mean_abs_error,mean_uncertainty,coverage_1,coverage_2,coverage_3,error_correlation,fit_"
         "seconds\n";
  const auto record = [&](int64_t round, double seconds) {
    const auto r = reward::calibrate(ensemble, held_x, held_z, held_truth);
    char line[256];
    std::snprintf(line, sizeof line, "%lld,%lld,%.4f,%.4f,%.3f,%.3f,%.3f,%.3f,%.1f\n", static_cast<long long>(round),
                  static_cast<long long>(oracle.queries()), r.mean_abs_error, r.mean_uncertainty, r.coverage[0],
                  r.coverage[1], r.coverage[2], r.error_correlation, seconds);
    csv << line;
    std::cout << line;
    last = {{"round", round},
            {"queries", oracle.queries()},
            {"mean_abs_error", r.mean_abs_error},
            {"mean_uncertainty", r.mean_uncertainty},
            {"coverage", r.coverage},
            {"error_correlation", r.error_correlation}};
  };
  std::cout << csv.str();
  record(0, 0.0);

  int64_t used = 0;
  io::Progress progress("reward_calibration rounds", s.rounds);
  for (int64_t round = 1; round <= s.rounds; ++round) {
    const int64_t count = s.first_round << (round - 1);
    require(used + count <= pool, "--rounds ", s.rounds, " with --first-round ", s.first_round, " needs ", used + count,
            " test images besides the ", s.held_out, " held out; there are ", pool);
    if (!feedback.has_round(round))
      oracle.record(feedback, images.narrow(0, used, count).to(device), prompts.narrow(0, used, count).to(device),
                    round);
    used += count;
    const auto fit = ensemble.fit(feedback);
    record(round, fit.seconds);
    progress.update(round);
  }
  return csv.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Teach a bootstrap reward ensemble with oracle feedback and measure its calibration"};
  examples::ImageFlags flags;
  flags.out = "out/reward_calibration";
  Settings s;
  examples::add_image_flags(app, flags);
  app.add_option("--oracle", s.oracle_dir, "train_classifier --strength strong output (the oracle)");
  app.add_option("--weak", s.weak_dir, "train_classifier --strength weak output (the members' start)");
  app.add_option("--members", s.members, "heads (on the weak model's frozen backbone) or whole (a ResNet18 each)")
      ->check(CLI::IsMember({"heads", "whole"}));
  app.add_option("--ensemble-size", s.ensemble_size, "members M")->check(CLI::Range(int64_t{2}, int64_t{64}));
  app.add_option("--rounds", s.rounds, "feedback rounds")->check(CLI::PositiveNumber);
  app.add_option("--first-round", s.first_round, "queries in round 1 (doubling after)")->check(CLI::PositiveNumber);
  app.add_option("--held-out", s.held_out, "test images kept for measuring")->check(CLI::PositiveNumber);
  app.add_option("--noise", s.noise, "oracle label noise sigma")->check(CLI::NonNegativeNumber);
  app.add_option("--jitter", s.jitter, "noise on the members' start, relative to the weights' spread")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--steps", s.steps, "Adam steps per member and fit")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", s.batch, "samples per step")->check(CLI::PositiveNumber);
  app.add_option("--lr", s.lr, "Adam learning rate")->check(CLI::PositiveNumber);
  app.add_option("--l2", s.l2, "weight of the squared l2 norm")->check(CLI::NonNegativeNumber);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;

  return examples::run_main("reward_calibration", [&] {
    auto generator = examples::start_run(flags);
    const torch::Device device = examples::resolve_device(flags.device);
    const std::filesystem::path out = flags.out;
    const data::ImageDataset test = examples::load_dataset(flags, data::Split::test);
    require(s.held_out < test.size(), "--held-out ", s.held_out, " leaves no test image to ask about");
    const int64_t size = test.images.size(2);
    models::ResNet18 strong = examples::load_classifier(s.oracle_dir, size, device);
    models::ResNet18 weak = examples::load_classifier(s.weak_dir, size, device);

    // Half the prompts name the image's class, half a random one, so rewards span [0, 1].
    const torch::Tensor random_class = torch::randint(test.num_classes(), {test.size()}, generator, torch::kLong);
    const torch::Tensor own = torch::rand({test.size()}, generator).lt(0.5);
    const torch::Tensor prompts = torch::where(own, test.labels.to(torch::kLong), random_class);

    nlohmann::json last;
    const auto start = std::chrono::steady_clock::now();
    std::string csv;
    if (s.members == "heads")
      csv = run_rounds(s,
                       reward::SharedBackboneHeads<models::ResNet18>::copies_of(weak, weak->head(), s.ensemble_size,
                                                                                s.jitter, generator),
                       test, prompts, strong, out, device, last);
    else
      csv =
          run_rounds(s, reward::ModuleMembers<models::ResNet18>::copies_of(weak, s.ensemble_size, s.jitter, generator),
                     test, prompts, strong, out, device, last);
    io::write_text(out / "rounds.csv", csv);
    last["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    last["members"] = s.members;
    last["ensemble_size"] = s.ensemble_size;
    last["noise"] = s.noise;
    examples::write_json(out / "metrics.json", last);
    std::cout << "reward_calibration: " << (out / "rounds.csv").string() << ", " << (out / "metrics.json").string()
              << "\n";
    return 0;
  });
}
