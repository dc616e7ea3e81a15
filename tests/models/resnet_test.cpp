#include <catch2/catch.hpp>

#include <cstdint>

#include <torch/torch.h>

#include "diffctl/models/resnet.hpp"

using diffctl::models::ResNet18;
using diffctl::models::ResNet18Options;

namespace {
int64_t parameter_count(const ResNet18& net) {
  int64_t total = 0;
  for (const auto& p : net->parameters()) total += p.numel();
  return total;
}
}  // namespace

TEST_CASE("ResNet18 logits and features have the expected shapes", "[resnet]") {
  torch::manual_seed(0);
  ResNet18 net(ResNet18Options{1, 7, 0.25});
  CHECK(net->feature_dim() == 128);
  const torch::Tensor x = torch::randn({3, 1, 28, 28});
  CHECK(net->forward(x).sizes() == torch::IntArrayRef({3, 7}));
  CHECK(net->features(x).sizes() == torch::IntArrayRef({3, 128}));
  // Stage widths 16, 32, 64, 128 at width 0.25.
  const auto params = net->named_parameters();
  CHECK(params["conv1.weight"].sizes() == torch::IntArrayRef({16, 1, 3, 3}));
  CHECK(params["layer2.0.downsample.0.weight"].sizes() == torch::IntArrayRef({32, 16, 1, 1}));
  CHECK(params["layer4.1.conv2.weight"].sizes() == torch::IntArrayRef({128, 128, 3, 3}));
  CHECK(params["fc.weight"].sizes() == torch::IntArrayRef({7, 128}));
}

TEST_CASE("ResNet18 CIFAR variant has torchvision's names and 11,173,962 parameters", "[resnet]") {
  ResNet18 net(ResNet18Options{});
  CHECK(net->feature_dim() == 512);
  CHECK(parameter_count(net) == 11'173'962);
  const auto params = net->named_parameters();
  CHECK(params["conv1.weight"].sizes() == torch::IntArrayRef({64, 3, 3, 3}));
  CHECK(params.find("conv1.bias") == nullptr);
  CHECK(params["layer1.0.conv1.weight"].sizes() == torch::IntArrayRef({64, 64, 3, 3}));
  CHECK(params["layer1.0.bn1.weight"].sizes() == torch::IntArrayRef({64}));
  CHECK(params.find("layer1.0.downsample.0.weight") == nullptr);
  CHECK(params["layer2.0.conv1.weight"].sizes() == torch::IntArrayRef({128, 64, 3, 3}));
  CHECK(params["layer2.0.downsample.0.weight"].sizes() == torch::IntArrayRef({128, 64, 1, 1}));
  CHECK(params["layer2.0.downsample.1.weight"].sizes() == torch::IntArrayRef({128}));
  CHECK(params["layer4.1.conv2.weight"].sizes() == torch::IntArrayRef({512, 512, 3, 3}));
  CHECK(params["fc.weight"].sizes() == torch::IntArrayRef({10, 512}));
  CHECK(params["fc.bias"].sizes() == torch::IntArrayRef({10}));
  CHECK(params.size() == 62);
  const auto buffers = net->named_buffers();
  for (const char* name : {"bn1.running_mean", "layer4.1.bn2.running_mean", "layer4.1.bn2.running_var",
                           "layer3.0.downsample.1.running_var", "layer1.0.bn1.num_batches_tracked"}) {
    INFO(name);
    CHECK(buffers.find(name) != nullptr);
  }
}

TEST_CASE("ResNet18 BatchNorm: batch statistics in training, running ones in eval", "[resnet]") {
  torch::manual_seed(1);
  ResNet18 net(ResNet18Options{3, 10, 0.125});
  const torch::Tensor batch = torch::randn({4, 3, 16, 16});
  const torch::Tensor first = batch.slice(0, 0, 1);

  net->train();
  const torch::Tensor mean_before = net->named_buffers()["bn1.running_mean"].clone();
  const torch::Tensor train_batch = net->forward(batch);
  const torch::Tensor train_other = net->forward(torch::cat({first, torch::randn({3, 3, 16, 16})}));
  CHECK_FALSE(torch::allclose(train_batch[0], train_other[0], 1e-4, 1e-5));
  CHECK_FALSE(torch::equal(net->named_buffers()["bn1.running_mean"], mean_before));

  net->eval();
  const torch::Tensor eval_batch = net->forward(batch);
  const torch::Tensor eval_alone = net->forward(first);
  CHECK(torch::allclose(eval_batch[0], eval_alone[0], 1e-4, 1e-5));
  CHECK(torch::equal(net->forward(batch), eval_batch));
}

TEST_CASE("ResNet18 clone keeps statistics and mode", "[resnet]") {
  torch::manual_seed(2);
  ResNet18 net(ResNet18Options{1, 10, 0.125});
  net->forward(torch::randn({4, 1, 12, 12}));  // moves the running statistics
  net->eval();
  auto copy = std::dynamic_pointer_cast<ResNet18::Impl>(net->clone());
  REQUIRE(copy != nullptr);
  CHECK_FALSE(copy->is_training());
  const torch::Tensor x = torch::randn({2, 1, 12, 12});
  CHECK(torch::equal(net->forward(x), copy->forward(x)));
  CHECK(copy->named_buffers()["layer1.0.bn1.num_batches_tracked"].scalar_type() == torch::kLong);
}

TEST_CASE("ResNet18 rejects bad options and inputs", "[resnet]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(ResNet18(ResNet18Options{3, 10, 0.0}), Contains("width must be > 0, found 0"));
  CHECK_THROWS_WITH(ResNet18(ResNet18Options{3, 0, 1.0}), Contains("num_classes must be >= 1"));
  ResNet18 net(ResNet18Options{3, 10, 0.125});
  CHECK_THROWS_WITH(net->forward(torch::randn({2, 1, 8, 8})), Contains("x must be [B, 3, H, W], found [2, 1, 8, 8]"));
}

TEST_CASE("ResNet18 runs on CUDA", "[resnet][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("CUDA is not available: ResNet18 CUDA test skipped");
    return;
  }
  torch::manual_seed(3);
  ResNet18 net(ResNet18Options{3, 10, 0.25});
  net->eval();
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  const torch::Tensor on_cpu = net->forward(x);
  net->to(torch::kCUDA);
  const torch::Tensor on_gpu = net->forward(x.cuda());
  CHECK(on_gpu.device().is_cuda());
  CHECK(torch::allclose(on_gpu.cpu(), on_cpu, 1e-3, 1e-4));
}
