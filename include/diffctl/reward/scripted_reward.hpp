#pragma once
// A reward brought as a TorchScript file (made in Python with torch.jit.script or
// torch.jit.trace, then .save(...)): its forward(images, prompts) returns one reward
// per image. With it, the oracle can be any model its user has, not only one
// compiled into the binary:
//
//   reward::Oracle oracle(reward::ScriptedReward("rater.pt", device), {...});
//
// The module is called as forward(x [B, ...] float32, z [B] int64) -> [B]; an
// unconditional run passes z as an empty int64 tensor [0]. Every answer is checked
// (a tensor, [B], finite) before anything is labelled with it, and an error names
// the file.

#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "diffctl/error.hpp"

namespace diffctl::reward {

class ScriptedReward {
 public:
  explicit ScriptedReward(std::filesystem::path file, torch::Device device = torch::kCPU)
      : file_(std::move(file)), device_(device) {
    require(std::filesystem::is_regular_file(file_), name(), ": no such file");
    try {
      module_ = std::make_shared<torch::jit::Module>(torch::jit::load(file_.string(), device_));
    } catch (const c10::Error& error) {
      throw std::invalid_argument(name() + ": not a TorchScript file that LibTorch can load (" +
                                  error.what_without_backtrace() + ")");
    }
    require(module_->find_method("forward").has_value(), name(), ": the module has no forward method");
    module_->eval();
  }

  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& z) const {
    require(x.defined() && x.dim() >= 1, name(), ": x must be a batch [B, ...]");
    const int64_t batch = x.size(0);
    require(!z.defined() || (z.dim() == 1 && z.size(0) == batch && z.scalar_type() == torch::kLong), name(), ": ",
            batch, " samples but z is ", z.defined() ? z.sizes() : torch::IntArrayRef{}, " (expected int64 [", batch,
            "])");
    const torch::Tensor prompts =
        z.defined() ? z.to(device_) : torch::empty({0}, torch::TensorOptions(torch::kLong).device(device_));
    c10::IValue answer;
    try {
      answer = module_->forward({x.to(device_, torch::kFloat), prompts});
    } catch (const c10::Error& error) {
      throw std::invalid_argument(name() + ": forward(x " + shape_of(x) +
                                  ", z) failed: " + error.what_without_backtrace());
    }
    require(answer.isTensor(), name(), ": forward returned a ", answer.tagKind(), ", expected a tensor [", batch, "]");
    torch::Tensor rewards = answer.toTensor();
    require(rewards.dim() == 1 && rewards.size(0) == batch, name(), ": forward returned ", shape_of(rewards), " for ",
            batch, " samples, expected [", batch, "]");
    require(rewards.is_floating_point(), name(), ": forward returned ", toString(rewards.scalar_type()),
            " values, expected floating point");
    const torch::Tensor bad = torch::isfinite(rewards).logical_not().nonzero();
    require(bad.numel() == 0, name(), ": forward returned ", bad.numel() ? rewards[bad[0][0]].item<double>() : 0.0,
            " for sample ", bad.numel() ? bad[0][0].item<int64_t>() : 0, " (rewards must be finite)");
    return rewards.to(x.device());
  }

  const std::filesystem::path& file() const { return file_; }

 private:
  std::string name() const { return "oracle script " + file_.string(); }
  static std::string shape_of(const torch::Tensor& t) {
    std::ostringstream out;
    out << t.sizes();
    return out.str();
  }

  std::filesystem::path file_;
  torch::Device device_;
  // Shared: copies of the reward call the same module (its methods are not const).
  std::shared_ptr<torch::jit::Module> module_;
};

}  // namespace diffctl::reward
