# A training run of two processes (scripts/launch, Gloo on localhost) trains as
# one process does on the same global batch: every logged value agrees to a
# relative 1e-4 (float32 sums in another order); and a run stopped on two
# processes resumes on two.
#   cmake -DPROGRAM=... -DLAUNCH=<scripts/launch> -DWORK_DIR=... -DWEIGHTS=model.pt
#         -DARGS="a;b;..." -P two_processes.cmake

include(${CMAKE_CURRENT_LIST_DIR}/run_command.cmake)

file(REMOVE_RECURSE "${WORK_DIR}")
set(common ${ARGS} --steps 4 --log-every 1)
run(${PROGRAM} ${common} --out "${WORK_DIR}/one")
run(${LAUNCH} 2 ${PROGRAM} ${common} --stop-after 2 --out "${WORK_DIR}/two")
run(${LAUNCH} 2 ${PROGRAM} ${common} --resume --out "${WORK_DIR}/two")
if(NOT EXISTS "${WORK_DIR}/two/${WEIGHTS}")
  message(FATAL_ERROR "the two-process run wrote no ${WEIGHTS}")
endif()

# Each value column but the last (seconds), row by row.
execute_process(
  COMMAND awk -F, [[
    NR == FNR { for (c = 2; c < NF; ++c) reference[FNR, c] = $c; rows = FNR; next }
    FNR > 1 {
      for (c = 2; c < NF; ++c) {
        d = $c - reference[FNR, c]; if (d < 0) d = -d
        r = reference[FNR, c]; if (r < 0) r = -r
        if (d > 1e-4 * r + 1e-7) { printf "row %d column %d: %s against %s\n", FNR, c, $c, reference[FNR, c]; bad = 1 }
      }
    }
    END { if (FNR != rows || rows < 5) { print "rows: " FNR " against " rows; bad = 1 } exit bad }
  ]] "${WORK_DIR}/one/metrics.csv" "${WORK_DIR}/two/metrics.csv"
  RESULT_VARIABLE differ OUTPUT_VARIABLE report)
if(differ)
  message(FATAL_ERROR "two processes differ from one:\n${report}")
endif()
message(STATUS "two processes (stopped and resumed) log what one process logs, within 1e-4")
