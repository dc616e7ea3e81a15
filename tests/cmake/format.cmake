# Checks that every C++ file of the project follows .clang-format: lists the files
# that clang-format would change (and how, for the first), then fails.
#   cmake -DCLANG_FORMAT=<clang-format> -DSOURCE_DIR=<repository> -P format.cmake
file(GLOB_RECURSE sources LIST_DIRECTORIES false
  "${SOURCE_DIR}/include/*.hpp"
  "${SOURCE_DIR}/tests/*.hpp" "${SOURCE_DIR}/tests/*.cpp"
  "${SOURCE_DIR}/examples/*.hpp" "${SOURCE_DIR}/examples/*.cpp"
  "${SOURCE_DIR}/benchmarks/*.hpp" "${SOURCE_DIR}/benchmarks/*.cpp")
set(unformatted)
foreach(source IN LISTS sources)
  execute_process(COMMAND "${CLANG_FORMAT}" --dry-run --Werror "${source}"
    RESULT_VARIABLE result ERROR_VARIABLE diagnostics OUTPUT_QUIET)
  if(NOT result EQUAL 0)
    if(NOT unformatted)
      set(first_diagnostics "${diagnostics}")
    endif()
    file(RELATIVE_PATH name "${SOURCE_DIR}" "${source}")
    list(APPEND unformatted "${name}")
  endif()
endforeach()
list(LENGTH sources checked)
if(unformatted)
  list(JOIN unformatted "\n  " names)
  message(FATAL_ERROR "format: these files do not follow .clang-format (run clang-format -i on them):\n  ${names}\n"
    "The first one:\n${first_diagnostics}")
endif()
message(STATUS "format: all ${checked} files follow .clang-format")
