// Samples a pretrained diffusion model (the --out of pretrain_diffusion) with any
// of the SDE core's solvers. Writes into --out:
//   samples.png  a grid, one row per prompt
//   samples.pt   the raw samples and their labels, as a dict of tensors
//   metrics.json with --classifier: how often the classifier names the prompted
//                class, overall and per class, and the mean probability it gives it
#include "diffctl/data/image_dataset.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/io/png.hpp"
#include "diffctl/metrics/classification.hpp"
#include "diffctl/models/epsilon_score.hpp"
#include "diffctl/models/state_dict.hpp"
#include "image_example.hpp"

using namespace diffctl;

int main(int argc, char** argv) {
  CLI::App app{"Sample a pretrained diffusion model"};
  examples::ImageFlags flags;
  flags.out = "out/sample";
  std::string model_dir = "out/pretrain_diffusion", classifier_dir, sampler = "ddpm", prompts_text;
  int64_t steps = 100, per_prompt = 8;
  double guidance = 0.0;
  app.add_option("--device", flags.device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--threads", flags.threads, "LibTorch intra-op threads (default: all cores)")
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", flags.seed, "random seed");
  app.add_option("--out", flags.out, "output directory");
  app.add_option("--model", model_dir, "directory written by pretrain_diffusion");
  app.add_option("--classifier", classifier_dir, "directory written by train_classifier: judge the samples");
  app.add_option("--sampler", sampler, "solver")->check(CLI::IsMember(examples::kSamplerNames));
  app.add_option("--steps", steps, "solver steps")->check(CLI::PositiveNumber);
  app.add_option("--per-prompt", per_prompt, "samples per prompt (the grid's columns)")->check(CLI::PositiveNumber);
  app.add_option("--prompts", prompts_text, "comma-separated class names (default: every class)");
  app.add_option("--guidance", guidance, "classifier-free guidance weight (needs --label-dropout training)")
      ->check(CLI::NonNegativeNumber);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;

  return examples::run_main("sample", [&] {
    auto generator = examples::start_run(flags);
    const torch::Device device = examples::resolve_device(flags.device);
    const std::filesystem::path out = flags.out, from = model_dir;

    const nlohmann::json config = examples::read_json(from / "config.json");
    require(config.at("prediction") == "epsilon", (from / "config.json").string(),
            ": expected an epsilon-prediction model");
    const models::UNetOptions unet = examples::unet_options_from_json(config.at("unet"));
    models::UNet model(unet);
    models::load_weights(*model, from / "model.pt", examples::recorded_weights(config, "model.pt"));
    model->to(device);
    model->eval();

    const bool conditional = config.at("conditional");
    const data::Prompts prompts(config.at("class_names").get<std::vector<std::string>>());
    torch::Tensor prompt_indices;
    if (conditional)
      prompt_indices = prompts_text.empty() ? torch::arange(prompts.size(), torch::kLong) : prompts.parse(prompts_text);
    else require(prompts_text.empty() && guidance == 0.0, "--prompts and --guidance need a conditional model");
    const int64_t rows = conditional ? prompt_indices.size(0) : 1;
    const torch::Tensor labels = conditional ? prompt_indices.repeat_interleave(per_prompt) : torch::Tensor();

    const int64_t size = config.at("image_size");
    const auto schedule_name = config.at("schedule").get<std::string>();
    const torch::Tensor images = examples::with_schedule(schedule_name, [&](const auto& schedule) {
      const models::EpsilonScore<std::decay_t<decltype(schedule)>, models::UNet> score(
          schedule, model,
          {.time_scale = config.at("time_scale"), .guidance = guidance, .null_label = config.at("null_label")});
      return examples::sample_images(schedule, score, sampler, steps, {rows * per_prompt, unet.in_channels, size, size},
                                     labels, device, generator);
    });
    io::write_png(out / "samples.png", io::image_grid(images, per_prompt));
    models::StateDict raw;
    raw.insert("images", images.to(torch::kCPU));
    if (labels.defined()) raw.insert("labels", labels);
    models::save_state_dict(raw, out / "samples.pt");
    std::cout << "sample: " << images.size(0) << " samples (" << sampler << ", " << steps << " steps) -> "
              << (out / "samples.png").string() << "\n";

    if (!classifier_dir.empty()) {
      require(conditional, "--classifier judges prompted samples: the model must be conditional");
      models::ResNet18 classifier = examples::load_classifier(classifier_dir, size, device);
      const torch::Tensor probabilities = metrics::predict_probabilities(classifier, images);
      const auto report = metrics::classification_report(probabilities, labels);
      const double prompted_probability = probabilities.gather(1, labels.unsqueeze(1)).mean().item<double>();
      std::vector<double> per_class;
      for (int64_t i = 0; i < prompt_indices.size(0); ++i)
        per_class.push_back(report.class_accuracy[static_cast<std::size_t>(prompt_indices[i].item<int64_t>())]);
      examples::write_json(out / "metrics.json", {{"classified_as_prompted", report.accuracy},
                                                  {"prompted_class_probability", prompted_probability},
                                                  {"per_prompt", per_class},
                                                  {"samples", report.count},
                                                  {"sampler", sampler},
                                                  {"steps", steps},
                                                  {"guidance", guidance}});
      std::cout << "sample: the classifier names the prompted class for " << report.accuracy
                << " of the samples (mean probability " << prompted_probability << ")\n";
    }
    return 0;
  });
}
