# The compile-fail checks (tests/cmake/CMakeLists.txt). Three uses:
#
#   cmake -DBUILD_DIR=<diffctl build> -DTARGET=<target> -DEXPECT=compiles -P check.cmake
#       the target (the positive control) must compile;
#   cmake -DBUILD_DIR=<diffctl build> -DTARGET=<target> -DEXPECT=fails -DLOG=<file> -P check.cmake
#       the target (every case, each in its own namespace) must fail to compile;
#       the compiler's diagnostics go to LOG;
#   cmake -DLOG=<file> -DCASE=<case> -DEXPECT=<Concept> -P check.cmake
#       LOG must report the constraint <Concept> unsatisfied by a type of the
#       case's namespace <case>, so that each case is rejected by its own concept.
if(NOT EXPECT)
  message(FATAL_ERROR "compile check: -DEXPECT=... is required")
endif()

if(EXPECT STREQUAL "compiles" OR EXPECT STREQUAL "fails")
  foreach(required BUILD_DIR TARGET)
    if(NOT ${required})
      message(FATAL_ERROR "compile check: -D${required}=... is required")
    endif()
  endforeach()
  if(LOG)
    file(REMOVE "${LOG}")
  endif()
  # Diagnostics in English with plain quotes, whatever the caller's locale.
  execute_process(COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C ${CMAKE_COMMAND} --build "${BUILD_DIR}" --target ${TARGET}
    RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(EXPECT STREQUAL "compiles")
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "compile check: FAILED: ${TARGET} must compile but did not. Compiler output:\n${output}")
    endif()
    message(STATUS "compile check: passed: ${TARGET} compiles")
  else()
    if(rc EQUAL 0)
      message(FATAL_ERROR "compile check: FAILED: ${TARGET} compiled, but every case in it must be rejected")
    endif()
    file(WRITE "${LOG}" "${output}")
    message(STATUS "compile check: ${TARGET} was rejected; its diagnostics are in ${LOG}")
  endif()
  return()
endif()

foreach(required LOG CASE)
  if(NOT ${required})
    message(FATAL_ERROR "compile check: -D${required}=... is required")
  endif()
endforeach()
if(NOT EXISTS "${LOG}")
  message(FATAL_ERROR "compile check: FAILED: no diagnostics at ${LOG} (compile_fail:build did not run or failed)")
endif()
file(READ "${LOG}" output)
# The concept's name must appear as an unsatisfied constraint, not merely somewhere
# in the output (a candidate's signature or a quoted source line also shows it),
# for a type of this case:
#   GCC:   required for the satisfaction of 'DriftModel<Model>' [with Model = <case>::X]
#          (a fold over a pack: the expression '(TrainingCallback<...> && ...)
#          [with Callbacks = {<case>::X}]' evaluated to 'false')
#   Clang: because '<case>::X' does not satisfy 'DriftModel'
set(concept "(diffctl::)?${EXPECT}")
string(CONCAT unsatisfied "satisfaction of '${concept}<[^\n]*\\[with [^\n]*${CASE}::"
  "|the expression '\\(${concept}<[^\n]*\\[with [^\n]*${CASE}::[^\n]*' evaluated to 'false'"
  "|'[^'\n]*${CASE}::[^'\n]*' does not satisfy '${concept}'")
string(REGEX MATCH "[^\n]*(${unsatisfied})[^\n]*" diagnostic "${output}")
if(NOT diagnostic)
  string(REGEX MATCHALL "[^\n]*${CASE}[^\n]*" lines "${output}")
  list(JOIN lines "\n" lines)
  message(FATAL_ERROR "compile check: FAILED: the diagnostics do not report the concept ${EXPECT} as unsatisfied "
    "by a type of ${CASE} (looked for /${unsatisfied}/ in ${LOG}). Their lines about ${CASE}:\n${lines}")
endif()
string(STRIP "${diagnostic}" diagnostic)
message(STATUS "compile check: passed: ${CASE} is rejected by ${EXPECT}: ${diagnostic}")
