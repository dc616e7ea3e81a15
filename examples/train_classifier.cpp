// Trains a ResNet18 (CIFAR variant) classifier on Fashion-MNIST (or CIFAR-10):
// --strength strong for the oracle of fine-tuning, --strength weak for the initial
// reward model, deliberately poor (a few examples per class, few steps);
// --noise-schedule S trains it noise-aware, on draws x_s of the diffusion model's
// forward process at s ~ U(0, T) (a reward model of the noisy state). Writes
// into --out:
//   classifier.pt  the weights as a state dict (torch.load reads it too)
//   config.json    the network's options, image size, class names, test accuracy
//   metrics.csv    step, loss, train_accuracy, learning_rate, seconds
//   eval.json      test accuracy overall and per class, and the confusion matrix
//                  (noise-aware: also the accuracy on one forward draw of the test set)
//   checkpoint.pt  the full training state; --resume continues from it
#include "diffctl/algorithms/classifier_training.hpp"
#include "diffctl/data/image_dataset.hpp"
#include "diffctl/metrics/classification.hpp"
#include "diffctl/models/state_dict.hpp"
#include "image_example.hpp"
#include "training_run.hpp"

using namespace diffctl;

namespace {

struct Settings {
  std::string strength = "strong";
  std::string optimizer = "sgd";
  std::string noise_schedule = "none";
  examples::RunFlags run;
  int64_t batch = 0, train_size = 0;
  double lr = 0.0, width = 0.0;
  bool augment = true;
};

void apply_preset(const std::string& preset, Settings& s, const CLI::App& app) {
  const bool small = preset == "small", weak = s.strength == "weak";
  const auto fill = [&](const char* flag, auto& value, auto preset_value) {
    if (app.count(flag) == 0) value = preset_value;
  };
  // The weak model sees a handful of examples per class, so that its test
  // accuracy lands near 35-40%: a reward model with much to learn. Trained on
  // forward draws it needs twice the steps to get there (0.40 on clean images,
  // 0.35 on the draws, where 30 steps give 0.20).
  const bool noisy = s.noise_schedule != "none";
  fill("--train-size", s.train_size, weak ? int64_t{50} : int64_t{0});
  fill("--steps", s.run.steps, weak ? (noisy ? int64_t{60} : int64_t{30}) : (small ? int64_t{1500} : int64_t{20000}));
  fill("--batch", s.batch, weak ? int64_t{20} : int64_t{128});
  fill("--lr", s.lr, s.optimizer == "adamw" ? 1e-3 : (weak ? 0.02 : 0.05));
  fill("--width", s.width, small ? 0.25 : 1.0);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a ResNet18 classifier (the oracle, or the weak initial reward model)"};
  examples::ImageFlags flags;
  Settings s;
  examples::add_image_flags(app, flags);
  app.add_option("--strength", s.strength, "strong (the oracle) or weak (the initial reward model)")
      ->check(CLI::IsMember({"strong", "weak"}));
  app.add_option("--steps", s.run.steps, "SGD steps")->check(CLI::PositiveNumber);
  app.add_option("--batch", s.batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--optimizer", s.optimizer, "sgd (Nesterov momentum 0.9) or adamw")
      ->check(CLI::IsMember({"sgd", "adamw"}));
  app.add_option("--lr", s.lr,
                 "peak learning rate, after a linear warm-up, decaying by a cosine (sgd: 0.05, adamw: 1e-3)")
      ->check(CLI::PositiveNumber);
  app.add_option("--width", s.width, "ResNet18 width multiplier (small: 0.25, paper: 1)")->check(CLI::PositiveNumber);
  app.add_option("--train-size", s.train_size, "train on a class-balanced subset of this size (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--augment", s.augment, "random flips and 2-pixel shifts");
  app.add_option("--noise-schedule", s.noise_schedule,
                 "none, or train noise-aware on forward draws x_s of this diffusion schedule (vp-cosine, vp-linear)")
      ->check(CLI::IsMember({"none", "vp-cosine", "vp-linear"}));
  examples::add_run_flags(app, s.run);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  apply_preset(flags.preset, s, app);
  if (flags.out.empty()) flags.out = "out/classifier_" + s.strength;

  return examples::run_main("train_classifier", [&] {
    auto [generator, device, group] = examples::start_distributed_run(flags);
    const std::filesystem::path out = flags.out;

    data::ImageDataset train = examples::load_dataset(flags, data::Split::train);
    const data::ImageDataset test = examples::load_dataset(flags, data::Split::test);
    if (s.train_size > 0) train = data::subset(train, s.train_size, flags.seed, /*balanced=*/true);
    // The same image size as the diffusion model of this preset, whose samples it judges.
    const int64_t native = train.images.size(2);
    const int64_t image_size = flags.preset == "paper" ? std::max<int64_t>(32, native) : native;
    const models::ResNet18Options resnet{
        .in_channels = train.images.size(1), .num_classes = train.num_classes(), .width = s.width};
    nlohmann::json config = {{"strength", s.strength},
                             {"dataset", flags.dataset},
                             {"class_names", train.class_names},
                             {"image_size", image_size},
                             {"train_size", train.size()},
                             {"optimizer", s.optimizer},
                             {"preset", flags.preset},
                             {"resnet", examples::to_json(resnet)},
                             {"noise_schedule", s.noise_schedule}};
    using NoiseFn = std::function<torch::Tensor(const torch::Tensor&, const c10::optional<at::Generator>&)>;
    const NoiseFn forward_noise =
        s.noise_schedule == "none" ? NoiseFn{} : examples::with_schedule(s.noise_schedule, [](auto schedule) {
          return NoiseFn(sde::forward_noise(schedule));
        });

    models::ResNet18 model(resnet);
    model->to(device);
    algorithms::ClassifierTrainer<models::ResNet18> trainer(
        model,
        {.steps = s.run.steps,
         .optimizer =
             s.optimizer == "adamw" ? algorithms::ClassifierOptimizer::adamw : algorithms::ClassifierOptimizer::sgd,
         .learning_rate = s.lr,
         .warmup_steps = std::min<int64_t>(50, s.run.steps / 10),
         .flip = s.augment,
         .crop_padding = s.augment ? 2 : 0,
         .forward_noise = forward_noise},
        group);
    data::ImageBatches batches(train, {.batch_size = std::min(s.batch, train.size()),
                                       .seed = flags.seed,
                                       .pad_to = image_size > native ? image_size : 0,
                                       .drop_last = true,
                                       .device = device});

    examples::TrainingRun run("train_classifier", out, "run.json", config, s.run,
                              {.modules = {{"model", model.ptr().get()}},
                               .optimizers = {{"optimizer", &trainer.optimizer()}},
                               .generators = examples::run_generators(generator, device)},
                              batches, {"loss", "train_accuracy", "learning_rate"}, group);
    trainer.set_steps(run.first_step());
    const bool finished = run.run([&](const data::Batch& batch) {
      const auto stats = trainer.step(batch.images, batch.labels, generator);
      return std::vector<torch::Tensor>{stats.loss, stats.accuracy, torch::tensor(stats.learning_rate)};
    });
    if (!finished || !group.is_main()) return 0;  // rank 0 writes the results
    const double train_seconds = run.seconds();

    torch::Tensor test_images = data::normalize_images(test.images);
    if (image_size > native) test_images = data::pad_images(test_images, image_size);
    const auto report = metrics::evaluate_classifier(model, test_images, test.labels);
    nlohmann::json noisy;
    if (forward_noise) {
      // One draw of the forward process per test image, from a generator of its own.
      const at::Generator draw = make_generator(flags.seed + 1);
      noisy = metrics::evaluate_classifier(model, forward_noise(test_images, draw), test.labels).accuracy;
    }
    std::vector<std::vector<int64_t>> confusion;
    for (int64_t i = 0; i < report.confusion.size(0); ++i)
      confusion.emplace_back(report.confusion[i].data_ptr<int64_t>(),
                             report.confusion[i].data_ptr<int64_t>() + report.confusion.size(1));
    examples::write_json(out / "eval.json", {{"test_accuracy", report.accuracy},
                                             {"class_accuracy", report.class_accuracy},
                                             {"confusion", confusion},
                                             {"test_images", report.count},
                                             {"noisy_test_accuracy", noisy},
                                             {"steps", trainer.steps()},
                                             {"train_seconds", train_seconds}});
    config["sha256"] = {{"classifier.pt", models::save_state_dict(*model, out / "classifier.pt")}};
    config["test_accuracy"] = report.accuracy;
    config["machine"] = examples::machine_json();
    examples::write_json(out / "config.json", config);
    std::cout << "train_classifier: " << s.strength << " classifier, test accuracy " << report.accuracy;
    if (forward_noise) std::cout << " (on forward draws: " << noisy.get<double>() << ")";
    std::cout << " after " << trainer.steps() << " steps; wrote " << (out / "classifier.pt").string() << "\n";
    return 0;
  });
}
