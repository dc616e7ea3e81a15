# A binary given bad input exits non-zero with one line that names the problem,
# and leaves no output files behind.
#   cmake -DPROGRAM=... -DWORK_DIR=... -DARGS="a;b;..." -DEXPECT=text -P bad_input.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${PROGRAM} ${ARGS} --out "${WORK_DIR}/out"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "exited 0 on bad input: ${ARGS}\n${out}${err}")
endif()
string(FIND "${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "stderr does not say \"${EXPECT}\":\n${err}")
endif()
string(STRIP "${err}" stripped)
string(FIND "${stripped}" "\n" newline)
if(NOT newline EQUAL -1)
  message(FATAL_ERROR "expected one line on stderr, found:\n${err}")
endif()
file(GLOB_RECURSE left "${WORK_DIR}/out/*")
if(left)
  message(FATAL_ERROR "bad input left files behind: ${left}")
endif()
message(STATUS "rejected: ${stripped}")
file(REMOVE_RECURSE "${WORK_DIR}")
