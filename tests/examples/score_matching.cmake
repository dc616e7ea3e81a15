# seiko_demo --variant score-matching end to end on tiny models: an unconditional
# model pretrained for two steps, a pool, two rounds (sampling with a guided,
# switched drift), the final evaluation, the tuned network saved; that network
# evaluated again through --optimal-from; then the refusals of what the variant
# does not do.
# Last, examples/seiko_demo.sh (SCRIPT) on the same models.
#   cmake -DPROGRAM=<seiko_demo> -DPRETRAIN=<pretrain_diffusion> -DCLASSIFIER=<dir> -DSCRIPT=<seiko_demo.sh>
#         -DWORK_DIR=... -P score_matching.cmake

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
  --batch 8 --eval-samples 20 --final-per-prompt 2 --per-prompt 1 --tuned-scale 1.5 --steer-until 0.5)
run(0 ${PROGRAM} ${args} --out "${out}")
foreach(name rounds.csv rounds.svg metrics.json samples.npy prompts.npy feedback.sqlite round_0.png round_2.png
    model.pt config.json)
  if(NOT EXISTS "${out}/${name}")
    message(FATAL_ERROR "no ${name} in the output:\n${output}${err}")
  endif()
endforeach()
file(STRINGS "${out}/rounds.csv" rows)
list(LENGTH rows count)
if(NOT count EQUAL 4)
  message(FATAL_ERROR "rounds.csv has ${count} lines, expected a header and rounds 0, 1, 2")
endif()
# rounds.svg draws the three rounds in each of its five panels (the reward model's
# reward from round 1 on).
file(READ "${out}/rounds.svg" chart)
string(REGEX MATCHALL "<circle" points "${chart}")
list(LENGTH points drawn)
if(NOT drawn EQUAL 17 OR NOT chart MATCHES "path KL to the pretrained model")
  message(FATAL_ERROR "rounds.svg: ${drawn} points, expected 3 per panel and 2 of the reward model")
endif()
# Each round reports the optimum it aims at, and the oracle was asked 4 + 4 times.
file(READ "${out}/metrics.json" metrics)
string(JSON optima LENGTH "${metrics}" pool_optima)
string(JSON asked GET "${metrics}" queries_total)
if(NOT optima EQUAL 2 OR NOT asked EQUAL 8)
  message(FATAL_ERROR "metrics.json: ${optima} pool optima and ${asked} queries, expected 2 and 8")
endif()
# The variant's own learning rate where none is given; the flags given win.
string(JSON rate GET "${metrics}" learning_rate)
string(JSON alpha GET "${metrics}" alpha)
string(JSON bonus GET "${metrics}" bonus)
string(JSON final_tilt GET "${metrics}" final_tilt)
string(JSON gamma GET "${metrics}" min_snr_gamma)
string(JSON round_1_steps GET "${metrics}" round_steps 0)
string(JSON round_2_steps GET "${metrics}" round_steps 1)
if(NOT rate EQUAL 0.0003 OR NOT alpha EQUAL 0.1 OR NOT bonus EQUAL 1 OR NOT final_tilt STREQUAL "mean"
    OR NOT gamma EQUAL 5 OR NOT round_1_steps EQUAL 1 OR NOT round_2_steps EQUAL 2)
  message(FATAL_ERROR "metrics.json: learning rate ${rate} (expected the variant's 3e-4), alpha ${alpha} (given 0.1), "
    "optimism bonus ${bonus} (the default 1), last round's tilt ${final_tilt} (the default mean), Min-SNR gamma "
    "${gamma} (the default 5), round steps ${round_1_steps} ${round_2_steps} (--optimize-steps 2: 1 2)")
endif()
# The figures and the weights name the machine they were computed on: the same seed
# gives the same numbers only on the same kernels and threads.
file(READ "${WORK_DIR}/diffusion/config.json" pretrained_config)
foreach(json metrics pretrained_config)
  string(JSON threads GET "${${json}}" machine threads)
  string(JSON kernels GET "${${json}}" machine libtorch_kernels)
  string(JSON version GET "${${json}}" machine libtorch)
  if(NOT threads EQUAL 1 OR kernels STREQUAL "unknown" OR kernels STREQUAL "" OR NOT version MATCHES "^[0-9]+[.]")
    message(FATAL_ERROR "${json}: machine records ${threads} threads (given 1), kernels '${kernels}', "
      "LibTorch '${version}'")
  endif()
endforeach()

# Which samples the oracle is asked about follows from the labels so far alone: a
# run that trains nothing in round 1 and measures more samples each round asks
# the same labels, in both rounds (the queries draw from a generator of their own).
set(label_args ${args})
list(FIND label_args --eval-samples at_eval)
math(EXPR at_count "${at_eval} + 1")
list(REMOVE_AT label_args ${at_eval} ${at_count})
run(0 ${PROGRAM} ${label_args} --eval-samples 40 --round-steps 0 5 --out "${WORK_DIR}/labels_only")
foreach(run out labels_only)
  execute_process(COMMAND sqlite3 -readonly "${WORK_DIR}/${run}/feedback.sqlite"
    "SELECT round, prompt, label, hex(sample) FROM labels ORDER BY id" OUTPUT_VARIABLE asked_${run} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR asked_${run} STREQUAL "")
    message(FATAL_ERROR "sqlite3 could not read the labels of ${run} (exit ${rc})")
  endif()
endforeach()
if(NOT asked_out STREQUAL asked_labels_only)
  message(FATAL_ERROR "--round-steps 0 5 --eval-samples 40 asked other labels than --optimize-steps 2 "
    "--eval-samples 20:\n${asked_out}\n${asked_labels_only}")
endif()

# The tuned network is a class-conditional model that --optimal-from steers to,
# here at another scale and switch time.
file(READ "${out}/config.json" tuned)
string(JSON conditional GET "${tuned}" conditional)
string(JSON classes GET "${tuned}" unet num_classes)
if(NOT conditional OR NOT classes EQUAL 10)
  message(FATAL_ERROR "config.json of the tuned network: conditional ${conditional}, ${classes} classes")
endif()
run(0 ${PROGRAM} --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}" --threads 1
  --optimal-from "${out}" --tuned-scale 2 --steer-until 0.75 --control held --measure-every 1 --optimize-steps 0
  --queries 1 --ensemble-steps 0 --sample-steps 3 --eval-samples 20 --final-per-prompt 2 --per-prompt 1
  --out "${WORK_DIR}/again")
file(READ "${WORK_DIR}/again/metrics.json" again)
string(JSON scale GET "${again}" tuned_scale)
string(JSON kl GET "${again}" kl_to_pretrained)
if(NOT scale EQUAL 2 OR NOT kl GREATER 0)
  message(FATAL_ERROR "--optimal-from the tuned network: scale ${scale}, path KL ${kl}")
endif()

# A second run into the same directory is refused unless it resumes; resumed
# after the last round, the run evaluates the same network again (the same
# samples: its checkpoint holds the generator).
run(1 ${PROGRAM} ${args} --out "${out}")
string(FIND "${err}" "feedback.sqlite exists" at)
file(READ "${out}/samples.npy" first_samples HEX)
file(REMOVE "${out}/metrics.json")
run(0 ${PROGRAM} ${args} --out "${out}" --resume)
string(FIND "${err}" "resuming after round 2 with 8 labels" at2)
file(READ "${out}/samples.npy" again_samples HEX)
if(NOT EXISTS "${out}/metrics.json" OR NOT first_samples STREQUAL again_samples)
  message(FATAL_ERROR "resumed after the last round: no metrics.json, or other samples\n${err}")
endif()
# The pretrained UNet's features serve this variant's reward model (its default), no other.
string(JSON features GET "${metrics}" reward_features)
run(1 ${PROGRAM} --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}"
  --variant greedy --reward-features diffusion --out "${WORK_DIR}/greedy")
string(FIND "${err}" "serve --variant score-matching" at3)
run(1 ${PROGRAM} --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}"
  --variant greedy --tuned-scale 2 --out "${WORK_DIR}/greedy")
string(FIND "${err}" "shape a tuned model's drift" at4)
run(1 ${PROGRAM} --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}"
  --variant greedy --final-tilt mean --out "${WORK_DIR}/greedy")
string(FIND "${err}" "only --variant score-matching tilts a pool" at5)
run(1 ${PROGRAM} --diffusion "${WORK_DIR}/diffusion" --oracle "${CLASSIFIER}" --weak "${CLASSIFIER}"
  --variant greedy --optimistic-rounds 1 --out "${WORK_DIR}/greedy")
string(FIND "${err}" "--optimistic-rounds: only --variant score-matching" at6)
if(at EQUAL -1 OR at2 EQUAL -1 OR at3 EQUAL -1 OR at4 EQUAL -1 OR at5 EQUAL -1 OR at6 EQUAL -1
    OR NOT features STREQUAL "diffusion")
  message(FATAL_ERROR "the refusals do not say why, or the features are not the UNet's (${features}):\n${err}")
endif()

# --optimistic-rounds 0 tilts round 1 by the ensemble's mean, as --bonus 0 does:
# the same round-1 optimum (the rounds after it follow from it), unlike the
# default's optimistic one.
run(0 ${PROGRAM} ${args} --optimistic-rounds 0 --out "${WORK_DIR}/commit")
run(0 ${PROGRAM} ${args} --bonus 0 --out "${WORK_DIR}/mean")
file(READ "${WORK_DIR}/commit/metrics.json" committed)
file(READ "${WORK_DIR}/mean/metrics.json" greedy)
string(JSON committed_rounds GET "${committed}" optimistic_rounds)
string(JSON committed_optimum GET "${committed}" pool_optima 0 effective_samples)
string(JSON greedy_optimum GET "${greedy}" pool_optima 0 effective_samples)
string(JSON optimistic_optimum GET "${metrics}" pool_optima 0 effective_samples)
if(NOT committed_rounds EQUAL 0 OR NOT committed_optimum STREQUAL greedy_optimum
    OR committed_optimum STREQUAL optimistic_optimum)
  message(FATAL_ERROR "--optimistic-rounds 0 (recorded: ${committed_rounds}): round 1's optimum has "
    "${committed_optimum} effective samples per prompt, --bonus 0's ${greedy_optimum}, the optimistic default's "
    "${optimistic_optimum}")
endif()

# The README's first command, examples/seiko_demo.sh, runs this variant when no
# --variant is given; run again (so named or not), it keeps a finished run and
# resumes an unfinished one.
set(models "${WORK_DIR}/models")
file(MAKE_DIRECTORY "${models}")
file(CREATE_LINK "${WORK_DIR}/diffusion" "${models}/diffusion_uncond" SYMBOLIC)
file(CREATE_LINK "${CLASSIFIER}" "${models}/oracle" SYMBOLIC)
file(CREATE_LINK "${CLASSIFIER}" "${models}/weak" SYMBOLIC)
get_filename_component(examples_dir "${PROGRAM}" DIRECTORY)
get_filename_component(build_dir "${examples_dir}" DIRECTORY)
set(script ${CMAKE_COMMAND} -E env "BUILD=${build_dir}" "MODELS=${models}" "OUT=${WORK_DIR}/script" sh "${SCRIPT}")
set(tiny --threads 1 --pool 24 --queries 4 --sample-steps 3 --optimize-steps 2 --batch 8 --final-per-prompt 2
  --per-prompt 1)
run(0 ${script} ${tiny} --eval-samples 20)
file(READ "${WORK_DIR}/script/metrics.json" scripted)
string(JSON variant GET "${scripted}" variant)
string(JSON default_alpha GET "${scripted}" alpha)
run(0 ${script} ${tiny} --eval-samples 20 --variant score-matching)  # named, it is the same
string(FIND "${output}" "holds a finished run" kept)
file(REMOVE "${WORK_DIR}/script/metrics.json")
run(0 ${script} ${tiny} --eval-samples 20)
string(FIND "${err}" "resuming after round 1" resumed)
if(NOT variant STREQUAL "score-matching" OR NOT default_alpha EQUAL 0.05 OR kept EQUAL -1 OR resumed EQUAL -1)
  message(FATAL_ERROR "seiko_demo.sh: variant ${variant} at alpha ${default_alpha} (expected 0.05), a finished run "
    "kept: ${kept}, an unfinished one resumed: ${resumed}\n${output}${err}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
