# A binary run with ARGS succeeds, writes the files FILES (relative to its --out)
# and a metrics.json that contains each text of the list METRIC.
# With -DKEEP=ON the outputs stay for the tests that need them.
#   cmake -DPROGRAM=... -DWORK_DIR=... -DARGS="a;b;..." -DFILES="x;y" -DMETRIC=text [-DKEEP=ON] -P outputs.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${PROGRAM} ${ARGS} --out "${WORK_DIR}/out"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "exited ${rc}: ${ARGS}\n${out}${err}")
endif()
foreach(name IN LISTS FILES)
  if(NOT EXISTS "${WORK_DIR}/out/${name}")
    message(FATAL_ERROR "no ${name} in the output:\n${out}${err}")
  endif()
endforeach()
file(READ "${WORK_DIR}/out/metrics.json" metrics)
foreach(text IN LISTS METRIC)
  string(FIND "${metrics}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "metrics.json does not contain \"${text}\":\n${metrics}")
  endif()
endforeach()
message(STATUS "${out}")
if(NOT KEEP)
  file(REMOVE_RECURSE "${WORK_DIR}")
endif()
