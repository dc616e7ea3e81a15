#pragma once
// Umbrella header: all of diffctl but io/ (whose PNG writer compiles stb into the
// including translation unit).

#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/metrics/knn_kl.hpp"
#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/models/time_state_mlp.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/time_grid.hpp"
#include "diffctl/sde/transition.hpp"
