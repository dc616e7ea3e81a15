# Builds a subset of the test executables with the address and undefined-behaviour
# sanitizers and warnings as errors (DIFFCTL_SANITIZE, DIFFCTL_WERROR), in a build
# of its own, and runs each whole. LibTorch is not instrumented; its own leaks are
# suppressed (tests/fuzz/lsan.supp), so leaks in diffctl's code are still reported.
#   cmake -DSOURCE_DIR=<diffctl> -DWORK_DIR=... -DTARGETS="test_data;test_sde" [-DTEST_SPEC=<Catch test spec>]
#         [-DCXX_COMPILER=g++] [-DTorch_DIR=...] -P sanitize.cmake

include(${CMAKE_CURRENT_LIST_DIR}/nested_build.cmake)
set(environment
  "LSAN_OPTIONS=suppressions=${SOURCE_DIR}/tests/fuzz/lsan.supp:print_suppressions=0"
  "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")

execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DCMAKE_BUILD_TYPE=RelWithDebInfo
    # -O1 as the sanitizers advise; -g1 keeps the line tables the reports need
    # without the full debug information of every LibTorch header.
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
    -DDIFFCTL_SANITIZE=ON -DDIFFCTL_WERROR=ON -DDIFFCTL_NATIVE_ARCH=OFF
    -DDIFFCTL_BUILD_EXAMPLES=OFF -DDIFFCTL_BUILD_BENCHMARKS=OFF ${hints}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "sanitize: configuring failed:\n${out}${err}")
endif()
# The build runs each executable once to list its tests (catch_discover_tests).
execute_process(COMMAND ${CMAKE_COMMAND} -E env ${environment}
    ${CMAKE_COMMAND} --build "${WORK_DIR}/build" --parallel 2 --target ${TARGETS}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "sanitize: building ${TARGETS} failed:\n${out}${err}")
endif()
foreach(target IN LISTS TARGETS)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env ${environment} "${WORK_DIR}/build/tests/${target}" ${TEST_SPEC}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "sanitize: ${target} failed (${rc}):\n${out}${err}")
  endif()
  string(REGEX MATCH "All tests passed[^\n]*" summary "${out}")
  message(STATUS "sanitize: ${target}: ${summary}")
endforeach()
