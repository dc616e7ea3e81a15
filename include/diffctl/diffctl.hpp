#pragma once
// Umbrella header: all of diffctl but io/png.hpp (which compiles stb_image_write
// into the including translation unit; include it where PNGs are written).

#include "diffctl/algorithms/policy_gradient.hpp"
#include "diffctl/algorithms/qlearning.hpp"
#include "diffctl/concepts.hpp"
#include "diffctl/data/toy.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/io/plots.hpp"
#include "diffctl/io/progress.hpp"
#include "diffctl/metrics/knn_kl.hpp"
#include "diffctl/metrics/sample_quality.hpp"
#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/models/ratio_score.hpp"
#include "diffctl/models/time_state_mlp.hpp"
#include "diffctl/runtime.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/time_grid.hpp"
#include "diffctl/sde/transition.hpp"
