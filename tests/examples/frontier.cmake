# seiko_frontier on four metrics.json files: two runs of one method at one alpha
# become one point with a 95% t-interval, a third run its own point, a DDPO run
# a point without alpha; and the picture draws one marker per point in each of
# its three panels.
#   cmake -DPROGRAM=... -DWORK_DIR=... -P frontier.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
function(write_run name alpha accuracy kl)
  file(WRITE "${WORK_DIR}/${name}/metrics.json"
    "{\"alpha\": ${alpha}, \"oracle_accuracy\": ${accuracy}, \"oracle_probability\": 0.5, \"diversity\": 0.9, "
    "\"class_fd\": 10.0, \"kl_to_pretrained\": ${kl}, \"queries_total\": 896}")
endfunction()
write_run(s0 0.03 0.8 16.0)
write_run(s1 0.03 0.9 18.0)
write_run(wide 0.1 0.7 9.0)
# DDPO records an alpha it does not use: its row shows none.
file(WRITE "${WORK_DIR}/ddpo/metrics.json"
  "{\"variant\": \"ddpo\", \"alpha\": 0.0001, \"oracle_accuracy\": 0.1, \"oracle_probability\": 0.1, "
  "\"diversity\": 1.0, \"class_fd\": 60.0, \"kl_to_pretrained\": 90.0, \"queries_total\": 896}")
execute_process(COMMAND ${PROGRAM} --out "${WORK_DIR}/out" "SEIKO=${WORK_DIR}/s0" "SEIKO=${WORK_DIR}/s1"
    "SEIKO=${WORK_DIR}/wide" "DDPO=${WORK_DIR}/ddpo" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "seiko_frontier exited ${rc}:\n${out}${err}")
endif()
# Mean 0.85, standard error 0.05, t(1) = 12.706: 0.85 +- 0.635; the KL 17.0 +- 12.7.
file(READ "${WORK_DIR}/out/frontier.md" table)
foreach(row "| SEIKO | 0.03 | 896 | 2 | 0.850 +- 0.635 | 0.500 | 0.900 | 10.0 | 17.0 +- 12.7 |"
    "| SEIKO | 0.1 | 896 | 1 | 0.700 | 0.500 | 0.900 | 10.0 | 9.0 |"
    "| DDPO | - | 896 | 1 | 0.100 | 0.100 | 1.000 | 60.0 | 90.0 |")
  string(FIND "${table}" "${row}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "frontier.md lacks the row\n${row}\n${table}")
  endif()
endforeach()
file(READ "${WORK_DIR}/out/frontier.svg" chart)
string(REGEX MATCHALL "<circle" points "${chart}")
list(LENGTH points drawn)
if(NOT drawn EQUAL 9)
  message(FATAL_ERROR "frontier.svg: ${drawn} points, expected 3 in each of 3 panels")
endif()
# A run without a final evaluation is named, in one line.
file(WRITE "${WORK_DIR}/unfinished/rounds.csv" "round\n")
execute_process(COMMAND ${PROGRAM} --out "${WORK_DIR}/out2" "SEIKO=${WORK_DIR}/unfinished"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "unfinished/metrics.json")
  message(FATAL_ERROR "a run without metrics.json: exit ${rc}, stderr:\n${err}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
