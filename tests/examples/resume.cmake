# A training run stopped part-way and resumed must end exactly where the same run
# uninterrupted ends: same weights file, same logged losses.
#   cmake -DPROGRAM=... -DWORK_DIR=... -DARGS="a;b;..." -DSTEPS=N -DSTOP=K
#         -DWEIGHTS=model.pt [-DKEEP=ON] -P resume.cmake
# With -DKEEP=ON the uninterrupted run's output stays for the tests that need it.

include(${CMAKE_CURRENT_LIST_DIR}/run_command.cmake)

# The metrics without the wall-clock column (the last one).
function(losses dir result)
  file(STRINGS "${dir}/metrics.csv" rows)
  set(kept)
  foreach(row IN LISTS rows)
    string(REGEX REPLACE ",[^,]*$" "" row "${row}")
    list(APPEND kept "${row}")
  endforeach()
  set(${result} "${kept}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
run(${PROGRAM} ${ARGS} --steps ${STEPS} --log-every ${STOP} --out "${WORK_DIR}/straight")
run(${PROGRAM} ${ARGS} --steps ${STEPS} --log-every ${STOP} --stop-after ${STOP} --out "${WORK_DIR}/resumed")
if(EXISTS "${WORK_DIR}/resumed/${WEIGHTS}")
  message(FATAL_ERROR "a stopped run wrote its final ${WEIGHTS}")
endif()
run(${PROGRAM} ${ARGS} --steps ${STEPS} --log-every ${STOP} --resume --out "${WORK_DIR}/resumed")

execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files
  "${WORK_DIR}/straight/${WEIGHTS}" "${WORK_DIR}/resumed/${WEIGHTS}" RESULT_VARIABLE differ)
if(differ)
  message(FATAL_ERROR "the resumed run's ${WEIGHTS} differs from the uninterrupted run's")
endif()
losses("${WORK_DIR}/straight" straight)
losses("${WORK_DIR}/resumed" resumed)
if(NOT straight STREQUAL resumed)
  message(FATAL_ERROR "metrics differ:\nstraight: ${straight}\nresumed:  ${resumed}")
endif()
list(LENGTH straight rows)
message(STATUS "resume matches: ${WEIGHTS} identical, ${rows} metrics rows identical")
if(KEEP)
  file(REMOVE_RECURSE "${WORK_DIR}/resumed")
else()
  file(REMOVE_RECURSE "${WORK_DIR}")
endif()
