#pragma once
// Umbrella header: all of diffctl.

#include "diffctl/concepts.hpp"
#include "diffctl/error.hpp"
#include "diffctl/models/gaussian_mixture_score.hpp"
#include "diffctl/sde/integrate.hpp"
#include "diffctl/sde/schedules.hpp"
#include "diffctl/sde/solvers.hpp"
#include "diffctl/sde/time_grid.hpp"
#include "diffctl/sde/transition.hpp"
#include "diffctl/runtime.hpp"
