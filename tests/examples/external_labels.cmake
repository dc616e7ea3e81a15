# seiko_demo with labels from outside the process, as a user runs it: each round
# stops (exit 3) with its queries pending in feedback.sqlite, something labels them
# with the sqlite3 command, and --resume goes on, until the run is done.
#   cmake -DPROGRAM=<seiko_demo> -DDIFFUSION=<dir> -DCLASSIFIER=<dir> -DWORK_DIR=... -P external_labels.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
set(out "${WORK_DIR}/out")
set(args --diffusion "${DIFFUSION}" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}" --out "${out}" --threads 1
  --queries 4 4 --sample-steps 3 --optimize-steps 1 --batch 4 --eval-samples 20 --final-per-prompt 2 --per-prompt 1
  --external-labels --label-wait 0)
set(resume "")
foreach(round 1 2)
  execute_process(COMMAND ${PROGRAM} ${args} ${resume} RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE err)
  if(NOT rc EQUAL 3)
    message(FATAL_ERROR "round ${round}: expected exit 3 (labels pending), got ${rc}:\n${output}${err}")
  endif()
  string(FIND "${err}" "4 of the 4 queries of round ${round} wait for labels" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "round ${round}: stderr does not say what waits:\n${err}")
  endif()
  file(GLOB pictures "${out}/queries/*.png")
  list(LENGTH pictures count)
  math(EXPR expected "4 * ${round}")
  if(NOT count EQUAL expected)
    message(FATAL_ERROR "round ${round}: ${count} query pictures, expected ${expected}")
  endif()
  # The labeller: the prompt's index over 10, written with the sqlite3 command.
  execute_process(COMMAND sqlite3 "${out}/feedback.sqlite"
    "UPDATE labels SET label = prompt / 10.0, labelled_at = datetime('now') WHERE label IS NULL"
    RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "sqlite3 failed: ${err}")
  endif()
  set(resume --resume)
endforeach()
execute_process(COMMAND ${PROGRAM} ${args} --resume RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the labelled run did not finish (${rc}):\n${output}${err}")
endif()
file(STRINGS "${out}/rounds.csv" rows)
list(LENGTH rows count)
if(NOT count EQUAL 4)
  message(FATAL_ERROR "rounds.csv has ${count} lines, expected a header and rounds 0 to 2:\n${rows}")
endif()
list(GET rows 3 last)
if(NOT last MATCHES "^2,8,")
  message(FATAL_ERROR "round 2's row should count 8 queries: ${last}")
endif()
execute_process(COMMAND sqlite3 "${out}/feedback.sqlite" "SELECT count(*), count(label) FROM labels"
  OUTPUT_VARIABLE counts)
string(STRIP "${counts}" counts)
if(NOT counts STREQUAL "8|8")
  message(FATAL_ERROR "the store should hold 8 labelled rows, holds (rows|labelled) ${counts}")
endif()
message(STATUS "two rounds labelled from outside: ${last}")
file(REMOVE_RECURSE "${WORK_DIR}")
