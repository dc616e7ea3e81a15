#pragma once
// The TimeStateMlp's function, (t, y[, one-hot class]) -> Linear(hidden) + Tanh ->
// Linear(hidden) + ReLU -> Linear(out), written with Eigen for small batches on the
// CPU, where LibTorch's per-operation overhead outweighs the arithmetic.
//
// Layout: one column per sample (column-major, the batch is the matrix's column
// dimension), so every layer is one product W * X that goes through Eigen's blocked
// GEMM. The caller owns the activations (it keeps those of a whole episode for the
// backward pass); the network owns its weights, their gradients and Adam's moments,
// all allocated once. Weights are stored as LibTorch stores them ([out, in] per
// layer), so copies to and from a TimeStateMlp are exact.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include <Eigen/Dense>
#include <torch/torch.h>

#include "diffctl/error.hpp"
#include "diffctl/models/time_state_mlp.hpp"

namespace diffctl::models {

// Adam as torch::optim::Adam computes it (no weight decay, no amsgrad).
struct EigenAdamOptions {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

template <class Scalar>
class EigenMlp {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using MatrixRef = Eigen::Ref<Matrix>;
  using ConstMatrixRef = Eigen::Ref<const Matrix>;

  // Zero weights; copy_from() or LibTorch's initialisation via from(TimeStateMlp) fill them.
  explicit EigenMlp(TimeStateMlpOptions options) : options_(options) {
    require(options.state_dim >= 1 && options.out_dim >= 1 && options.hidden >= 1 && options.classes >= 0,
            "EigenMlp: expected positive state_dim, out_dim, hidden and classes >= 0, found ", options.state_dim, ", ",
            options.out_dim, ", ", options.hidden, ", ", options.classes);
    const Eigen::Index in = input_dim(), h = options.hidden, out = options.out_dim;
    first_.resize(h, in);
    second_.resize(h, h);
    out_.resize(out, h);
  }

  // A network with a TimeStateMlp's weights.
  static EigenMlp from(const TimeStateMlp& network) {
    EigenMlp copy(network->options());
    copy.copy_from(network);
    return copy;
  }

  const TimeStateMlpOptions& options() const { return options_; }
  // Rows of the input: 1 (time) + state_dim + classes (one-hot).
  Eigen::Index input_dim() const { return 1 + options_.state_dim + options_.classes; }

  // Writes the input columns for times t (one per column, or one for all), states
  // y [state_dim, n] and classes z (n indices, or nullptr when unconditional).
  template <class States>
  void fill_input(Scalar t, const States& y, const int64_t* z, MatrixRef input) const {
    require(input.rows() == input_dim() && y.rows() == options_.state_dim && y.cols() == input.cols(),
            "EigenMlp: input must be [", input_dim(), ", n] for states [", options_.state_dim, ", n], found input [",
            input.rows(), ", ", input.cols(), "] and states [", y.rows(), ", ", y.cols(), "]");
    require((z != nullptr) == (options_.classes > 0), options_.classes > 0
                                                          ? "EigenMlp: this model is conditional and needs z"
                                                          : "EigenMlp: this model is unconditional but got z");
    const Eigen::Index d = options_.state_dim;
    input.row(0).setConstant(t);
    input.middleRows(1, d) = y;
    if (options_.classes > 0) {
      auto one_hot = input.bottomRows(options_.classes);
      one_hot.setZero();
      for (Eigen::Index b = 0; b < input.cols(); ++b) {
        require(z[b] >= 0 && z[b] < options_.classes, "EigenMlp: class ", z[b], " outside [0, ", options_.classes, ")");
        one_hot(z[b], b) = Scalar(1);
      }
    }
  }

  // out [out_dim, n] of input [input_dim, n], keeping the activations a1, a2
  // [hidden, n] for backward().
  void forward(const ConstMatrixRef& input, MatrixRef a1, MatrixRef a2, MatrixRef out) const {
    const Eigen::Index n = input.cols(), h = options_.hidden;
    require(input.rows() == input_dim(), "EigenMlp: input must have ", input_dim(), " rows, found ", input.rows());
    require(a1.rows() == h && a1.cols() == n && a2.rows() == h && a2.cols() == n && out.rows() == options_.out_dim &&
                out.cols() == n,
            "EigenMlp: activations must be [", h, ", ", n, "] and the output [", options_.out_dim, ", ", n, "]");
    a1.noalias() = first_.weight * input;
    a1.colwise() += first_.bias;
    a1.array() = a1.array().tanh();
    a2.noalias() = second_.weight * a1;
    a2.colwise() += second_.bias;
    a2.array() = a2.array().max(Scalar(0));
    out.noalias() = out_.weight * a2;
    out.colwise() += out_.bias;
  }

  // Columns per block of the backward pass: its scratch stays in the L2 cache, and
  // Eigen's GEMM packs a product with an inner dimension of a few hundred well
  // (with thousands it runs at half the rate here).
  static constexpr Eigen::Index kBlock = 256;

  // The gradients of sum(out .* grad_out) with respect to every parameter, given
  // the input and the activations forward() kept; they replace the stored
  // gradients. dz2, dz1 are scratch of [hidden, min(n, kBlock)] or more columns.
  void backward(const ConstMatrixRef& input, const ConstMatrixRef& a1, const ConstMatrixRef& a2,
                const ConstMatrixRef& grad_out, MatrixRef dz2, MatrixRef dz1) {
    const Eigen::Index n = input.cols(), h = options_.hidden, block = std::min(n, kBlock);
    require(input.rows() == input_dim() && grad_out.rows() == options_.out_dim && grad_out.cols() == n &&
                a1.rows() == h && a1.cols() == n && a2.rows() == h && a2.cols() == n && dz2.rows() == h &&
                dz2.cols() >= block && dz1.rows() == h && dz1.cols() >= block,
            "EigenMlp: backward needs input [", input_dim(), ", n], activations [", h, ", n], grad_out [",
            options_.out_dim, ", n] and scratch [", h, ", >= ", block, "], n = ", n);
    for (Layer* layer : {&first_, &second_, &out_}) {
      layer->grad_weight.setZero();
      layer->grad_bias.setZero();
    }
    for (Eigen::Index start = 0; start < n; start += kBlock) {
      const Eigen::Index width = std::min(kBlock, n - start);
      const auto x = input.middleCols(start, width), h1 = a1.middleCols(start, width), h2 = a2.middleCols(start, width),
                 g = grad_out.middleCols(start, width);
      auto d2 = dz2.leftCols(width);
      auto d1 = dz1.leftCols(width);
      out_.grad_weight.noalias() += g * h2.transpose();
      out_.grad_bias += g.rowwise().sum();
      d2.noalias() = out_.weight.transpose() * g;
      d2.array() = (h2.array() > Scalar(0)).select(d2.array(), Scalar(0));
      second_.grad_weight.noalias() += d2 * h1.transpose();
      second_.grad_bias += d2.rowwise().sum();
      d1.noalias() = second_.weight.transpose() * d2;
      d1.array() *= Scalar(1) - h1.array().square();
      first_.grad_weight.noalias() += d1 * x.transpose();
      first_.grad_bias += d1.rowwise().sum();
    }
  }

  // One Adam step on the stored gradients.
  void adam_step(const EigenAdamOptions& adam) {
    ++steps_;
    const double correction1 = 1.0 - std::pow(adam.beta1, double(steps_));
    const double correction2 = 1.0 - std::pow(adam.beta2, double(steps_));
    const auto update = [&](auto& param, const auto& grad, auto& m, auto& v) {
      m = Scalar(adam.beta1) * m + Scalar(1.0 - adam.beta1) * grad;
      v.array() = Scalar(adam.beta2) * v.array() + Scalar(1.0 - adam.beta2) * grad.array().square();
      param.array() -= Scalar(adam.learning_rate / correction1) * m.array() /
                       (v.array().sqrt() / Scalar(std::sqrt(correction2)) + Scalar(adam.eps));
    };
    for (Layer* layer : {&first_, &second_, &out_}) {
      update(layer->weight, layer->grad_weight, layer->m_weight, layer->v_weight);
      update(layer->bias, layer->grad_bias, layer->m_bias, layer->v_bias);
    }
  }

  // Weights from a TimeStateMlp of the same shape (any device and dtype); Adam's
  // state is left as it is.
  void copy_from(const TimeStateMlp& network) {
    check_same_shape(network->options());
    const auto params = network->named_parameters();
    for (auto& [name, layer] : named_layers()) {
      read(params, name + ".weight", layer->weight);
      read(params, name + ".bias", layer->bias);
    }
  }

  // These weights into a TimeStateMlp of the same shape, in its device and dtype.
  void copy_to(TimeStateMlp& network) const {
    check_same_shape(network->options());
    torch::NoGradGuard no_grad;
    auto params = network->named_parameters();
    for (auto& [name, layer] : const_cast<EigenMlp*>(this)->named_layers()) {
      write(layer->weight, params[name + ".weight"]);
      write(layer->bias, params[name + ".bias"]);
    }
  }

  // A TimeStateMlp (CPU, this scalar type) with these weights.
  TimeStateMlp to_torch() const {
    TimeStateMlp network(options_);
    network->to(torch::CppTypeToScalarType<Scalar>::value);
    copy_to(network);
    return network;
  }

  // Parameters and their gradients in TimeStateMlp's order: first, second, out
  // (weight, then bias).
  struct Layer {
    Matrix weight, grad_weight, m_weight, v_weight;
    Vector bias, grad_bias, m_bias, v_bias;
    void resize(Eigen::Index out, Eigen::Index in) {
      for (Matrix* w : {&weight, &grad_weight, &m_weight, &v_weight}) w->setZero(out, in);
      for (Vector* b : {&bias, &grad_bias, &m_bias, &v_bias}) b->setZero(out);
    }
  };
  Layer& first() { return first_; }
  Layer& second() { return second_; }
  Layer& out() { return out_; }
  const Layer& first() const { return first_; }
  const Layer& second() const { return second_; }
  const Layer& out() const { return out_; }

 private:
  void check_same_shape(const TimeStateMlpOptions& other) const {
    require(other.state_dim == options_.state_dim && other.out_dim == options_.out_dim &&
                other.classes == options_.classes && other.hidden == options_.hidden,
            "EigenMlp: the networks differ in shape: (state_dim, out_dim, classes, hidden) = (", options_.state_dim,
            ", ", options_.out_dim, ", ", options_.classes, ", ", options_.hidden, ") here, (", other.state_dim, ", ",
            other.out_dim, ", ", other.classes, ", ", other.hidden, ") there");
  }

  std::array<std::pair<std::string, Layer*>, 3> named_layers() {
    return {{{"first", &first_}, {"second", &second_}, {"out", &out_}}};
  }

  template <class Dense>
  static void read(const torch::OrderedDict<std::string, torch::Tensor>& params, const std::string& name,
                   Dense& target) {
    const torch::Tensor* found = params.find(name);
    require(found != nullptr, "EigenMlp: the network has no parameter ", name);
    const torch::Tensor value = found->detach().to(torch::kCPU, torch::CppTypeToScalarType<Scalar>::value).contiguous();
    require(value.numel() == target.size(), "EigenMlp: ", name, " has ", value.numel(), " values, expected ",
            target.size());
    // LibTorch stores [out, in] row-major.
    using RowMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    target = Eigen::Map<const RowMajor>(value.data_ptr<Scalar>(), target.rows(), target.cols());
  }

  template <class Dense>
  static void write(const Dense& source, torch::Tensor& target) {
    using RowMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const RowMajor row_major = source;
    const torch::Tensor value = torch::from_blob(const_cast<Scalar*>(row_major.data()), target.sizes(),
                                                 torch::CppTypeToScalarType<Scalar>::value);
    require(value.numel() == target.numel(), "EigenMlp: size mismatch on copy");
    target.copy_(value);
  }

  TimeStateMlpOptions options_;
  Layer first_, second_, out_;
  int64_t steps_ = 0;
};

}  // namespace diffctl::models
