// Samples a 2-D mixture of Gaussians (8 modes on a ring) with every solver, from
// the exact score of its noised marginals, and shows how well each one recovers
// the data: a table of moment and mode-coverage errors, a CSV of the same, and
// a PNG with one density panel per solver beside the data's own.
//
//   solvers_gallery [--schedule vp-linear|vp-cosine|ve] [--steps 100]
//                   [--samples 20000] [--seed 0] [--threads N] [--out DIR]

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

#include "diffctl/diffctl.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/io/png.hpp"

using namespace diffctl;

namespace {

struct Settings {
  std::string schedule = "vp-linear";
  std::size_t steps = 100;
  int64_t samples = 20000;
  std::uint64_t seed = 0;
  std::string out = "out/solvers_gallery";
};

constexpr int64_t kModes = 8;
constexpr double kRadius = 4.0, kModeStd = 0.3;

// How far a sample set is from the mixture: error of the mean and covariance, the
// spread of the share of samples per mode around 1/8, and the share of samples
// more than 3 standard deviations from every mode.
struct Fit {
  double mean_error, cov_error, mode_share_error, off_mode;
};

Fit measure(const torch::Tensor& x, const torch::Tensor& means, const torch::Tensor& true_cov) {
  const torch::Tensor centered = x - x.mean(0);
  const torch::Tensor cov = centered.t().mm(centered) / double(x.size(0) - 1);
  const torch::Tensor distance = torch::cdist(x, means);  // [N, K]
  const auto [nearest, mode] = distance.min(1);
  const torch::Tensor share = torch::bincount(mode, {}, kModes).to(torch::kDouble) / double(x.size(0));
  return {x.mean(0).norm().item<double>(), (cov - true_cov).abs().max().item<double>(),
          (share - 1.0 / kModes).abs().max().item<double>(),
          (nearest > 3.0 * kModeStd).to(torch::kDouble).mean().item<double>()};
}

template <NoiseSchedule Schedule>
int run(const Schedule& schedule, const Settings& settings) {
  const torch::Tensor angle = torch::arange(kModes, torch::kDouble) * (2 * std::numbers::pi / kModes);
  const torch::Tensor means = kRadius * torch::stack({angle.cos(), angle.sin()}, 1);
  const models::GaussianMixtureScore<Schedule> model(schedule, means, torch::full({kModes}, kModeStd, torch::kDouble),
                                                     torch::ones({kModes}, torch::kDouble));
  // Covariance of an equal-weight ring mixture: within-mode plus between-mode.
  const torch::Tensor true_cov =
      kModeStd * kModeStd * torch::eye(2, torch::kDouble) + means.t().mm(means) / double(kModes);

  const auto grid = sde::TimeGrid::uniform(schedule.horizon(), settings.steps);
  const double extent = kRadius + 2.0;
  std::vector<torch::Tensor> panels;
  std::ostringstream csv;
  csv << "schedule,solver,steps,samples,mean_error,cov_error,mode_share_error,off_mode,seconds\n";
  std::printf("%-16s %11s %10s %17s %9s %8s\n", "solver", "mean error", "cov error", "mode share error", "off-mode",
              "seconds");
  const auto report = [&](std::string_view name, const torch::Tensor& x, double seconds) {
    const Fit fit = measure(x, means, true_cov);
    std::printf("%-16.*s %11.4f %10.4f %17.4f %9.4f %8.2f\n", int(name.size()), name.data(), fit.mean_error,
                fit.cov_error, fit.mode_share_error, fit.off_mode, seconds);
    csv << schedule.name << ',' << name << ',' << settings.steps << ',' << settings.samples << ',' << fit.mean_error
        << ',' << fit.cov_error << ',' << fit.mode_share_error << ',' << fit.off_mode << ',' << seconds << '\n';
    panels.push_back(io::density_image(x, -extent, extent));
  };

  report("data",
         model.sample(schedule.horizon(), settings.samples, make_generator(settings.seed), torch::kDouble).first, 0.0);
  const auto sample_with = [&](std::string_view name, const auto& solver) {
    sde::IntegrateOptions options;
    options.generator = make_generator(settings.seed + 1);
    const torch::Tensor x_init = sde::sample_prior(schedule, {settings.samples, 2}, options.generator, torch::kDouble);
    const auto start = std::chrono::steady_clock::now();
    const torch::Tensor x = sde::integrate(schedule, model, solver, grid, x_init, {}, options).final_state;
    report(name, x, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };
  sample_with("euler-maruyama", sde::EulerMaruyama{});
  sample_with("pf-euler", sde::ProbabilityFlowEuler{});
  sample_with("heun", sde::Heun{});
  sample_with("ddim(eta=0)", sde::Ddim{});
  sample_with("ddim(eta=1)", sde::Ddim({.eta = 1.0}));
  sample_with("ddpm", sde::Ddpm{});

  const std::filesystem::path out(settings.out);
  io::write_png(out / "samples.png", io::tile(panels, 4));
  io::write_text(out / "metrics.csv", csv.str());
  std::cout << "wrote " << (out / "samples.png").string()
            << " (panels, row by row: data, euler-maruyama, pf-euler, heun, ddim(eta=0), "
               "ddim(eta=1), ddpm) and "
            << (out / "metrics.csv").string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sample a 2-D Gaussian mixture with every solver and compare them"};
  Settings settings;
  std::optional<int> threads;
  app.add_option("--schedule", settings.schedule, "noise schedule")
      ->check(CLI::IsMember({"vp-linear", "vp-cosine", "ve"}));
  app.add_option("--steps", settings.steps, "solver steps")->check(CLI::PositiveNumber);
  app.add_option("--samples", settings.samples, "samples per solver")->check(CLI::Range(2, 10000000));
  app.add_option("--seed", settings.seed, "random seed");
  app.add_option("--threads", threads, "LibTorch intra-op threads (default: all cores)");
  app.add_option("--out", settings.out, "output directory");
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    keep_freed_memory();
    const int used = configure_threads(threads);
    seed_everything(settings.seed);
    std::cout << "schedule " << settings.schedule << ", " << settings.steps << " steps, " << settings.samples
              << " samples, " << used << " threads\n";
    if (settings.schedule == "vp-cosine") return run(sde::VpCosine{}, settings);
    if (settings.schedule == "ve") return run(sde::Ve{}, settings);
    return run(sde::VpLinear{}, settings);
  } catch (const std::exception& error) {
    std::cerr << "solvers_gallery: " << error.what() << "\n";
    return 1;
  }
}
