# seiko_demo --variant score-matching end to end on tiny models: an unconditional
# model pretrained for two steps, a pool, two rounds, the final evaluation; then
# the refusals of what the variant does not do.
#   cmake -DPROGRAM=<seiko_demo> -DPRETRAIN=<pretrain_diffusion> -DCLASSIFIER=<dir> -DWORK_DIR=... -P score_matching.cmake

file(REMOVE_RECURSE "${WORK_DIR}")
function(run expect_rc)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE err)
  if(NOT rc EQUAL expect_rc)
    message(FATAL_ERROR "expected exit ${expect_rc}, got ${rc}: ${ARGN}\n${output}${err}")
  endif()
  set(output "${output}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()

run(0 ${PRETRAIN} --unconditional --threads 1 --steps 2 --batch 8 --sample-steps 2 --samples-per-class 1
  --out "${WORK_DIR}/diffusion")
set(out "${WORK_DIR}/out")
set(args --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}" --threads 1
  --variant score-matching --alpha 0.1 --beta 0.1 --pool 24 --queries 4 4 --sample-steps 3 --optimize-steps 2
  --batch 8 --eval-samples 20 --final-per-prompt 2 --per-prompt 1)
run(0 ${PROGRAM} ${args} --out "${out}")
foreach(name rounds.csv metrics.json samples.npy prompts.npy feedback.sqlite round_0.png round_2.png)
  if(NOT EXISTS "${out}/${name}")
    message(FATAL_ERROR "no ${name} in the output:\n${output}${err}")
  endif()
endforeach()
file(STRINGS "${out}/rounds.csv" rows)
list(LENGTH rows count)
if(NOT count EQUAL 4)
  message(FATAL_ERROR "rounds.csv has ${count} lines, expected a header and rounds 0, 1, 2")
endif()
# Each round reports the optimum it aims at, and the oracle was asked 4 + 4 times.
file(READ "${out}/metrics.json" metrics)
string(JSON optima LENGTH "${metrics}" pool_optima)
string(JSON asked GET "${metrics}" queries_total)
if(NOT optima EQUAL 2 OR NOT asked EQUAL 8)
  message(FATAL_ERROR "metrics.json: ${optima} pool optima and ${asked} queries, expected 2 and 8")
endif()

# It starts afresh: no --resume, no second run into the same directory.
run(1 ${PROGRAM} ${args} --out "${out}" --resume)
string(FIND "${err}" "it has no --resume" at)
run(1 ${PROGRAM} ${args} --out "${out}")
string(FIND "${err}" "feedback.sqlite exists" at2)
# The pretrained UNet's features serve this variant's reward model (its default), no other.
string(JSON features GET "${metrics}" reward_features)
run(1 ${PROGRAM} --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}"
  --variant greedy --reward-features diffusion --out "${WORK_DIR}/greedy")
string(FIND "${err}" "serve --variant score-matching" at3)
if(at EQUAL -1 OR at2 EQUAL -1 OR at3 EQUAL -1 OR NOT features STREQUAL "diffusion")
  message(FATAL_ERROR "the refusals do not say why, or the features are not the UNet's (${features}):\n${err}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
