// Pretrains a UNet diffusion model on Fashion-MNIST (or CIFAR-10) by denoising
// score matching on the VP cosine (or linear) schedule, class-conditional unless
// --unconditional. Writes into --out:
//   model.pt      the EMA weights as a state dict (torch.load reads it too)
//   config.json   what `sample` and the fine-tuning need to rebuild the model
//   metrics.csv   step, loss, grad_norm, seconds (averaged over --log-every steps)
//   checkpoint.pt the full training state; --resume continues from it
//   samples.png   a grid of EMA samples, one row per class
#include "diffctl/algorithms/denoising_pretraining.hpp"
#include "diffctl/data/image_dataset.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/io/png.hpp"
#include "diffctl/models/state_dict.hpp"
#include "image_example.hpp"
#include "training_run.hpp"

using namespace diffctl;

namespace {

struct Settings {
  examples::RunFlags run;
  int64_t batch = 0;
  double lr = 0.0;
  double ema_decay = 0.0;
  double label_dropout = 0.0;
  std::optional<double> dropout;  // the preset's network's when absent
  bool unconditional = false;
  std::string sampler = "ddpm";
  std::string schedule = "vp-cosine";
  int64_t sample_steps = 100, samples_per_class = 8;
};

// Preset defaults; flags given on the command line win.
void apply_preset(const std::string& preset, Settings& s, const CLI::App& app) {
  const bool small = preset == "small";
  const auto fill = [&](const char* flag, auto& value, auto preset_value) {
    if (app.count(flag) == 0) value = preset_value;
  };
  fill("--steps", s.run.steps, small ? int64_t{1800} : int64_t{800000});
  fill("--batch", s.batch, small ? int64_t{64} : int64_t{128});
  fill("--lr", s.lr, small ? 1e-3 : 1e-4);
  fill("--ema-decay", s.ema_decay, small ? 0.995 : 0.9995);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Pretrain a UNet diffusion model by denoising score matching"};
  examples::ImageFlags flags;
  flags.out = "out/pretrain_diffusion";
  Settings s;
  examples::add_image_flags(app, flags);
  app.add_option("--steps", s.run.steps, "training steps (small: 1800, paper: 800000)")->check(CLI::PositiveNumber);
  app.add_option("--batch", s.batch, "batch size (small: 64, paper: 128)")->check(CLI::PositiveNumber);
  app.add_option("--lr", s.lr, "AdamW learning rate (small: 1e-3, paper: 1e-4)")->check(CLI::PositiveNumber);
  app.add_option("--ema-decay", s.ema_decay, "decay of the weights' moving average (small: 0.995)")
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--label-dropout", s.label_dropout,
                 "probability of training a sample without its label (classifier-free guidance)")
      ->check(CLI::Range(0.0, 0.99));
  app.add_option("--dropout", s.dropout,
                 "dropout in the UNet's residual blocks (default 0.1; each process of a run draws its own masks)")
      ->check(CLI::Range(0.0, 0.99));
  app.add_flag("--unconditional", s.unconditional, "ignore the labels");
  app.add_option("--schedule", s.schedule, "noise schedule: vp-cosine or vp-linear")
      ->check(CLI::IsMember({"vp-cosine", "vp-linear"}));
  examples::add_run_flags(app, s.run);
  app.add_option("--sampler", s.sampler, "sampler of the final grid")->check(CLI::IsMember(examples::kSamplerNames));
  app.add_option("--sample-steps", s.sample_steps, "steps of the final grid's sampler")->check(CLI::PositiveNumber);
  app.add_option("--samples-per-class", s.samples_per_class, "columns of the final grid")->check(CLI::PositiveNumber);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  apply_preset(flags.preset, s, app);

  return examples::run_main("pretrain_diffusion", [&] {
    auto [generator, device, group] = examples::start_distributed_run(flags);
    const std::filesystem::path out = flags.out;

    const data::ImageDataset train = examples::load_dataset(flags, data::Split::train);
    const int64_t classes = train.num_classes(), channels = train.images.size(1);
    // The paper preset is minimal-diffusion's 32x32 network: smaller images are padded.
    const int64_t image_size =
        flags.preset == "paper" ? std::max<int64_t>(32, train.images.size(2)) : train.images.size(2);
    // Label dropout trains a "no label" embedding beside the classes.
    const int64_t label_slots = s.unconditional ? 0 : classes + (s.label_dropout > 0.0 ? 1 : 0);
    models::UNetOptions unet = flags.preset == "paper" ? models::UNetOptions::paper(image_size, channels, label_slots)
                                                       : models::UNetOptions::small(image_size, channels, label_slots);
    if (s.dropout) unet.dropout = *s.dropout;
    return examples::with_schedule(s.schedule, [&](const auto& schedule) {
      using Schedule = std::decay_t<decltype(schedule)>;
      const algorithms::DenoisingOptions options{.learning_rate = s.lr,
                                                 .ema_decay = s.ema_decay,
                                                 .label_dropout = s.unconditional ? 0.0 : s.label_dropout,
                                                 .null_label = s.label_dropout > 0.0 ? classes : -1};
      nlohmann::json config = {{"schedule", s.schedule},           {"time_scale", options.time_scale},
                               {"prediction", "epsilon"},          {"dataset", flags.dataset},
                               {"class_names", train.class_names}, {"conditional", !s.unconditional},
                               {"null_label", options.null_label}, {"image_size", image_size},
                               {"preset", flags.preset},           {"unet", examples::to_json(unet)}};

      models::UNet model(unet), ema(unet);
      model->to(device);
      ema->to(device);
      algorithms::DenoisingTrainer<Schedule, models::UNet> trainer(schedule, model, ema, options, group);
      data::ImageBatches batches(train, {.batch_size = s.batch,
                                         .seed = flags.seed,
                                         .pad_to = image_size > train.images.size(2) ? image_size : 0,
                                         .drop_last = true,
                                         .device = device});

      examples::TrainingRun run("pretrain_diffusion", out, "config.json", config, s.run,
                                {.modules = {{"model", model.ptr().get()}, {"ema", ema.ptr().get()}},
                                 .optimizers = {{"adamw", &trainer.optimizer()}},
                                 .generators = examples::run_generators(generator, device)},
                                batches, {"loss", "grad_norm"}, group);
      trainer.set_steps(run.first_step());
      const bool finished = run.run([&](const data::Batch& batch) {
        const auto stats = trainer.step(batch.images, s.unconditional ? torch::Tensor() : batch.labels, generator);
        return std::vector<torch::Tensor>{stats.loss, stats.grad_norm};
      });
      if (!finished || !group.is_main()) return 0;  // rank 0 writes the results

      // The weights' digest joins the run's description, for every reader to check.
      config["sha256"] = {{"model.pt", models::save_state_dict(*ema, out / "model.pt")}};
      config["machine"] = examples::machine_json();
      examples::write_json(out / "config.json", config);

      // One row per class (or one row of unconditional samples).
      const int64_t rows = s.unconditional ? 1 : classes;
      const torch::Tensor labels = s.unconditional
                                       ? torch::Tensor()
                                       : torch::arange(classes, torch::kLong).repeat_interleave(s.samples_per_class);
      const torch::Tensor images = examples::sample_images(
          schedule, trainer.score(), s.sampler, s.sample_steps,
          {rows * s.samples_per_class, channels, image_size, image_size}, labels, device, generator);
      io::write_png(out / "samples.png", io::image_grid(images, s.samples_per_class));
      std::cout << "pretrain_diffusion: " << trainer.steps() << " steps; wrote " << (out / "model.pt").string()
                << " and " << (out / "samples.png").string() << "\n";
      return 0;
    });
  });
}
