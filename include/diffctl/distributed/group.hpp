#pragma once
// Data parallelism: the processes of a run train one model together, each on its
// shard of every global batch, and combine what they computed through the
// collectives of a Group. The algorithms see only this interface; the processes
// are connected by distributed/c10d.hpp (LibTorch's c10d: Gloo on CPU, NCCL on
// CUDA). The default Group is this process alone: its shard is the whole batch and
// every collective returns its input, so a single process pays nothing.
//
// The convention that makes a run on N processes equal to one process (up to the
// order of floating-point sums): every rank draws the random numbers of the whole
// global batch from the same seeded generator and keeps its shard's rows, and
// gradients are sums over the global batch divided by its size, so summing them
// over ranks gives the one-process gradient.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::distributed {

// A collective failed: a process of the run stopped, or the network did.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a communication backend provides. Tensors are contiguous and on the
// group's device; every rank calls the same collectives in the same order.
class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce_sum(torch::Tensor& tensor) = 0;
  // `gathered` [size * rows, ...] receives every rank's `local` [rows, ...] in rank order.
  virtual void all_gather(torch::Tensor& gathered, const torch::Tensor& local) = 0;
  virtual void broadcast(torch::Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;
};

// The rows [begin, end) of a global batch that one rank works on.
struct Shard {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Rank r's shard of n rows among `ranks`: contiguous, in rank order, the first
// n % ranks shards one row longer (a shard is empty when n < ranks).
inline Shard shard_of(int r, int ranks, int64_t n) {
  require(ranks >= 1 && r >= 0 && r < ranks && n >= 0, "distributed: no shard ", r, " of ", ranks, " in a batch of ", n,
          " rows");
  const int64_t base = n / ranks, extra = n % ranks;
  const int64_t begin = r * base + std::min<int64_t>(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

class Group {
 public:
  Group() = default;  // this process alone
  explicit Group(std::shared_ptr<Collectives> collectives) : collectives_(std::move(collectives)) {}

  int rank() const { return collectives_ ? collectives_->rank() : 0; }
  int size() const { return collectives_ ? collectives_->size() : 1; }
  bool alone() const { return size() == 1; }
  // The rank that writes checkpoints, logs and pictures.
  bool is_main() const { return rank() == 0; }

  // This rank's shard of a global batch of n rows; every rank must get one.
  Shard shard(int64_t n) const {
    require(n >= size(), "distributed: a batch of ", n, " cannot be split over ", size(), " processes");
    return shard_of(rank(), size(), n);
  }

  // This rank's rows of a global batch (an undefined tensor stays undefined).
  torch::Tensor local_rows(const torch::Tensor& global) const {
    if (!global.defined() || alone()) return global;
    const Shard s = shard(global.size(0));
    return global.narrow(0, s.begin, s.size());
  }

  // The sum over ranks, as a new tensor (the input itself when alone).
  torch::Tensor all_reduce_sum(const torch::Tensor& tensor) const {
    if (alone()) return tensor;
    torch::Tensor sum = tensor.detach().contiguous().clone();
    collectives_->all_reduce_sum(sum);
    return sum;
  }

  // The sums over ranks of scalars (a loss, a count, ...) in one collective, as a
  // [k] double tensor on the scalars' device (not read on the host).
  torch::Tensor all_reduce_scalars(const std::vector<torch::Tensor>& scalars) const {
    std::vector<torch::Tensor> parts;
    parts.reserve(scalars.size());
    for (const auto& s : scalars) parts.push_back(s.detach().to(torch::kDouble).reshape({1}));
    return all_reduce_sum(torch::cat(parts));
  }

  // Sums the parameters' gradients over ranks in place, in one collective over a
  // flat buffer (a parameter without a gradient on some rank counts as zero there).
  void all_reduce_gradients(const std::vector<torch::Tensor>& parameters) const {
    if (alone() || parameters.empty()) return;
    std::vector<torch::Tensor> flat;
    flat.reserve(parameters.size());
    for (const auto& p : parameters)
      flat.push_back(p.grad().defined() ? p.grad().reshape(-1) : torch::zeros({p.numel()}, p.options()));
    torch::Tensor buffer = torch::cat(flat);
    collectives_->all_reduce_sum(buffer);
    int64_t offset = 0;
    for (const auto& p : parameters) {
      torch::Tensor summed = buffer.narrow(0, offset, p.numel()).view_as(p);
      if (p.grad().defined()) p.mutable_grad().copy_(summed);
      else p.mutable_grad() = summed.clone();
      offset += p.numel();
    }
  }

  // Every rank's rows concatenated in rank order; ranks may hold different numbers
  // of rows (shards of a batch that does not divide evenly), even none.
  torch::Tensor all_gather_rows(const torch::Tensor& local) const {
    if (alone()) return local;
    require(local.dim() >= 1, "distributed: all_gather_rows needs a tensor with rows, found ", local.sizes());
    torch::Tensor counts = torch::zeros({size()}, torch::TensorOptions().dtype(torch::kLong).device(local.device()));
    counts[rank()] = local.size(0);
    counts = all_reduce_sum(counts).cpu();
    const int64_t longest = counts.max().item<int64_t>();
    std::vector<int64_t> shape = local.sizes().vec();
    shape[0] = longest;
    torch::Tensor padded = torch::zeros(shape, local.options());
    padded.narrow(0, 0, local.size(0)).copy_(local);
    shape[0] = longest * size();
    torch::Tensor gathered = torch::empty(shape, local.options());
    collectives_->all_gather(gathered, padded);
    std::vector<torch::Tensor> parts;
    for (int r = 0; r < size(); ++r) parts.push_back(gathered.narrow(0, r * longest, counts[r].item<int64_t>()));
    return torch::cat(parts);
  }

  // `tensor` takes rank root's values on every rank.
  void broadcast(torch::Tensor& tensor, int root = 0) const {
    if (alone()) return;
    require(tensor.is_contiguous(), "distributed: broadcast needs a contiguous tensor");
    collectives_->broadcast(tensor, root);
  }

  // Every rank's module takes rank 0's parameters and buffers, so all start equal
  // whatever each initialised.
  void broadcast_module(torch::nn::Module& module) const {
    broadcast_values(module.parameters());
    broadcast_buffers(module);
  }

  // Every rank's module takes rank 0's buffers (BatchNorm's running statistics,
  // which each rank updates from its own shard), as PyTorch's DDP does each step.
  void broadcast_buffers(torch::nn::Module& module) const { broadcast_values(module.buffers()); }

  // Each tensor (a view too) takes rank root's values in place, parameters
  // included (not recorded by autograd); one collective per dtype among them.
  void broadcast_values(const std::vector<torch::Tensor>& tensors, int root = 0) const {
    if (alone()) return;
    torch::NoGradGuard no_grad;
    std::vector<bool> done(tensors.size(), false);
    for (std::size_t first = 0; first < tensors.size(); ++first) {
      if (done[first]) continue;
      std::vector<std::size_t> same;
      std::vector<torch::Tensor> flat;
      for (std::size_t i = first; i < tensors.size(); ++i)
        if (!done[i] && tensors[i].scalar_type() == tensors[first].scalar_type() &&
            tensors[i].device() == tensors[first].device()) {
          same.push_back(i);
          flat.push_back(tensors[i].detach().reshape(-1));
          done[i] = true;
        }
      torch::Tensor buffer = torch::cat(flat);
      collectives_->broadcast(buffer, root);
      int64_t offset = 0;
      for (const std::size_t i : same) {
        const torch::Tensor& t = tensors[i];
        t.detach().copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
  }

  void barrier() const {
    if (!alone()) collectives_->barrier();
  }

  // "rank r of n: " for messages (empty when alone).
  std::string label() const {
    return alone() ? std::string() : "rank " + std::to_string(rank()) + " of " + std::to_string(size()) + ": ";
  }

 private:
  std::shared_ptr<Collectives> collectives_;
};

}  // namespace diffctl::distributed
