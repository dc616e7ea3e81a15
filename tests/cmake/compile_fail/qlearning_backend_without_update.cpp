// Must not compile: the backend holds the networks, simulates an episode and
// gives the loss's terms, but cannot take the step from the loss's gradient,
// which is what QLearning asks of it every episode, so it is not a
// QLearningBackend and QLearning must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

class NoUpdate {
 public:
  using Values = diffctl::algorithms::TorchBackend::Values;
  using Total = diffctl::algorithms::TorchBackend::Total;

  NoUpdate(int64_t state_dim, int64_t classes, const diffctl::algorithms::QLearningOptions& options)
      : torch_(state_dim, classes, options) {}
  template <class Problem>
  diffctl::algorithms::EpisodeRollout<Values, Total> simulate(const Problem& problem,
                                                              const diffctl::algorithms::EpisodeNoise& noise) {
    return torch_.simulate(problem, noise);
  }
  diffctl::algorithms::EpisodeTerms<Values> terms() { return torch_.terms(); }
#ifdef DIFFCTL_CHECK_COMPLETE
  void update(const Values& value_weights, const Values& log_policy_weights) {
    torch_.update(value_weights, log_policy_weights);
  }
#endif
  std::vector<double> totals(const std::vector<Total>& parts) const { return torch_.totals(parts); }
  std::pair<diffctl::models::TimeStateMlp, diffctl::models::TimeStateMlp> networks() const { return torch_.networks(); }
  void assign(const diffctl::models::TimeStateMlp& policy, const diffctl::models::TimeStateMlp& value) {
    torch_.assign(policy, value);
  }
  void set_learning_rate(double learning_rate) { torch_.set_learning_rate(learning_rate); }
  diffctl::models::TimeStateMlp& policy() { return torch_.policy(); }
  diffctl::models::TimeStateMlp& value() { return torch_.value(); }

 private:
  diffctl::algorithms::TorchBackend torch_;
};

double run(at::Generator& generator) {
  diffctl::algorithms::QLearning<parts::Schedule, parts::Model, parts::Reward, diffctl::sde::EulerMaruyama, NoUpdate>
      learner(parts::Schedule{}, parts::Model{}, 2);
  return learner.train_episode(generator).loss;
}

}  // namespace DIFFCTL_CHECK
