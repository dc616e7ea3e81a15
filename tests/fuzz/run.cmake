# Builds the parsers' fuzz harness and runs each parser for SECONDS
# seconds from the valid files the harness writes as seeds. Fails on any finding
# (crash, sanitizer report, hang over 10 s, leak) and names its input.
#   cmake -DSOURCE_DIR=tests/fuzz -DWORK_DIR=... -DDIFFCTL_INCLUDE_DIR=include -DSECONDS=15
#         [-DCXX_COMPILER=g++]
#         [-DTARGETS="idx;cifar"] [-DTorch_DIR=...] -P run.cmake

if(NOT TARGETS)
  set(TARGETS idx idx-labels cifar state-dict checkpoint feedback)
endif()
include(${CMAKE_CURRENT_LIST_DIR}/../cmake/nested_build.cmake)

execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DDIFFCTL_INCLUDE_DIR=${DIFFCTL_INCLUDE_DIR}" ${hints}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzz: configuring the harnesses failed:\n${out}${err}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzz: building the harnesses failed:\n${out}${err}")
endif()

set(harness "${WORK_DIR}/build/fuzz_parsers")
foreach(target IN LISTS TARGETS)
  set(corpus "${WORK_DIR}/corpus/${target}")
  file(REMOVE_RECURSE "${corpus}")
  execute_process(COMMAND ${CMAKE_COMMAND} -E env DIFFCTL_FUZZ_TARGET=${target} DIFFCTL_FUZZ_SEEDS=${corpus}
      ${harness} RESULT_VARIABLE rc ERROR_VARIABLE err)
  file(GLOB seeds "${corpus}/*")
  if(NOT rc EQUAL 0 OR NOT seeds)
    message(FATAL_ERROR "fuzz ${target}: writing the seed corpus failed:\n${err}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -E env DIFFCTL_FUZZ_TARGET=${target}
      "LSAN_OPTIONS=suppressions=${SOURCE_DIR}/lsan.supp:print_suppressions=0"
      ${harness} "${corpus}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=3072
      "-artifact_prefix=${WORK_DIR}/finding_${target}_" -print_final_stats=1
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX MATCH "stat::number_of_executed_units: *([0-9]+)" executed "${err}")
  set(executed "${CMAKE_MATCH_1}")
  if(NOT rc EQUAL 0)
    string(LENGTH "${err}" length)
    if(length GREATER 6000)
      math(EXPR from "${length} - 6000")
      string(SUBSTRING "${err}" ${from} -1 err)
    endif()
    message(FATAL_ERROR "fuzz ${target}: a finding after ${executed} inputs (exit ${rc}); "
      "the input is under ${WORK_DIR}/finding_${target}_*:\n${err}")
  endif()
  message(STATUS "fuzz ${target}: ${executed} inputs in ${SECONDS} s, no finding")
endforeach()
