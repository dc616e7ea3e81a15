// The Eigen backend against LibTorch, in double precision: the MLP's forward
// pass and gradients (also against finite differences), the fused ratio estimator
// against RatioScore, whole training episodes from the same weights and noise,
// checkpoints across backends, and its errors.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/algorithms/qlearning_eigen.hpp"
#include "diffctl/models/eigen_mlp.hpp"
#include "diffctl/models/eigen_ratio_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/runtime.hpp"
#include "support/toy_rewards.hpp"
#include "support/temp_dir.hpp"

using namespace diffctl;
using testing::NearTwo;
using Schedule = sde::OrnsteinUhlenbeck;
using Estimate = models::RatioScore<Schedule>;
using Mlp = models::EigenMlp<double>;
using Matrix = Mlp::Matrix;
using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

// [rows, cols] tensor of an Eigen matrix.
torch::Tensor tensor_of(const Matrix& m) {
  const RowMajor row_major = m;
  return torch::from_blob(const_cast<double*>(row_major.data()), {m.rows(), m.cols()}, torch::kDouble).clone();
}

// Eigen [cols, rows] of a [rows, cols] tensor: samples become columns.
Matrix columns_of(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kDouble).contiguous();
  return Eigen::Map<const RowMajor>(c.data_ptr<double>(), c.size(0), c.size(1)).transpose();
}

// max |a - b| / max |b|
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-300);
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / scale;
}

// The parameters of an EigenMlp, or their gradients, by TimeStateMlp's names.
std::vector<std::pair<std::string, torch::Tensor>> eigen_tensors(Mlp& mlp, bool gradients) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const std::pair<std::string, Mlp::Layer*> layers[] = {
      {"first", &mlp.first()}, {"second", &mlp.second()}, {"out", &mlp.out()}};
  for (const auto& [name, layer] : layers) {
    out.emplace_back(name + ".weight", tensor_of(gradients ? layer->grad_weight : layer->weight));
    const Matrix bias = gradients ? layer->grad_bias : layer->bias;
    out.emplace_back(name + ".bias", tensor_of(bias).flatten());
  }
  return out;
}

// Largest relative error between an EigenMlp's parameters (or gradients) and a TimeStateMlp's.
double parameter_error(Mlp& mlp, const models::TimeStateMlp& network, bool gradients) {
  const auto params = network->named_parameters();
  double worst = 0.0;
  for (const auto& [name, value] : eigen_tensors(mlp, gradients)) {
    const torch::Tensor& p = params[name];
    const torch::Tensor reference = gradients ? p.grad() : p.detach();
    INFO(name);
    REQUIRE(reference.defined());
    worst = std::max(worst, relative_error(value.view(reference.sizes()), reference));
  }
  return worst;
}

models::TimeStateMlp double_network(models::TimeStateMlpOptions options) {
  models::TimeStateMlp network(options);
  network->to(torch::kDouble);
  return network;
}

}  // namespace

TEST_CASE("EigenMlp computes TimeStateMlp's outputs and gradients", "[models][eigen]") {
  for (const int64_t classes : {0, 3}) {
    const models::TimeStateMlpOptions options{.state_dim = 2, .out_dim = 2, .classes = classes, .hidden = 16};
    torch::manual_seed(1);
    auto network = double_network(options);
    Mlp mlp = Mlp::from(network);
    auto generator = make_generator(2);
    const int64_t n = 37;
    const torch::Tensor t = torch::rand({n}, generator, torch::kDouble) * 5.0;
    const torch::Tensor y = torch::randn({n, 2}, generator, torch::kDouble);
    const torch::Tensor z = classes > 0 ? torch::randint(classes, {n}, generator, torch::kLong) : torch::Tensor{};
    const torch::Tensor weights = torch::randn({n, 2}, generator, torch::kDouble);

    Matrix input(mlp.input_dim(), n), a1(16, n), a2(16, n), out(2, n), dz2(16, n), dz1(16, n);
    // One call per time (fill_input takes one t for all columns).
    for (int64_t b = 0; b < n; ++b)
      mlp.fill_input(t[b].item<double>(), columns_of(y.narrow(0, b, 1)),
                     classes > 0 ? z.data_ptr<int64_t>() + b : nullptr, input.middleCols(b, 1));
    mlp.forward(input, a1, a2, out);
    const torch::Tensor expected = network->forward(t, y, z);
    INFO("classes " << classes);
    CHECK(relative_error(tensor_of(out).t(), expected.detach()) < 1e-12);

    // d/dtheta sum(out .* weights)
    (expected * weights).sum().backward();
    mlp.backward(input, a1, a2, columns_of(weights), dz2, dz1);
    CHECK(parameter_error(mlp, network, true) < 1e-10);

    // Central differences on a few parameters of each layer.
    const auto objective = [&](Mlp& m) {
      m.forward(input, a1, a2, out);
      return (out.array() * columns_of(weights).array()).sum();
    };
    Mlp probe = mlp;
    const double h = 1e-6;
    for (Mlp::Layer* layer : {&probe.first(), &probe.second(), &probe.out()}) {
      for (const auto& [i, j] : {std::pair{0, 0}, std::pair{1, 1}}) {
        const double kept = layer->weight(i, j);
        layer->weight(i, j) = kept + h;
        const double up = objective(probe);
        layer->weight(i, j) = kept - h;
        const double down = objective(probe);
        layer->weight(i, j) = kept;
        const double numeric = (up - down) / (2 * h);
        CHECK(std::abs(numeric - layer->grad_weight(i, j)) <= 1e-6 * std::max(1.0, std::abs(numeric)));
      }
      const double kept = layer->bias(0);
      layer->bias(0) = kept + h;
      const double up = objective(probe);
      layer->bias(0) = kept - h;
      const double down = objective(probe);
      layer->bias(0) = kept;
      const double numeric = (up - down) / (2 * h);
      CHECK(std::abs(numeric - layer->grad_bias(0)) <= 1e-6 * std::max(1.0, std::abs(numeric)));
    }

    // Back into a TimeStateMlp.
    models::TimeStateMlp copy = double_network(options);
    mlp.copy_to(copy);
    CHECK(parameter_error(mlp, copy, false) == 0.0);
  }
}

TEST_CASE("EigenMlp rejects inputs of the wrong shape", "[models][eigen][errors]") {
  Mlp mlp({.state_dim = 2, .out_dim = 2, .classes = 0, .hidden = 8});
  Matrix input(4, 5), a1(8, 5), a2(8, 5), out(2, 5), y(2, 5);
  CHECK_THROWS_WITH(mlp.forward(input, a1, a2, out), Catch::Contains("input must have 3 rows, found 4"));
  Matrix good(3, 5), short_a1(8, 4);
  CHECK_THROWS_WITH(mlp.forward(good, short_a1, a2, out), Catch::Contains("activations must be [8, 5]"));
  const int64_t classes[5] = {0, 0, 0, 0, 0};
  CHECK_THROWS_WITH(mlp.fill_input(0.0, y, classes, good), Catch::Contains("unconditional but got z"));
  CHECK_THROWS_WITH(mlp.copy_from(models::TimeStateMlp(
                        models::TimeStateMlpOptions{.state_dim = 1, .out_dim = 2, .classes = 0, .hidden = 8})),
                    Catch::Contains("the networks differ in shape"));
}

TEST_CASE("the fused ratio estimator is RatioScore's, floor included", "[models][eigen][ratio]") {
  const Schedule schedule({.horizon = 5.0});
  auto generator = make_generator(4);
  SECTION("unconditional, 2-D, near and far from the data") {
    const torch::Tensor data = torch::randn({300, 2}, generator, torch::kDouble);
    const Estimate reference(schedule, data);
    models::EigenRatioScore<double> fused(reference);
    // Rows of y at growing distances: inside the data, where the floor starts to
    // bind (total density near 1e-8), and far beyond it.
    const torch::Tensor directions = torch::randn({60, 2}, generator, torch::kDouble);
    const torch::Tensor radii = torch::linspace(0.0, 12.0, 60, torch::kDouble).unsqueeze(1);
    const torch::Tensor y = directions / directions.norm(2, 1, true) * radii;
    for (const double t : {0.0, 2.5, 4.5, 4.9}) {
      const torch::Tensor expected = reference.score(t, y, {});
      Matrix out(2, 60);
      fused.score(schedule, t, columns_of(y), nullptr, out);
      INFO("t = " << t);
      CHECK(relative_error(tensor_of(out).t(), expected) < 1e-10);
      // Row by row as well, so that the damped far rows (tiny values) are checked too.
      for (int64_t b = 0; b < 60; ++b) {
        const torch::Tensor row = expected[b];
        const double scale = std::max(row.abs().max().item<double>(), 1e-300);
        CHECK((tensor_of(out).t()[b] - row).abs().max().item<double>() / scale < 1e-8);
      }
    }
    // The floor binds: at t = 4.5 (s = 0.5), a point 8 away has a total density far
    // below 1e-8, and the estimate is damped well below the undamped score.
    const models::RatioScore<Schedule> no_floor(schedule, data, {}, {.density_floor = 1e-300});
    const torch::Tensor far = torch::tensor({{8.0, 0.0}}, torch::kDouble);
    CHECK(reference.score(4.5, far, {}).abs().max().item<double>() <
          1e-3 * no_floor.score(4.5, far, {}).abs().max().item<double>());
  }
  SECTION("conditional, 1-D, with an empty class") {
    const torch::Tensor labels = torch::randint(2, {300}, generator, torch::kLong);
    const torch::Tensor data =
        (4.0 * labels.to(torch::kDouble) - 2.0).unsqueeze(1) + 0.5 * torch::randn({300, 1}, generator, torch::kDouble);
    const Estimate reference(schedule, data, labels);
    models::EigenRatioScore<double> fused(reference);
    const torch::Tensor y = torch::linspace(-9.0, 9.0, 50, torch::kDouble).unsqueeze(1);
    const torch::Tensor z = torch::randint(3, {50}, generator, torch::kLong);  // class 2 has no data
    for (const double t : {1.0, 4.0, 4.9}) {
      Matrix out(1, 50);
      fused.score(schedule, t, columns_of(y), z.data_ptr<int64_t>(), out);
      const torch::Tensor expected = reference.score(t, y, z);
      INFO("t = " << t);
      CHECK(relative_error(tensor_of(out).t(), expected) < 1e-10);
    }
  }
  SECTION("errors") {
    models::EigenRatioScore<double> fused(torch::zeros({4, 2}, torch::kDouble));
    Matrix y(3, 5), out(2, 5);
    CHECK_THROWS_WITH(fused.score(schedule, 1.0, y, nullptr, out), Catch::Contains("y must be [2, B], found [3, 5]"));
    const int64_t z[5] = {};
    Matrix y2(2, 5);
    CHECK_THROWS_WITH(fused.score(schedule, 1.0, y2, z, out), Catch::Contains("the data has no labels"));
    CHECK_THROWS_WITH(fused.score(schedule, 5.0, y2, nullptr, out), Catch::Contains("sigma(s) is 0"));
  }
}

namespace {

template <class Reward, class Simulator = sde::EulerMaruyama>
void compare_episodes(const torch::Tensor& data, const torch::Tensor& labels, int64_t classes, Reward reward,
                      Simulator simulator = {}) {
  const Schedule schedule({.horizon = 2.0});
  const algorithms::QLearningOptions options{
      .temperature = 0.1, .beta = 2.0, .dt = 0.1, .batch = 64, .learning_rate = 0.01, .dtype = torch::kDouble};
  const int64_t dim = data.size(1);
  algorithms::QLearning<Schedule, Estimate, Reward, Simulator> torch_learner(schedule, Estimate(schedule, data, labels),
                                                                             dim, classes, options, reward, simulator);
  algorithms::QLearning<Schedule, Estimate, Reward, Simulator, algorithms::EigenBackend<double>> eigen_learner(
      schedule, Estimate(schedule, data, labels), dim, classes, options, reward, simulator);
  eigen_learner.policy().copy_from(torch_learner.policy());
  eigen_learner.value().copy_from(torch_learner.value());

  auto torch_generator = make_generator(11), eigen_generator = make_generator(11);
  for (int episode = 0; episode < 3; ++episode) {
    const auto expected = torch_learner.train_episode(torch_generator);
    const auto found = eigen_learner.train_episode(eigen_generator);
    INFO("episode " << episode << ": loss " << found.loss << " vs " << expected.loss << ", reward "
                    << found.terminal_reward << " vs " << expected.terminal_reward << ", gap " << found.score_gap
                    << " vs " << expected.score_gap);
    CHECK(found.loss == Approx(expected.loss).epsilon(1e-5));
    CHECK(found.terminal_reward == Approx(expected.terminal_reward).epsilon(1e-5));
    CHECK(found.score_gap == Approx(expected.score_gap).epsilon(1e-5));
    // The gradients of this episode's loss, then the weights after Adam's step.
    CHECK(parameter_error(eigen_learner.policy(), torch_learner.policy(), true) < 1e-5);
    CHECK(parameter_error(eigen_learner.value(), torch_learner.value(), true) < 1e-5);
    CHECK(parameter_error(eigen_learner.policy(), torch_learner.policy(), false) < 1e-5);
    CHECK(parameter_error(eigen_learner.value(), torch_learner.value(), false) < 1e-5);
  }
  // Sampling from the same weights with the same noise.
  auto a = make_generator(5), b = make_generator(5);
  const torch::Tensor z = classes > 0 ? torch::arange(40, torch::kLong) % classes : torch::Tensor{};
  CHECK(relative_error(eigen_learner.sample(40, z, a), torch_learner.sample(40, z, b)) < 1e-10);
}

}  // namespace

TEST_CASE("Eigen and LibTorch backends train alike from the same weights and noise", "[algorithms][qlearning][eigen]") {
  // The Eigen backend splits the batch over two threads when LibTorch may use two.
  const int threads = GENERATE(1, 2);
  const int kept_threads = torch::get_num_threads();
  torch::set_num_threads(threads);
  INFO("threads " << threads);
  auto generator = make_generator(0);
  SECTION("unconditional, 2-D, with a reward") {
    compare_episodes(torch::randn({120, 2}, generator, torch::kDouble), {}, 0, NearTwo{});
  }
  SECTION("conditional, 1-D") {
    const torch::Tensor labels = torch::randint(2, {120}, generator, torch::kLong);
    const torch::Tensor data =
        (4.0 * labels.to(torch::kDouble) - 2.0).unsqueeze(1) + 0.5 * torch::randn({120, 1}, generator, torch::kDouble);
    compare_episodes(data, labels, 2, NearTwo{});
  }
  SECTION("probability-flow simulator, no reward") {
    compare_episodes(torch::randn({120, 1}, generator, torch::kDouble), {}, 0, algorithms::NoReward{},
                     sde::ProbabilityFlowEuler{});
  }
  SECTION("DDIM simulator, 2-D, with a reward") {
    compare_episodes(torch::randn({120, 2}, generator, torch::kDouble), {}, 0, NearTwo{}, sde::Ddim{});
  }
  torch::set_num_threads(kept_threads);
}

TEST_CASE("a checkpoint written by either backend loads into the other", "[algorithms][qlearning][eigen]") {
  const Schedule schedule({.horizon = 2.0});
  const torch::Tensor data = torch::randn({50, 2}), labels = torch::zeros({50}, torch::kLong);
  using TorchLearner = algorithms::QLearning<Schedule, Estimate>;
  using EigenLearner = algorithms::QLearning<Schedule, Estimate, algorithms::NoReward, sde::EulerMaruyama,
                                             algorithms::EigenBackend<float>>;
  const algorithms::QLearningOptions options{.dt = 0.5, .batch = 16};
  const testing::TempDir dir;
  auto generator = make_generator(3);

  EigenLearner eigen_learner(schedule, Estimate(schedule, data, labels), 2, 1, options);
  eigen_learner.train_episode(generator);
  eigen_learner.save(dir / "eigen.pt");
  TorchLearner torch_learner(schedule, Estimate(schedule, data, labels), 2, 1, options);
  torch_learner.load(dir / "eigen.pt");
  CHECK(relative_error(tensor_of(eigen_learner.policy().second().weight.cast<double>()),
                       torch_learner.policy()->named_parameters()["second.weight"].detach()) == 0.0);

  torch_learner.train_episode(generator);
  torch_learner.save(dir / "torch.pt");
  eigen_learner.load(dir / "torch.pt");
  CHECK(relative_error(tensor_of(eigen_learner.value().first().weight.cast<double>()),
                       torch_learner.value()->named_parameters()["first.weight"].detach()) == 0.0);

  EigenLearner other_shape(schedule, Estimate(schedule, data), 2, 0, options);
  CHECK_THROWS_WITH(other_shape.load(dir / "torch.pt"), Catch::Contains("(state_dim, classes, hidden) = (2, 1, 64)"));
}

TEST_CASE("the Eigen backend rejects what it cannot run", "[algorithms][qlearning][eigen][errors]") {
  const Schedule schedule({.horizon = 2.0});
  const Estimate estimate(schedule, torch::zeros({4, 1}));
  using Learner = algorithms::QLearning<Schedule, Estimate, algorithms::NoReward, sde::EulerMaruyama,
                                        algorithms::EigenBackend<double>>;
  CHECK_THROWS_WITH(Learner(schedule, estimate, 1, 0, {.dt = 0.5}), Catch::Contains("options.dtype must be Double"));
  CHECK_THROWS_WITH(
      Learner(schedule, estimate, 1, 0, {.dt = 0.5, .device = torch::Device("cuda"), .dtype = torch::kDouble}),
      Catch::Contains("runs on the CPU only"));
  // States of 2 dimensions against 1-D data.
  Learner learner(schedule, estimate, 2, 0, {.dt = 0.5, .batch = 8, .dtype = torch::kDouble});
  auto generator = make_generator(0);
  CHECK_THROWS_WITH(learner.train_episode(generator),
                    Catch::Contains("data is 1-dimensional, the states 2-dimensional"));
  // DDIM with x0 clipping is not affine in the state.
  algorithms::QLearning<Schedule, Estimate, algorithms::NoReward, sde::Ddim, algorithms::EigenBackend<double>> clipped(
      schedule, estimate, 1, 0, {.dt = 0.5, .batch = 8, .dtype = torch::kDouble}, {}, sde::Ddim({.clip_x0 = 0.1}));
  CHECK_THROWS_WITH(clipped.train_episode(generator), Catch::Contains("ddim does not step affinely"));
}

TEST_CASE("set_learning_rate changes both backends' next Adam step", "[algorithms][qlearning][eigen]") {
  // An Adam step moves each weight by about the learning rate, whatever the
  // gradient's scale: at 1e-9 the weights barely move, at 0.01 they do.
  const Schedule schedule({.horizon = 2.0});
  auto generator = make_generator(0);
  const torch::Tensor data = torch::randn({60, 1}, generator, torch::kDouble);
  const algorithms::QLearningOptions options{.dt = 0.5, .batch = 16, .learning_rate = 0.01, .dtype = torch::kDouble};
  algorithms::QLearning<Schedule, Estimate> torch_learner(schedule, Estimate(schedule, data), 1, 0, options);
  algorithms::QLearning<Schedule, Estimate, algorithms::NoReward, sde::EulerMaruyama, algorithms::EigenBackend<double>>
      eigen_learner(schedule, Estimate(schedule, data), 1, 0, options);
  const auto largest_move = [&](auto& learner) {
    const auto weights = [&] {
      std::vector<torch::Tensor> flat;
      for (const auto& p : learner.backend().networks().first->parameters())
        flat.push_back(p.detach().flatten().clone());
      return torch::cat(flat);
    };
    const torch::Tensor before = weights();
    learner.train_episode(generator);
    return (weights() - before).abs().max().template item<double>();
  };
  for (const double rate : {1e-9, 0.01}) {
    torch_learner.set_learning_rate(rate);
    eigen_learner.set_learning_rate(rate);
    const double torch_move = largest_move(torch_learner), eigen_move = largest_move(eigen_learner);
    INFO("learning rate " << rate << ": largest move " << torch_move << " (LibTorch), " << eigen_move << " (Eigen)");
    CHECK(torch_move < 10.0 * rate);
    CHECK(eigen_move < 10.0 * rate);
    CHECK(torch_move > 0.1 * rate);
    CHECK(eigen_move > 0.1 * rate);
  }
  CHECK_THROWS_WITH(eigen_learner.set_learning_rate(0.0), Catch::Contains("learning rate must be > 0"));
  CHECK_THROWS_WITH(torch_learner.set_learning_rate(-1.0), Catch::Contains("learning rate must be > 0"));
}
