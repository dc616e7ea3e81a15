# seiko_frontier on four metrics.json files: two runs of one method at one alpha
# become one point with a 95% t-interval, a third run its own point, a DDPO run
# a point without alpha; and the picture draws one marker per point in each of
# its three panels. Then --baseline: two methods paired by seed, the seeds one of
# them lacks named and left out, and the inputs pairing cannot use refused.
#   cmake -DPROGRAM=... -DWORK_DIR=... -P frontier.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
# Fails unless FILE holds each of the further arguments.
function(expect_text file)
  file(READ "${file}" text)
  foreach(expected IN LISTS ARGN)
    string(FIND "${text}" "${expected}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "${file} lacks\n${expected}\n${text}")
    endif()
  endforeach()
endfunction()
# Fails unless the SVG chart FILE draws COUNT points.
function(expect_points file count)
  file(READ "${file}" chart)
  string(REGEX MATCHALL "<circle" points "${chart}")
  list(LENGTH points drawn)
  if(NOT drawn EQUAL count)
    message(FATAL_ERROR "${file}: ${drawn} points, expected ${count}")
  endif()
endfunction()
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
expect_text("${WORK_DIR}/out/frontier.md"
  "| accuracy | p(z\\|x) | diversity |"  # the "|" of p(z|x) escaped, or Markdown splits the column
  "| SEIKO | 0.03 | 896 | 2 | 0.850 +- 0.635 | 0.500 | 0.900 | 10.0 | 17.0 +- 12.7 |"
  "| SEIKO | 0.1 | 896 | 1 | 0.700 | 0.500 | 0.900 | 10.0 | 9.0 |"
  "| DDPO | - | 896 | 1 | 0.100 | 0.100 | 1.000 | 60.0 | 90.0 |")
expect_points("${WORK_DIR}/out/frontier.svg" 9)  # 3 in each of 3 panels
# A run without a final evaluation is named, in one line.
file(WRITE "${WORK_DIR}/unfinished/rounds.csv" "round\n")
execute_process(COMMAND ${PROGRAM} --out "${WORK_DIR}/out2" "SEIKO=${WORK_DIR}/unfinished"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "unfinished/metrics.json")
  message(FATAL_ERROR "a run without metrics.json: exit ${rc}, stderr:\n${err}")
endif()

# Paired by seed: SEIKO at seeds 0 to 2 against greedy at 0 to 3. Accuracy
# differences 0.10, 0.05, 0.05: mean 1/15, standard error 1/60, t(2) = 4.303, all
# three ahead, sign-flip p = 2/8; KL differences 1, 0, 1 (+0.7 +- 1.4); at equal KL
# (0.01 per nat) 0.09, 0.05, 0.04: +0.060 +- 0.066.
function(write_seeded name seed accuracy kl)
  file(WRITE "${WORK_DIR}/${name}/metrics.json"
    "{\"alpha\": 0.05, \"seed\": ${seed}, \"oracle_accuracy\": ${accuracy}, \"oracle_probability\": 0.5, "
    "\"diversity\": 0.9, \"class_fd\": 10.0, \"kl_to_pretrained\": ${kl}, \"queries_total\": 896}")
endfunction()
write_seeded(sm0 0 0.80 11.0)
write_seeded(sm1 1 0.85 12.0)
write_seeded(sm2 2 0.90 13.0)
write_seeded(gr0 0 0.70 10.0)
write_seeded(gr1 1 0.80 12.0)
write_seeded(gr2 2 0.85 12.0)
write_seeded(gr3 3 0.60 9.0)
set(pairs "SEIKO=${WORK_DIR}/sm0" "SEIKO=${WORK_DIR}/sm1" "SEIKO=${WORK_DIR}/sm2" "greedy=${WORK_DIR}/gr0"
    "greedy=${WORK_DIR}/gr1" "greedy=${WORK_DIR}/gr2" "greedy=${WORK_DIR}/gr3")
execute_process(COMMAND ${PROGRAM} --out "${WORK_DIR}/paired" --baseline greedy --kl-slope 0.01 ${pairs}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "seiko_frontier --baseline exited ${rc}:\n${out}${err}")
endif()
expect_text("${WORK_DIR}/paired/paired.md"
  "| SEIKO | 0.05 | 896 | 3 | +0.067 +- 0.072 | +0.000 | +0.000 | +0.0 | +0.7 +- 1.4 | 3 of 3 | 0.250 | +0.060 +- 0.066 | 0.250 |"
  "seeds run by one of them only, left out: 3.")
# The picture: three differences and their mean in each of its two panels.
expect_points("${WORK_DIR}/paired/paired.svg" 8)
expect_text("${WORK_DIR}/paired/paired.svg" "SEIKO: mean")
# What pairing cannot use: two runs of one seed, a run without a seed, a baseline
# without runs, a slope without a baseline.
write_seeded(sm0_again 0 0.75 11.0)
foreach(case "again|--baseline,greedy,SEIKO=${WORK_DIR}/sm0_again|sm0 are both SEIKO runs of seed 0"
    "unseeded|--baseline,greedy,SEIKO=${WORK_DIR}/s0|s0/metrics.json: no \"seed\""
    "no baseline|--baseline,DDPO|--baseline DDPO: no runs of that method"
    "slope alone|--kl-slope,0.01|--kl-slope compares with a --baseline")
  string(REPLACE "|" ";" parts "${case}")
  list(GET parts 0 name)
  list(GET parts 1 flags)
  list(GET parts 2 message)
  string(REPLACE "," ";" flags "${flags}")
  execute_process(COMMAND ${PROGRAM} --out "${WORK_DIR}/refused" ${flags} ${pairs}
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${err}" "${message}" at)
  if(rc EQUAL 0 OR at EQUAL -1)
    message(FATAL_ERROR "${name}: exit ${rc}, expected an error naming \"${message}\", stderr:\n${err}")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
