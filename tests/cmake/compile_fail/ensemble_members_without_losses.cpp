// Must not compile: the members' fit() reports nothing, but the ensemble returns
// each member's last loss from a refit (its fit report), so they are not
// EnsembleMembers and BootstrapEnsemble must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

class SilentMembers {
 public:
  explicit SilentMembers(parts::Members members) : members_(std::move(members)) {}
  int64_t size() const { return members_.size(); }
  torch::Device device() const { return members_.device(); }
  torch::Tensor predict(const torch::Tensor& x, const torch::Tensor& z) const { return members_.predict(x, z); }
#ifdef DIFFCTL_CHECK_COMPLETE
  torch::Tensor fit(const diffctl::reward::FeedbackDataset& data, const torch::Tensor& weights,
                    const diffctl::reward::MemberFitOptions& options, at::Generator& generator) {
    return members_.fit(data, weights, options, generator);
  }
#else
  void fit(const diffctl::reward::FeedbackDataset& data, const torch::Tensor& weights,
           const diffctl::reward::MemberFitOptions& options, at::Generator& generator) {
    members_.fit(data, weights, options, generator);
  }
#endif
  void add_to(diffctl::io::Checkpoint& checkpoint, const std::string& prefix) { members_.add_to(checkpoint, prefix); }

 private:
  parts::Members members_;
};

double run(parts::Members members, const diffctl::reward::FeedbackDataset& feedback) {
  diffctl::reward::BootstrapEnsemble<SilentMembers> ensemble{SilentMembers(std::move(members))};
  return ensemble.fit(feedback).member_loss.sum().item<double>();
}

}  // namespace DIFFCTL_CHECK
