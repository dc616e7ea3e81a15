# Installs diffctl from a configured build tree into a fresh prefix, then
# configures, builds and runs the project in consumer/ against that prefix.
#
#   cmake -DDIFFCTL_BINARY_DIR=<configured diffctl build dir>
#         -DCONSUMER_SOURCE_DIR=<tests/cmake/consumer>
#         -DWORK_DIR=<scratch dir, wiped first>
#         [-DGENERATOR=...] [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DCONFIG=...]
#         [-DTorch_DIR=...] [-DEigen3_DIR=...]
#         -P package_consumer.cmake
cmake_minimum_required(VERSION 3.25)

foreach(required DIFFCTL_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT ${required})
    message(FATAL_ERROR "package_consumer: -D${required}=... is required")
  endif()
endforeach()

set(prefix "${WORK_DIR}/prefix")
set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(config_args)
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()

# Runs the command after the step's name and stops the script, naming the step,
# if it exits non-zero. Its output goes to the test log as it comes.
function(run_step step)
  message(STATUS "package_consumer: ${step}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package_consumer: FAILED at step '${step}' (exit status: ${rc})")
  endif()
endfunction()

run_step("1/4 install diffctl into ${prefix}"
  "${CMAKE_COMMAND}" --install "${DIFFCTL_BINARY_DIR}" --prefix "${prefix}" ${config_args})

# Only the fresh prefix is on CMAKE_PREFIX_PATH; Torch and Eigen come from where
# the diffctl build found them (the system, unless that build was told otherwise).
set(configure_args -S "${CONSUMER_SOURCE_DIR}" -B "${build}" "-DCMAKE_PREFIX_PATH=${prefix}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()
foreach(var MAKE_PROGRAM CXX_COMPILER)
  if(${var})
    list(APPEND configure_args "-DCMAKE_${var}=${${var}}")
  endif()
endforeach()
if(CONFIG)
  list(APPEND configure_args "-DCMAKE_BUILD_TYPE=${CONFIG}")
endif()
foreach(var Torch_DIR Eigen3_DIR)
  if(${var})
    list(APPEND configure_args "-D${var}=${${var}}")
  endif()
endforeach()
run_step("2/4 configure the consumer project (find_package(diffctl))"
  "${CMAKE_COMMAND}" ${configure_args})

# find_package must have taken diffctl from the fresh prefix, not from anywhere else.
file(STRINGS "${build}/CMakeCache.txt" found_dir REGEX "^diffctl_DIR:")
string(REGEX REPLACE "^diffctl_DIR:[A-Z]*=" "" found_dir "${found_dir}")
file(REAL_PATH "${prefix}" real_prefix)
if(EXISTS "${found_dir}")
  file(REAL_PATH "${found_dir}" found_dir)
endif()
string(FIND "${found_dir}/" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "package_consumer: FAILED at step '2/4 configure': diffctl was found "
    "in '${found_dir}', expected under the fresh prefix '${real_prefix}'")
endif()

run_step("3/4 build the consumer" "${CMAKE_COMMAND}" --build "${build}" ${config_args})

set(program "${build}/diffctl_consumer")
if(CONFIG AND NOT EXISTS "${program}" AND EXISTS "${build}/${CONFIG}/diffctl_consumer")
  set(program "${build}/${CONFIG}/diffctl_consumer")  # multi-config generators
endif()
run_step("4/4 run the consumer" "${program}")
message(STATUS "package_consumer: passed")
