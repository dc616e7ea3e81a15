# The weights a training run wrote carry their SHA-256 in its config.json, and a
# reader refuses them once a byte has changed.
#   cmake -DRUN_DIR=<a finished pretrain_diffusion --out> -DWORK_DIR=... -DREADER=<sample>
#         -P weights_checksum.cmake

file(READ "${RUN_DIR}/config.json" config)
string(JSON recorded ERROR_VARIABLE missing GET "${config}" sha256 model.pt)
if(missing)
  message(FATAL_ERROR "config.json records no sha256 of model.pt: ${missing}\n${config}")
endif()
file(SHA256 "${RUN_DIR}/model.pt" actual)
if(NOT recorded STREQUAL actual)
  message(FATAL_ERROR "config.json records ${recorded}, model.pt's SHA-256 is ${actual}")
endif()

# One byte changed in the middle of the file, inside the tensor data.
file(REMOVE_RECURSE "${WORK_DIR}")
file(COPY "${RUN_DIR}/" DESTINATION "${WORK_DIR}/model")
file(SIZE "${WORK_DIR}/model/model.pt" size)
math(EXPR middle "${size} / 2")
execute_process(COMMAND sh -c "printf 'X' | dd of=\"$0\" bs=1 seek=$1 count=1 conv=notrunc status=none"
  "${WORK_DIR}/model/model.pt" ${middle} RESULT_VARIABLE rc)
file(SHA256 "${WORK_DIR}/model/model.pt" changed)
if(NOT rc EQUAL 0 OR changed STREQUAL actual)
  message(FATAL_ERROR "could not change a byte of the copy")
endif()

execute_process(COMMAND ${READER} --model "${WORK_DIR}/model" --out "${WORK_DIR}/out"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "the reader used weights with a changed byte:\n${out}${err}")
endif()
string(FIND "${err}" "SHA-256" found)
if(found EQUAL -1)
  message(FATAL_ERROR "the reader failed without naming the checksum:\n${err}")
endif()
message(STATUS "refused: ${err}")
file(REMOVE_RECURSE "${WORK_DIR}")
