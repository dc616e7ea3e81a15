// Must not compile: the backend holds the networks but cannot run an episode
// (simulation, martingale loss, update), which is what QLearning asks of it every
// episode, so it is not a QLearningBackend and QLearning must say so.

#include "parts.hpp"

namespace DIFFCTL_CHECK {

class NetworksOnly {
 public:
  NetworksOnly(int64_t state_dim, int64_t classes, const diffctl::algorithms::QLearningOptions& options)
      : torch_(state_dim, classes, options) {}
#ifdef DIFFCTL_CHECK_COMPLETE
  template <class Problem>
  diffctl::algorithms::EpisodeStats episode(const Problem& problem, const diffctl::algorithms::EpisodeNoise& noise) {
    return torch_.episode(problem, noise);
  }
#endif
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
  diffctl::algorithms::QLearning<parts::Schedule, parts::Model, parts::Reward, diffctl::sde::EulerMaruyama,
                                 NetworksOnly>
      learner(parts::Schedule{}, parts::Model{}, 2);
  return learner.train_episode(generator).loss;
}

}  // namespace DIFFCTL_CHECK
