# What the scripts that configure a build of their own share (tests/fuzz/run.cmake,
# sanitize.cmake): the compiler, CXX_COMPILER (default c++), and `hints`, the
# dependency locations given to the script (-DTorch_DIR=... and the like) passed on.
if(NOT CXX_COMPILER)
  set(CXX_COMPILER c++)
endif()
set(hints)
foreach(var Torch_DIR Eigen3_DIR nanoflann_DIR)
  if(${var})
    list(APPEND hints "-D${var}=${${var}}")
  endif()
endforeach()
