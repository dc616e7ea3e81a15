#pragma once
// The elementwise arithmetic that the algorithms written once over two backends
// (DDPO and DPOK over policy_chains.hpp, q-learning over its backends) do on
// per-(step, sample) values, for both kinds: a LibTorch tensor [N, B] (step k's
// B samples in row k), or an Eigen double array [B, N] (in column k), so that
// both hold step k's samples one after the other in memory. Eigen results are
// evaluated, so that no expression outlives its operands.

#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Dense>
#include <torch/torch.h>

namespace diffctl::algorithms::detail::values {

using Array = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic>;
using Mask = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;

inline torch::Tensor sum(const torch::Tensor& x) { return x.sum(); }
template <class Derived>
double sum(const Eigen::ArrayBase<Derived>& x) {
  return double(x.sum());
}
inline torch::Tensor sqrt(const torch::Tensor& x) { return x.sqrt(); }
inline double sqrt(double x) { return std::sqrt(x); }
inline torch::Tensor clamp(const torch::Tensor& x, double low, double high) { return x.clamp(low, high); }
inline Array clamp(const Array& x, double low, double high) { return x.max(low).min(high); }
inline torch::Tensor minimum(const torch::Tensor& a, const torch::Tensor& b) { return torch::minimum(a, b); }
inline Array minimum(const Array& a, const Array& b) { return a.min(b); }
// x where the mask is false, 0 where it is true.
inline torch::Tensor zero_where(const torch::Tensor& mask, const torch::Tensor& x) { return x.masked_fill(mask, 0.0); }
inline Array zero_where(const Mask& mask, const Array& x) { return mask.select(0.0, x); }
inline torch::Tensor less(const torch::Tensor& a, const torch::Tensor& b) { return a < b; }
inline Mask less(const Array& a, const Array& b) { return a < b; }
inline torch::Tensor count(const torch::Tensor& mask) { return mask.sum(); }
inline double count(const Mask& mask) { return double(mask.count()); }

// Step k's values times factors[k].
inline torch::Tensor per_step(const torch::Tensor& x, const std::vector<double>& factors) {
  return x * torch::tensor(factors, x.options()).unsqueeze(1);
}
inline Array per_step(const Array& x, const std::vector<double>& factors) {
  return x.rowwise() *
         Eigen::Map<const Eigen::Array<double, 1, Eigen::Dynamic>>(factors.data(), Eigen::Index(factors.size()));
}

// The values one step later: step k + 1's at step k, and `last` [B] ([B, 1]) at the last step.
inline torch::Tensor next_steps(const torch::Tensor& x, const torch::Tensor& last) {
  return torch::cat({x.narrow(0, 1, x.size(0) - 1), last.unsqueeze(0)});
}
inline Array next_steps(const Array& x, const Array& last) {
  Array next(x.rows(), x.cols());
  next.leftCols(x.cols() - 1) = x.rightCols(x.cols() - 1);
  next.rightCols(1) = last;
  return next;
}

// The values one step earlier: step k - 1's at step k, and 0 at the first step.
inline torch::Tensor previous_steps(const torch::Tensor& x) {
  return torch::cat({torch::zeros_like(x.narrow(0, 0, 1)), x.narrow(0, 0, x.size(0) - 1)});
}
inline Array previous_steps(const Array& x) {
  Array previous(x.rows(), x.cols());
  previous.leftCols(1).setZero();
  previous.rightCols(x.cols() - 1) = x.leftCols(x.cols() - 1);
  return previous;
}

}  // namespace diffctl::algorithms::detail::values
