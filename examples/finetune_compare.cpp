// Fine-tunes a q-learning-pretrained model for a reward with one of three methods:
// DDPO (PPO-clip policy gradient), DPOK (policy gradient with a per-step KL to
// the pretrained model) or continuous-time q-learning with beta > 0, from the
// same network (--init, a checkpoint.pt of qlearning_gmm1d or qlearning_swiss_roll
// trained with beta = 0), and reports as those examples do. Its checkpoint.pt
// holds the fine-tuned policy (with the pretrained value network for DDPO and
// DPOK), which --init of these examples loads.

#include <iostream>

#include "diffctl/algorithms/policy_gradient.hpp"
#include "toy_problems.hpp"

using namespace diffctl;

namespace {

struct FineTuneFlags {
  std::string method = "ddpo";
  std::string problem = "gmm1d";
  double kl_weight = 0.01;
  double reward_weight = 10.0;
  double clip = 0.2;
  int64_t inner_epochs = 4;
};

// The fine-tuned policy as a LibTorch module, whichever backend trained it.
template <class Policy>
models::TimeStateMlp as_module(const Policy& policy) {
  if constexpr (std::same_as<Policy, algorithms::PolicyScore>) return policy.network();
  else return policy.to_torch();
}

// Trains `method` as the flags say, writes checkpoint.pt with save(policy) (every
// tenth of the run and at the end) and reports (rank 0 of a group of processes).
template <class Method, class Save>
int fine_tune(Method& method, const examples::QLearningFlags& f, const examples::ExampleData& data, const auto& reward,
              const auto& picture, const Save& save, at::Generator& generator, const distributed::Group& group) {
  const auto draw = [&](int64_t n, const torch::Tensor& z) { return method.sample(n, z, generator); };
  const auto trained = examples::train_loop(
      f, method, [&] { return method.train_iteration(generator); },
      [&](int64_t n) { return examples::mean_reward(data, draw, reward, n); },
      [&](int64_t) { save(as_module(method.policy())); }, [](int64_t) {}, group.is_main());
  save(as_module(method.policy()));
  if (!group.is_main()) return 0;
  return examples::write_report(f, draw, data, reward, picture, trained);
}

// DDPO or DPOK, as tune.method says, on Backend.
template <class Backend, class Reward, class Picture, class Save>
int fine_tune_with(const models::TimeStateMlp& pretrained, const examples::QLearningFlags& f, const FineTuneFlags& tune,
                   const examples::ExampleData& data, const Reward& reward, const Picture& picture, const Save& save,
                   at::Generator& generator, const distributed::Group& group) {
  using Schedule = sde::OrnsteinUhlenbeck;
  const Schedule schedule({.horizon = f.horizon});
  using algorithms::PolicyScore;
  const algorithms::ChainShape shape = algorithms::chain_shape(pretrained);
  if (tune.method == "dpok") {
    algorithms::Dpok<Schedule, PolicyScore, Reward, sde::EulerMaruyama, Backend> dpok(
        schedule, PolicyScore(pretrained), reward, shape,
        {.dt = f.dt,
         .batch = f.batch,
         .learning_rate = f.lr,
         .reward_weight = tune.reward_weight,
         .kl_weight = tune.kl_weight,
         .value_hidden = pretrained->options().hidden,
         .group = group});
    return fine_tune(dpok, f, data, reward, picture, save, generator, group);
  }
  algorithms::Ddpo<Schedule, PolicyScore, Reward, sde::EulerMaruyama, Backend> ddpo(schedule, PolicyScore(pretrained),
                                                                                    reward, shape,
                                                                                    {.dt = f.dt,
                                                                                     .batch = f.batch,
                                                                                     .learning_rate = f.lr,
                                                                                     .clip = tune.clip,
                                                                                     .inner_epochs = tune.inner_epochs,
                                                                                     .group = group});
  return fine_tune(ddpo, f, data, reward, picture, save, generator, group);
}

template <class Reward, class Picture>
int run(const examples::QLearningFlags& f, const FineTuneFlags& tune, const examples::ExampleData& data,
        const Reward& reward, const Picture& picture, at::Generator& generator) {
  require(!f.exact_score,
          "--exact-score: not a fine-tuning method (qlearning_swiss_roll --exact-score reports the floor)");
  require(!f.init.empty(), "--init: a pretrained checkpoint is required");
  require(f.snapshots.empty() || tune.method == "qlearning", "--snapshots: only q-learning keeps checkpoints");
  const distributed::Group group = examples::join_run(f);
  if (tune.method == "qlearning") return examples::run_qlearning(f, data, reward, picture, generator, group);

  using Schedule = sde::OrnsteinUhlenbeck;
  const Schedule schedule({.horizon = f.horizon});
  algorithms::QLearning<Schedule, models::RatioScore<Schedule>> pretrained(
      schedule, models::RatioScore<Schedule>(schedule, data.points), data.points.size(1), 0, {.dt = f.dt});
  pretrained.load(f.init);
  require(f.sampler == "sde", "--sampler: DDPO and DPOK step with Euler-Maruyama (sde), not ", f.sampler);
  // The checkpoint holds the fine-tuned policy and the pretrained model's value
  // network, in q-learning's format, so that --init of every example loads it.
  const models::TimeStateMlp policy = models::clone_module(pretrained.policy());
  const auto save = [&](const models::TimeStateMlp& tuned) {
    if (!group.is_main()) return;  // rank 0 writes
    models::copy_weights(*tuned, *pretrained.policy());
    pretrained.save(std::filesystem::path(f.out) / "checkpoint.pt");
  };
  if (f.backend == "eigen")
    return fine_tune_with<algorithms::EigenBackend<float>>(policy, f, tune, data, reward, picture, save, generator,
                                                           group);
  return fine_tune_with<algorithms::TorchBackend>(policy, f, tune, data, reward, picture, save, generator, group);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fine-tune a pretrained model with DDPO, DPOK or q-learning"};
  examples::QLearningFlags flags;
  flags.episodes = 1000;
  flags.lr = 1e-4;
  FineTuneFlags tune;
  examples::add_qlearning_flags(app, flags);
  app.add_option("--method", tune.method, "ddpo, dpok or qlearning")
      ->check(CLI::IsMember({"ddpo", "dpok", "qlearning"}));
  app.add_option("--problem", tune.problem, "gmm1d or swiss-roll (the pretrained model's data)")
      ->check(CLI::IsMember({"gmm1d", "swiss-roll"}));
  app.add_option("--kl-weight", tune.kl_weight, "DPOK: weight of the per-step KL")->check(CLI::NonNegativeNumber);
  app.add_option("--reward-weight", tune.reward_weight, "DPOK: weight of the reward")->check(CLI::PositiveNumber);
  app.add_option("--clip", tune.clip, "DDPO: PPO clip range")->check(CLI::PositiveNumber);
  app.add_option("--inner-epochs", tune.inner_epochs, "DDPO: gradient steps per batch")->check(CLI::PositiveNumber);
  examples::SwissRollProblem roll;
  examples::MixtureProblem mixture;
  roll.add_flags(app);
  mixture.add_flags(app);
  int64_t data_size = 300;
  examples::add_data_size_flag(app, data_size);
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  if (flags.out.empty()) flags.out = "out/finetune_" + tune.method;
  flags.method_name = tune.method;
  roll.data_size = mixture.data_size = data_size;
  try {
    keep_freed_memory();
    configure_threads(flags.threads);
    auto generator = seed_everything(flags.seed);
    // The data the pretrained model learned, drawn as its example draws it (the
    // same flags and seed give the same points).
    if (tune.problem == "swiss-roll") {
      const auto picture = [&](const torch::Tensor& s, const torch::Tensor& r) { return roll.picture(s, r); };
      return run(flags, tune, roll.data(generator, flags.seed), roll.box, picture, generator);
    }
    const auto picture = [&](const torch::Tensor& s, const torch::Tensor& r) { return mixture.picture(s, r); };
    return run(flags, tune, mixture.data(generator, flags.seed), mixture.reward, picture, generator);
  } catch (const std::exception& error) {
    std::cerr << "finetune_compare: " << error.what() << "\n";
    return 1;
  }
}
