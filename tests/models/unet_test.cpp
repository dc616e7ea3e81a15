#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/models/diffusion_features.hpp"
#include "diffctl/models/unet.hpp"
#include "diffctl/reward/ensemble.hpp"
#include "diffctl/reward/feedback_dataset.hpp"
#include "diffctl/reward/members.hpp"

using diffctl::models::UNet;
using diffctl::models::UNetOptions;

namespace {

// Moves every parameter off its initial value, so that the zero-initialised output
// convolutions no longer hide what the rest of the network does.
void perturb(UNet& net, double scale = 0.05) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(scale * torch::randn_like(p));
}

int64_t parameter_count(const UNet& net) {
  int64_t total = 0;
  for (const auto& p : net->parameters()) total += p.numel();
  return total;
}

}  // namespace

TEST_CASE("UNet output has the input's shape", "[unet]") {
  torch::manual_seed(0);
  struct Case {
    std::string name;
    UNetOptions options;
    std::vector<int64_t> shape;
  };
  UNetOptions four_levels = UNetOptions::small(28, 1, 0);
  four_levels.channel_mult = {1, 1, 1, 1};
  four_levels.resblock_updown = true;  // 28 -> 14 -> 7 -> 3, upsampled 3 -> 7 as the reference
  UNetOptions legacy = UNetOptions::small(32, 3, 10);
  legacy.new_attention_order = false;
  legacy.scale_shift_norm = false;
  legacy.conv_resample = false;
  const std::vector<Case> cases = {
      {"small 1x28x28 unconditional", UNetOptions::small(28, 1, 0), {2, 1, 28, 28}},
      {"small 1x28x28 conditional", UNetOptions::small(28, 1, 10), {2, 1, 28, 28}},
      {"small 3x32x32 conditional", UNetOptions::small(32, 3, 10), {2, 3, 32, 32}},
      {"four levels on 28x28", four_levels, {2, 1, 28, 28}},
      {"legacy attention, additive time, pooling", legacy, {2, 3, 32, 32}},
  };
  for (const auto& c : cases) {
    SECTION(c.name) {
      UNet net(c.options);
      perturb(net);
      const torch::Tensor x = torch::randn(c.shape);
      const torch::Tensor t = torch::tensor({3.5, 900.0});
      const torch::Tensor y = c.options.num_classes > 0 ? torch::tensor({1, 7}, torch::kLong) : torch::Tensor();
      const torch::Tensor eps = net->forward(x, t, y);
      CHECK(eps.sizes() == x.sizes());
      CHECK(torch::isfinite(eps).all().item<bool>());
    }
  }
}

TEST_CASE("UNet paper preset has minimal-diffusion's parameter names and shapes", "[unet]") {
  UNet net(UNetOptions::paper(32, 3, 10));
  const auto params = net->named_parameters();
  // Read off unets.py (UNet(): base 64, mult (1,2,2,2), 3 ResBlocks per level, attention
  // at downsample factors 1, 2, 4, 64-channel heads, scale-shift norm, ResBlock up/down).
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"time_embed.0.weight", {256, 64}},
      {"time_embed.0.bias", {256}},
      {"time_embed.2.weight", {256, 256}},
      {"label_emb.weight", {10, 256}},
      {"input_blocks.0.0.weight", {64, 3, 3, 3}},
      {"input_blocks.0.0.bias", {64}},
      {"input_blocks.1.0.in_layers.0.weight", {64}},
      {"input_blocks.1.0.in_layers.2.weight", {64, 64, 3, 3}},
      {"input_blocks.1.0.emb_layers.1.weight", {128, 256}},
      {"input_blocks.1.0.emb_layers.1.bias", {128}},
      {"input_blocks.1.0.out_layers.0.bias", {64}},
      {"input_blocks.1.0.out_layers.3.weight", {64, 64, 3, 3}},
      {"input_blocks.1.1.norm.weight", {64}},
      {"input_blocks.1.1.qkv.weight", {192, 64, 1}},
      {"input_blocks.1.1.qkv.bias", {192}},
      {"input_blocks.1.1.proj_out.weight", {64, 64, 1}},
      {"input_blocks.4.0.in_layers.2.weight", {64, 64, 3, 3}},  // downsampling ResBlock
      {"input_blocks.5.0.skip_connection.weight", {128, 64, 1, 1}},
      {"input_blocks.5.0.emb_layers.1.weight", {256, 256}},
      {"input_blocks.5.1.qkv.weight", {384, 128, 1}},
      {"input_blocks.12.0.out_layers.3.weight", {128, 128, 3, 3}},
      {"input_blocks.15.0.in_layers.2.weight", {128, 128, 3, 3}},
      {"middle_block.0.emb_layers.1.weight", {256, 256}},
      {"middle_block.1.qkv.weight", {384, 128, 1}},
      {"middle_block.1.proj_out.bias", {128}},
      {"middle_block.2.out_layers.3.weight", {128, 128, 3, 3}},
      {"output_blocks.0.0.in_layers.0.weight", {256}},
      {"output_blocks.0.0.in_layers.2.weight", {128, 256, 3, 3}},
      {"output_blocks.0.0.skip_connection.weight", {128, 256, 1, 1}},
      {"output_blocks.3.1.in_layers.2.weight", {128, 128, 3, 3}},  // upsampling ResBlock
      {"output_blocks.4.1.qkv.weight", {384, 128, 1}},
      {"output_blocks.7.2.out_layers.3.weight", {128, 128, 3, 3}},
      {"output_blocks.11.0.in_layers.0.weight", {192}},
      {"output_blocks.11.0.skip_connection.weight", {128, 192, 1, 1}},
      {"output_blocks.12.0.in_layers.2.weight", {64, 192, 3, 3}},
      {"output_blocks.12.0.skip_connection.weight", {64, 192, 1, 1}},
      {"output_blocks.15.0.in_layers.2.weight", {64, 128, 3, 3}},
      {"output_blocks.15.1.proj_out.weight", {64, 64, 1}},
      {"out.0.weight", {64}},
      {"out.2.weight", {3, 64, 3, 3}},
      {"out.2.bias", {3}},
  };
  for (const auto& [name, shape] : expected) {
    INFO(name);
    const torch::Tensor* p = params.find(name);
    REQUIRE(p != nullptr);
    CHECK(p->sizes() == torch::IntArrayRef(shape));
  }
  // Where the reference has no parameters: no attention at factor 8, no Downsample /
  // Upsample convs (ResBlocks resample), no skip conv where channels stay the same.
  for (const char* absent :
       {"input_blocks.15.1.qkv.weight", "output_blocks.0.1.qkv.weight", "input_blocks.4.0.op.weight",
        "output_blocks.3.1.conv.weight", "input_blocks.1.0.skip_connection.weight"}) {
    INFO(absent);
    CHECK(params.find(absent) == nullptr);
  }
  CHECK(net->named_buffers().size() == 0);
  // Counted by hand from the architecture: 36 ResBlocks (10 tensors each, 12 with a
  // skip conv: 9 of them), 22 attention blocks (6 each), time_embed (4), label_emb (1),
  // input conv (2), out (4): 537 tensors and 14,419,651 numbers.
  CHECK(params.size() == 537);
  CHECK(parameter_count(net) == 14'419'651);
  UNet unconditional(UNetOptions::paper(32, 3, 0));
  CHECK(parameter_count(unconditional) == 14'419'651 - 10 * 256);
}

TEST_CASE("UNet predicts exactly zero at initialisation", "[unet]") {
  torch::manual_seed(1);
  UNet net(UNetOptions::small(28, 1, 10));
  const torch::Tensor eps = net->forward(torch::randn({3, 1, 28, 28}), torch::tensor({0.0, 10.0, 999.0}),
                                         torch::tensor({0, 5, 9}, torch::kLong));
  CHECK(eps.abs().max().item<float>() == 0.0f);
}

TEST_CASE("UNet output depends on the time and the label", "[unet]") {
  torch::manual_seed(2);
  UNet net(UNetOptions::small(28, 1, 10));
  perturb(net);
  net->eval();  // no dropout: differences come from the inputs only
  const torch::Tensor x = torch::randn({1, 1, 28, 28}).repeat({2, 1, 1, 1});
  const torch::Tensor y = torch::tensor({3, 3}, torch::kLong);
  const torch::Tensor by_time = net->forward(x, torch::tensor({10.0, 500.0}), y);
  CHECK((by_time[0] - by_time[1]).abs().max().item<float>() > 1e-4);
  // A fractional timestep is a different input, too.
  const torch::Tensor fractional = net->forward(x, torch::tensor({10.0, 10.5}), y);
  CHECK((fractional[0] - fractional[1]).abs().max().item<float>() > 1e-6);
  const torch::Tensor by_label = net->forward(x, torch::tensor({10.0, 10.0}), torch::tensor({3, 4}, torch::kLong));
  CHECK((by_label[0] - by_label[1]).abs().max().item<float>() > 1e-4);
  const torch::Tensor same = net->forward(x, torch::tensor({10.0, 10.0}), y);
  CHECK((same[0] - same[1]).abs().max().item<float>() < 1e-5);
}

TEST_CASE("UNet timestep embedding is minimal-diffusion's sinusoid", "[unet]") {
  const torch::Tensor e = UNet::Impl::timestep_embedding(torch::tensor({0.0, 2.0}), 4);
  // dim 4: frequencies 1 and 10000^(-1/2) = 0.01, cos then sin.
  const torch::Tensor expected =
      torch::tensor({{1.0, 1.0, 0.0, 0.0}, {std::cos(2.0), std::cos(0.02), std::sin(2.0), std::sin(0.02)}});
  CHECK(torch::allclose(e, expected.to(torch::kFloat), 1e-5, 1e-6));
  CHECK(UNet::Impl::timestep_embedding(torch::tensor({1.0}), 5).sizes() == torch::IntArrayRef({1, 5}));
}

TEST_CASE("UNet gradients reach every parameter", "[unet]") {
  torch::manual_seed(3);
  UNet net(UNetOptions::small(28, 1, 10));
  perturb(net);
  const torch::Tensor eps = net->forward(torch::randn({4, 1, 28, 28}), torch::tensor({1.0, 200.0, 400.0, 999.0}),
                                         torch::tensor({0, 1, 2, 3}, torch::kLong));
  eps.pow(2).mean().backward();
  for (const auto& p : net->named_parameters()) {
    INFO(p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(torch::isfinite(p.value().grad()).all().item<bool>());
    CHECK(p.value().grad().abs().sum().item<double>() > 0.0);
  }
}

TEST_CASE("UNet clone copies parameters and mode", "[unet]") {
  torch::manual_seed(4);
  UNet net(UNetOptions::small(28, 1, 0));
  perturb(net);
  net->eval();
  auto copy = std::dynamic_pointer_cast<UNet::Impl>(net->clone());
  REQUIRE(copy != nullptr);
  CHECK_FALSE(copy->is_training());
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  const torch::Tensor t = torch::tensor({5.0, 50.0});
  CHECK(torch::equal(net->forward(x, t), copy->forward(x, t)));
  perturb(net);
  CHECK_FALSE(torch::equal(net->forward(x, t), copy->forward(x, t)));
}

TEST_CASE("UNet rejects bad options and inputs", "[unet]") {
  using Catch::Contains;
  UNetOptions bad_width = UNetOptions::small(28, 1, 0);
  bad_width.base_width = 20;
  CHECK_THROWS_WITH(UNet(bad_width), Contains("20 channels; GroupNorm needs a positive multiple of norm_groups = 8"));
  CHECK_THROWS_WITH(UNet(UNetOptions::small(30, 1, 0)), Contains("image_size 30 does not fit 3 levels"));
  CHECK_THROWS_WITH(UNet(UNetOptions::small(30, 1, 0)), Contains("use a multiple of 4"));
  UNetOptions bad_heads = UNetOptions::small(28, 1, 0);
  bad_heads.head_channels = 48;
  CHECK_THROWS_WITH(UNet(bad_heads), Contains("not divisible into heads"));

  UNet conditional(UNetOptions::small(28, 1, 10));
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  const torch::Tensor t = torch::tensor({1.0, 2.0});
  const torch::Tensor y = torch::tensor({0, 9}, torch::kLong);
  CHECK_THROWS_WITH(conditional->forward(torch::randn({2, 3, 28, 28}), t, y),
                    Contains("x must be [B, 1, H, W], found [2, 3, 28, 28]"));
  CHECK_THROWS_WITH(conditional->forward(torch::randn({2, 1, 30, 28}), t, y),
                    Contains("x's height 30 does not fit 3 levels"));
  CHECK_THROWS_WITH(conditional->forward(x, torch::tensor({1.0}), y), Contains("t must be [2]"));
  CHECK_THROWS_WITH(conditional->forward(x, t), Contains("is conditional (num_classes = 10) and needs labels"));
  CHECK_THROWS_WITH(conditional->forward(x, t, torch::tensor({0, 10}, torch::kLong)),
                    Contains("labels y must be in [0, 10), found values in [0, 10]"));
  CHECK_THROWS_WITH(conditional->forward(x, t, torch::tensor({0.0, 1.0})), Contains("labels y must be int64 [2]"));
  UNet unconditional(UNetOptions::small(28, 1, 0));
  CHECK_THROWS_WITH(unconditional->forward(x, t, y), Contains("unconditional (num_classes = 0) but got labels"));
}

TEST_CASE("UNet stage outputs: every block's activation, the last one the output layer's input", "[unet]") {
  torch::manual_seed(5);
  UNet net(UNetOptions::small(28, 1, 0));
  perturb(net);
  net->eval();
  const torch::Tensor x = torch::randn({2, 1, 28, 28}), t = torch::tensor({30.0, 700.0});
  const auto stages = net->stage_outputs(x, t);
  // 3 levels of 1 block: 6 input stages (stem, block, down, block, down, block), the
  // middle block, 6 output stages.
  REQUIRE(stages.size() == 13);
  CHECK(stages[0].sizes() == torch::IntArrayRef({2, 16, 28, 28}));
  CHECK(stages[6].sizes() == torch::IntArrayRef({2, 32, 7, 7}));
  CHECK(stages[12].sizes() == torch::IntArrayRef({2, 16, 28, 28}));
  // The first 8 alone (the middle block is stage 6) are the same tensors: nothing
  // is random in evaluation mode, which the features below rely on.
  const auto first = net->stage_outputs(x, t, {}, 8);
  REQUIRE(first.size() == 8);
  for (std::size_t i = 0; i < first.size(); ++i) CHECK(torch::equal(first[i], stages[i]));
}

TEST_CASE("DiffusionFeatures: pooled, standardised stages of a frozen UNet", "[unet][reward]") {
  using Catch::Contains;
  using diffctl::models::DiffusionFeatures;
  using diffctl::models::DiffusionFeaturesOptions;
  torch::manual_seed(6);
  UNet net(UNetOptions::small(28, 1, 0));
  perturb(net);
  DiffusionFeatures features(net, DiffusionFeaturesOptions{.timestep = 50.0});
  // Default: the middle block (stage 6) and the output stage after it, 32 channels each, 3 x 3.
  REQUIRE(features->feature_dim() == 2 * 32 * 9);
  for (const auto& p : features->parameters()) CHECK_FALSE(p.requires_grad());
  {  // Built from a network in training mode, and put in training mode itself, it has no dropout.
    net->train();
    DiffusionFeatures built(net, DiffusionFeaturesOptions{});
    built->train();
    const torch::Tensor x = torch::rand({4, 1, 28, 28});
    CHECK(torch::equal(built->features(x), built->features(x)));
  }
  const torch::Tensor images = torch::rand({64, 1, 28, 28}) * 2 - 1;
  torch::NoGradGuard no_grad;
  net->eval();
  const auto stages = net->stage_outputs(images, torch::full({64}, 50.0));
  const torch::Tensor expected = torch::cat({torch::adaptive_avg_pool2d(stages[6], {3, 3}).flatten(1),
                                             torch::adaptive_avg_pool2d(stages[7], {3, 3}).flatten(1)},
                                            1);
  CHECK(torch::allclose(features->features(images), expected, 1e-5, 1e-6));

  // Standardised on images, their features have mean 0 and standard deviation 1.
  auto copy = diffctl::models::clone_module(features);
  features->standardize(images, 24);
  const torch::Tensor standard = features->features(images);
  CHECK(standard.mean(0).abs().max().item<double>() < 1e-4);
  CHECK((standard.std(0) - 1).abs().max().item<double>() < 1e-3);
  // A copy is independent: the one taken before still gives the raw features, one taken after the standardised.
  CHECK(torch::allclose(copy->features(images), expected, 1e-5, 1e-6));
  CHECK(torch::allclose(diffctl::models::clone_module(features)->features(images), standard, 1e-5, 1e-6));

  CHECK_THROWS_WITH(DiffusionFeatures(net, DiffusionFeaturesOptions{.stages = {13}}),
                    Contains("stage 13 out of range: the network has 13 stages"));
  CHECK_THROWS_WITH(DiffusionFeatures(net, DiffusionFeaturesOptions{.pool = 0}), Contains("pool must be >= 1"));
  CHECK_THROWS_WITH(DiffusionFeatures(net, DiffusionFeaturesOptions{.label = 2}), Contains("an unconditional one -1"));
  UNet conditional(UNetOptions::small(28, 1, 10));
  CHECK_THROWS_WITH(DiffusionFeatures(conditional, DiffusionFeaturesOptions{}), Contains("needs its null label"));
  CHECK(DiffusionFeatures(conditional, DiffusionFeaturesOptions{.label = 9})->features(images).size(0) == 64);
  CHECK_THROWS_WITH(features->standardize(images.narrow(0, 0, 1)), Contains("needs images [N >= 2"));
}

TEST_CASE("A reward ensemble on DiffusionFeatures learns which class an image is", "[unet][reward]") {
  // Class 0 is bright on the left half, class 1 on the right: after 200 scalar labels
  // p(z | x) of the right class is high and of the wrong class low, on unseen images.
  using Members = diffctl::reward::SharedBackboneHeads<diffctl::models::DiffusionFeatures>;
  torch::manual_seed(7);
  auto generator = at::detail::createCPUGenerator(7);
  UNet net(UNetOptions::small(28, 1, 0));
  perturb(net);
  const auto draw = [&](int64_t n) {
    const torch::Tensor label = torch::randint(2, {n}, generator, torch::kLong);
    torch::Tensor x = 0.3 * torch::randn({n, 1, 28, 28}, generator) - 0.5;
    const torch::Tensor left = torch::arange(28).lt(14).to(torch::kFloat).view({1, 1, 1, 28});
    const torch::Tensor side = torch::where(label.eq(0).view({n, 1, 1, 1}), left, 1 - left);
    return std::pair{x + side, label};
  };
  diffctl::models::DiffusionFeatures features(net, diffctl::models::DiffusionFeaturesOptions{});
  features->standardize(draw(200).first);
  diffctl::reward::BootstrapEnsemble ensemble(
      Members::random(features, 3, 2, features->feature_dim(), generator),
      {.fit = {.steps = 200, .batch = 64, .learning_rate = 1e-2, .l2 = 1e-4}, .seed = 1});
  const auto [x, label] = draw(200);
  const torch::Tensor z = torch::randint(2, {200}, generator, torch::kLong);
  diffctl::reward::FeedbackDataset data;
  data.append(x, z, z.eq(label).to(torch::kDouble), 0);
  ensemble.fit(data);
  const auto [test_x, test_label] = draw(100);
  torch::NoGradGuard no_grad;
  const torch::Tensor right = ensemble.mean(test_x, test_label), wrong = ensemble.mean(test_x, 1 - test_label);
  INFO("p of the right class " << right.mean().item<double>() << ", of the wrong one " << wrong.mean().item<double>());
  CHECK(right.mean().item<double>() > 0.85);
  CHECK(wrong.mean().item<double>() < 0.15);
}

TEST_CASE("UNet runs on CUDA", "[unet][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("CUDA is not available: UNet CUDA test skipped");
    return;
  }
  torch::manual_seed(5);
  UNet net(UNetOptions::small(28, 1, 10));
  perturb(net);
  net->eval();
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  const torch::Tensor t = torch::tensor({3.0, 700.0});
  const torch::Tensor y = torch::tensor({2, 8}, torch::kLong);
  const torch::Tensor on_cpu = net->forward(x, t, y);
  net->to(torch::kCUDA);
  // LibTorch lets cuDNN run convolutions in TF32 (a 10-bit mantissa) on GPUs that
  // have it: the same function in full float32 first, then as users run it, to
  // within TF32's precision. Measured on an H200 (torch 2.11, CUDA 13.0): 2.1e-6
  // in float32, 8.8e-4 with TF32, at an output scale of 1.16; with TF32 on, the
  // float32 check below (rtol 1e-3, atol 1e-4) failed there.
  auto& context = at::globalContext();
  const bool tf32 = context.allowTF32CuDNN();
  context.setAllowTF32CuDNN(false);
  const torch::Tensor on_gpu = net->forward(x.cuda(), t.cuda(), y.cuda());
  context.setAllowTF32CuDNN(tf32);
  const torch::Tensor as_run = net->forward(x.cuda(), t.cuda(), y.cuda()).cpu();
  CHECK(on_gpu.device().is_cuda());
  const double scale = on_cpu.abs().max().item<double>();
  INFO("output scale " << scale << "; max |GPU - CPU| in float32 " << (on_gpu.cpu() - on_cpu).abs().max().item<double>()
                       << ", with TF32 " << (tf32 ? "allowed " : "not allowed ")
                       << (as_run - on_cpu).abs().max().item<double>());
  CHECK(torch::allclose(on_gpu.cpu(), on_cpu, 1e-3, 1e-4));
  CHECK((as_run - on_cpu).abs().max().item<double>() <= 1e-2 * scale);
}
