# Shared build helpers: compiler cache, warnings, precompiled headers, tests.
include_guard(GLOBAL)

find_program(KDESERVE_CCACHE ccache)
if(KDESERVE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # Precompiled headers need these sloppiness settings to be cacheable.
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      ${KDESERVE_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${KDESERVE_CCACHE})
endif()

# Sets the project's warning flags on a target.
function(kdeserve_set_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
  if(KDESERVE_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()

# kdeserve_add_test(NAME name SOURCES ... LIBS ... LABELS unit|slow|integration [TIMEOUT s])
function(kdeserve_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  # Tests that see LibTorch get MKL's first threaded calls out of the way (mkl_warm_up.cpp).
  set(_torch_libs kdeserve_attention kdeserve_models kdeserve_safetensors kdeserve_test_support)
  foreach(_lib ${T_LIBS})
    if(_lib IN_LIST _torch_libs)
      target_sources(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests/support/mkl_warm_up.cpp)
      break()
    endif()
  endforeach()
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  kdeserve_set_warnings(${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  # MKL_DOMAIN_VML=1: MKL's own threads for vector math (exp, ...) are off, ATen already splits
  # large element-wise ops over its threads. With them on, a process's first float64 exp could
  # differ by ~1e-10 from every later one when the machine was busy (one MKL worker thread
  # computed its half less accurately), which made the 1e-13 exactness tests flaky under
  # `ctest -j`. MKL reads the variable at load time, so it is set per test process (as its own
  # property: gtest discovery flattens a multi-entry ENVIRONMENT list).
  gtest_discover_tests(${T_NAME}
    DISCOVERY_TIMEOUT 120
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
               ENVIRONMENT "KDESERVE_SHARED_DIR=${KDESERVE_SHARED_DIR}"
               ENVIRONMENT_MODIFICATION "MKL_DOMAIN_NUM_THREADS=set:MKL_DOMAIN_VML=1")
endfunction()
