#pragma once
// How well a classifier labels a set of images: accuracy, per-class accuracy and
// the confusion matrix, evaluated in eval mode and without gradients, in batches.

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "diffctl/error.hpp"

namespace diffctl::metrics {

struct ClassificationReport {
  double accuracy = 0.0;
  std::vector<double> class_accuracy;  // per true class; NaN for a class with no images
  torch::Tensor confusion;             // int64 [K, K]: row = true class, column = predicted
  int64_t count = 0;
};

// Predicted class probabilities [N, K] of a module holder mapping [B, C, H, W] to
// logits, evaluated batch by batch on the model's device.
template <class Net>
torch::Tensor predict_probabilities(Net& model, const torch::Tensor& images, int64_t batch_size = 256) {
  require(images.dim() == 4 && images.size(0) > 0, "predict_probabilities: expected images [N, C, H, W], found ",
          images.sizes());
  require(batch_size >= 1, "predict_probabilities: batch_size must be >= 1, found ", batch_size);
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto device = model->parameters().front().device();
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < images.size(0); begin += batch_size) {
    const int64_t n = std::min(batch_size, images.size(0) - begin);
    parts.push_back(torch::softmax(model->forward(images.narrow(0, begin, n).to(device)), 1).to(torch::kCPU));
  }
  model->train(was_training);
  return torch::cat(parts);
}

inline ClassificationReport classification_report(const torch::Tensor& probabilities, const torch::Tensor& labels) {
  require(probabilities.dim() == 2 && labels.dim() == 1 && labels.size(0) == probabilities.size(0),
          "classification_report: expected probabilities [N, K] and labels [N], found ", probabilities.sizes(), " and ",
          labels.sizes());
  const int64_t classes = probabilities.size(1);
  const torch::Tensor truth = labels.to(torch::kCPU, torch::kLong);
  require(truth.numel() == 0 || (truth.min().item<int64_t>() >= 0 && truth.max().item<int64_t>() < classes),
          "classification_report: labels must lie in [0, ", classes, ")");
  const torch::Tensor predicted = probabilities.argmax(1).to(torch::kCPU);
  ClassificationReport report;
  report.count = truth.size(0);
  report.confusion = torch::bincount(truth * classes + predicted, {}, classes * classes).view({classes, classes});
  const torch::Tensor correct = report.confusion.diagonal().to(torch::kDouble);
  const torch::Tensor per_class = report.confusion.sum(1).to(torch::kDouble);
  report.accuracy = report.count > 0 ? correct.sum().item<double>() / double(report.count) : 0.0;
  const torch::Tensor rates = correct / per_class;  // 0/0 = NaN for an absent class
  report.class_accuracy.assign(rates.data_ptr<double>(), rates.data_ptr<double>() + classes);
  return report;
}

template <class Net>
ClassificationReport evaluate_classifier(Net& model, const torch::Tensor& images, const torch::Tensor& labels,
                                         int64_t batch_size = 256) {
  return classification_report(predict_probabilities(model, images, batch_size), labels);
}

}  // namespace diffctl::metrics
