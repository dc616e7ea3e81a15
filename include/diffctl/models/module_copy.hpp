#pragma once
// Copies of networks: weights from one instance into another of the same
// architecture (moving averages, restored snapshots), and deep copies of modules
// that are rebuilt from their options.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::models {

// Copies every parameter and buffer of `from` into `to`, matched by name and shape.
inline void copy_weights(const torch::nn::Module& from, torch::nn::Module& to) {
  const auto params = from.named_parameters();
  const auto buffers = from.named_buffers();
  auto target_params = to.named_parameters();
  auto target_buffers = to.named_buffers();
  require(params.size() == target_params.size() && buffers.size() == target_buffers.size(),
          "copy_weights: the modules differ (", params.size(), " + ", buffers.size(), " vs ", target_params.size(),
          " + ", target_buffers.size(), " tensors)");
  torch::NoGradGuard no_grad;
  const auto copy = [](const auto& source, auto& target) {
    for (auto& item : target) {
      const torch::Tensor* value = source.find(item.key());
      require(value != nullptr && value->sizes() == item.value().sizes(), "copy_weights: ", item.key(), " ",
              item.value().sizes(), " has no counterpart of that shape");
      item.value().copy_(*value);
    }
  };
  copy(params, target_params);
  copy(buffers, target_buffers);
}

// A deep copy of `module` built as Impl(options): same weights, buffers, device,
// dtype (of the floating tensors; integer buffers such as BatchNorm's
// num_batches_tracked keep theirs) and train/eval mode. For Module::clone overrides.
template <class Impl, class Options>
std::shared_ptr<torch::nn::Module> deep_copy(const Impl& module, const Options& options,
                                             const c10::optional<torch::Device>& device) {
  auto copy = std::make_shared<Impl>(options);
  const torch::Tensor first = module.parameters().front();
  copy->to(device.value_or(first.device()));
  if (first.scalar_type() != torch::kFloat) copy->to(first.scalar_type());
  copy_weights(module, *copy);
  copy->train(module.is_training());
  return copy;
}

// An independent copy of a module holder's network (Net::Impl must implement
// clone(), as torch::nn::Cloneable modules and this library's networks do).
template <class Net>
Net clone_module(const Net& net) {
  auto copy = std::dynamic_pointer_cast<typename Net::Impl>(net.ptr()->clone());
  require(copy != nullptr, "clone_module: the clone has another type than the original");
  return Net(std::move(copy));
}

}  // namespace diffctl::models
