# Sanitizer and fuzzing builds (DEVELOPERS.md "Sanitizer and fuzz builds").
#
#   KDESERVE_SANITIZE = ""                  (default) no sanitizer;
#                       address,undefined   ASan (+ LSan) and UBSan, every UB check fatal;
#                       thread              TSan;
#                       any comma-separated subset of address, undefined, thread, except thread
#                       together with address.
#   KDESERVE_FUZZ = ON                      builds the libFuzzer targets of tests/fuzz (clang
#                       only; usually with address,undefined) and registers their ctests.
#
# The flags apply to every target of the build, so all of the project's code is instrumented;
# the PyPI LibTorch, gRPC, protobuf, OpenCV and the rest of Debian's libraries are not. Every
# executable gets the runtime defaults and suppressions of cmake/sanitizers/ compiled in
# (defaults.cpp.in: __asan_default_options() and friends), so a test, the server an integration
# test starts, a gtest discovery run and a fuzzer all run with the same settings without any
# environment; ASAN_OPTIONS & co. still override them.
include_guard(GLOBAL)

set(KDESERVE_SANITIZE "" CACHE STRING
    "Sanitizers to build with: address,undefined | thread | empty for none")
option(KDESERVE_FUZZ "Build the libFuzzer targets of tests/fuzz (clang)" OFF)
# The budget of each fuzz ctest: it stops at whichever comes first. The environment variables
# of the same names override these when the test runs (scripts/test.sh runs shorter ones).
set(KDESERVE_FUZZ_RUNS 1000000 CACHE STRING "Executions of each fuzz target's ctest")
set(KDESERVE_FUZZ_SECONDS 600 CACHE STRING "Seconds of each fuzz target's ctest")

set(KDESERVE_SANITIZERS "")
if(KDESERVE_SANITIZE)
  string(REPLACE "," ";" KDESERVE_SANITIZERS "${KDESERVE_SANITIZE}")
  foreach(_s ${KDESERVE_SANITIZERS})
    if(NOT _s MATCHES "^(address|undefined|thread)$")
      message(FATAL_ERROR "kdeserve: KDESERVE_SANITIZE: unknown sanitizer '${_s}' "
                          "(address, undefined, thread)")
    endif()
  endforeach()
  if("thread" IN_LIST KDESERVE_SANITIZERS AND "address" IN_LIST KDESERVE_SANITIZERS)
    message(FATAL_ERROR "kdeserve: KDESERVE_SANITIZE: thread and address cannot be combined")
  endif()
  if(KDESERVE_WITH_CUDA)
    message(FATAL_ERROR "kdeserve: sanitizer builds are CPU builds (KDESERVE_WITH_CUDA=OFF)")
  endif()
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang|GNU")
    message(FATAL_ERROR "kdeserve: KDESERVE_SANITIZE needs clang or gcc")
  endif()
  if("thread" IN_LIST KDESERVE_SANITIZERS AND NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "kdeserve: KDESERVE_SANITIZE=thread needs clang (its ignore list, "
                        "cmake/sanitizers/tsan_ignorelist.txt): -DCMAKE_CXX_COMPILER=clang++")
  endif()
endif()
if(KDESERVE_FUZZ AND NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "kdeserve: KDESERVE_FUZZ needs clang (libFuzzer): configure with "
                      "-DCMAKE_CXX_COMPILER=clang++")
endif()

if(KDESERVE_SANITIZERS OR KDESERVE_FUZZ)
  set(_flags "")
  if(KDESERVE_SANITIZERS)
    list(JOIN KDESERVE_SANITIZERS "," _list)
    set(_flags -fsanitize=${_list})
  endif()
  # Readable stacks at little cost: frame pointers and line tables (clang: with the qualified
  # names of inlined functions, which suppressions match).
  add_compile_options(-fno-omit-frame-pointer
                      "$<IF:$<CXX_COMPILER_ID:Clang>,-gline-tables-only;-fdebug-info-for-profiling,-g1>")
  if("undefined" IN_LIST KDESERVE_SANITIZERS)
    # Undefined behaviour fails the process instead of printing a line and going on.
    list(APPEND _flags -fno-sanitize-recover=all)
  endif()
  add_compile_options(${_flags})
  add_link_options(${_flags})
  if("thread" IN_LIST KDESERVE_SANITIZERS)
    # gRPC's and protobuf's header halves are treated as the uninstrumented libraries they belong
    # to (the file says why).
    set(_ignorelist ${CMAKE_CURRENT_LIST_DIR}/sanitizers/tsan_ignorelist.txt)
    add_compile_options(-fsanitize-ignorelist=${_ignorelist})
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_ignorelist})
    # ccache (4.7) neither hashes the list nor sees it in the preprocessed source: an edited list
    # got the objects compiled with the old one from the cache. CCACHE_EXTRAFILES hashes it.
    if(CMAKE_CXX_COMPILER_LAUNCHER MATCHES "ccache")
      set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env CCACHE_EXTRAFILES=${_ignorelist}
                                      ${CMAKE_CXX_COMPILER_LAUNCHER})
    endif()
  endif()
  if(KDESERVE_FUZZ)
    # Coverage for libFuzzer in all of the project's code; only the fuzz targets link the
    # libFuzzer driver (-fsanitize=fuzzer, kdeserve_add_fuzzer). Other executables get the
    # sanitizer runtime's no-op coverage callbacks.
    add_compile_options(-fsanitize=fuzzer-no-link)
  endif()

  # The runtime defaults and suppressions, compiled into every executable
  # (kdeserve_sanitize_executables below).
  set(_dir ${CMAKE_CURRENT_LIST_DIR}/sanitizers)
  foreach(_kind lsan tsan)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_dir}/${_kind}.supp)
    file(READ ${_dir}/${_kind}.supp _text)
    string(TOUPPER ${_kind} _upper)
    set(KDESERVE_${_upper}_SUPPRESSIONS "${_text}")
  endforeach()
  configure_file(${_dir}/defaults.cpp.in ${CMAKE_BINARY_DIR}/sanitizer_defaults.cpp @ONLY)
  add_library(kdeserve_sanitizer_defaults OBJECT ${CMAKE_BINARY_DIR}/sanitizer_defaults.cpp)
  message(STATUS "kdeserve: sanitizers '${KDESERVE_SANITIZE}', fuzz targets ${KDESERVE_FUZZ}")
endif()

# Adds the sanitizer defaults object to every executable defined so far (call once, at the end of
# the top-level CMakeLists.txt).
function(kdeserve_sanitize_executables)
  if(NOT TARGET kdeserve_sanitizer_defaults)
    return()
  endif()
  set(_dirs ${PROJECT_SOURCE_DIR})
  while(_dirs)
    list(POP_FRONT _dirs _dir)
    get_property(_subdirs DIRECTORY ${_dir} PROPERTY SUBDIRECTORIES)
    list(APPEND _dirs ${_subdirs})
    get_property(_targets DIRECTORY ${_dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(_t ${_targets})
      get_target_property(_type ${_t} TYPE)
      if(_type STREQUAL "EXECUTABLE")
        target_sources(${_t} PRIVATE $<TARGET_OBJECTS:kdeserve_sanitizer_defaults>)
      endif()
    endforeach()
  endwhile()
endfunction()

# kdeserve_add_fuzzer(NAME name SOURCES ... LIBS ... [CORPUS dir...] [MAX_LEN bytes] [DICT file]
#                     [FLAGS libfuzzer-flag...])
#
# A libFuzzer target (KDESERVE_FUZZ=ON; otherwise nothing), part of the target kdeserve_fuzzers,
# and its ctest of the same name (labels slow and fuzz). SOURCES define LLVMFuzzerTestOneInput() and
# kdeserve::fuzz::generated_seeds() (tests/fuzz/fuzz_support.h). The test
# (tests/fuzz/run_fuzzer.sh) writes the generated seeds, adds the files of the CORPUS folders
# that fit in MAX_LEN (default 4096; a missing folder, e.g. no ../shared, is reported and
# skipped), then fuzzes in <build>/tests/fuzz/runs/<name>/ until KDESERVE_FUZZ_RUNS executions or
# KDESERVE_FUZZ_SECONDS seconds (cache variables, overridden by the environment variables of the
# same names), printing libFuzzer's final stats. It fails on any crash, sanitizer report, leak,
# timeout (KDESERVE_FUZZ_INPUT_TIMEOUT s per input, default 10) or out-of-memory; the input
# that did it is saved in <name>/artifacts/. FLAGS are more libFuzzer options (-close_fd_mask=2
# silences a library that prints to stderr; sanitizer and libFuzzer reports still print).
function(kdeserve_add_fuzzer)
  if(NOT KDESERVE_FUZZ)
    return()
  endif()
  cmake_parse_arguments(F "" "NAME;MAX_LEN;DICT" "SOURCES;LIBS;CORPUS;FLAGS" ${ARGN})
  if(NOT F_MAX_LEN)
    set(F_MAX_LEN 4096)
  endif()
  set(_dict "-")
  if(F_DICT)
    get_filename_component(_dict "${F_DICT}" ABSOLUTE)
  endif()
  add_executable(${F_NAME} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_support.cpp)
  target_link_libraries(${F_NAME} PRIVATE ${F_LIBS})
  target_include_directories(${F_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
  kdeserve_set_warnings(${F_NAME})
  # Every fuzz target, to build them all (scripts/fuzz.sh).
  if(NOT TARGET kdeserve_fuzzers)
    add_custom_target(kdeserve_fuzzers)
  endif()
  add_dependencies(kdeserve_fuzzers ${F_NAME})
  list(JOIN F_FLAGS " " _flags)
  add_test(NAME ${F_NAME}
           COMMAND bash ${PROJECT_SOURCE_DIR}/tests/fuzz/run_fuzzer.sh $<TARGET_FILE:${F_NAME}>
                   ${CMAKE_CURRENT_BINARY_DIR}/runs/${F_NAME} ${F_MAX_LEN} ${_dict} "${_flags}"
                   ${KDESERVE_FUZZ_RUNS} ${KDESERVE_FUZZ_SECONDS} ${F_CORPUS})
  # One thread: a fuzz run takes one core, and several run side by side.
  math(EXPR _timeout "${KDESERVE_FUZZ_SECONDS} + 600")
  set_tests_properties(${F_NAME} PROPERTIES LABELS "slow;fuzz" TIMEOUT ${_timeout}
                       ENVIRONMENT "OMP_NUM_THREADS=1;MKL_NUM_THREADS=1")
endfunction()
