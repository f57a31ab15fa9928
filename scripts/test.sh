#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the builds and the checks need, then builds
# and tests both supported builds, in Release, against LibTorch 2.11 (the venv's PyPI wheel):
#   build/       KDESERVE_WITH_CUDA=OFF: every ctest suite (unit, integration, slow: the CPU image);
#   build-cuda/  KDESERVE_WITH_CUDA=ON (TORCH_CUDA_ARCH_LIST 8.0;9.0): the libraries, the
#                server and the CLI link against CUDA, and what a CUDA build changes is tested
#                (target kdeserve_cuda_checks, tests/CMakeLists.txt; ctest selection cuda_checks
#                below): the device dispatch, the CUDA tests (which skip, saying why, without a
#                GPU), the server refusing device: cuda:N without one, its libraries, a smoke
#                call, the integration service suite and the CUDA image. Every other suite runs
#                the same CPU code as the CPU build (scripts/gpu_check.sh runs them on a GPU).
# and the sanitizer builds (clang; DEVELOPERS.md "Sanitizer and fuzz builds"), which build only
# what their tests run (target kdeserve_sanitizer_checks):
#   build-asan/  ASan+UBSan with the libFuzzer targets: the server tests, the integration tests
#                and every fuzz target for KDESERVE_FUZZ_SECONDS (default here 60) seconds each;
#   build-tsan/  TSan: the server tests and the integration tests, but for three wire and
#                linking checks that ASan runs (229 s of the last CI run's TSan tests).
# Extra arguments go to every ctest run (e.g. -L unit). Environment: KDESERVE_TEST_BUILDS
# ("cpu cuda asan tsan" by default; any of them), KDESERVE_BUILD_DIR /
# KDESERVE_CUDA_BUILD_DIR / KDESERVE_ASAN_BUILD_DIR / KDESERVE_TSAN_BUILD_DIR (default build /
# build-cuda / build-asan / build-tsan), KDESERVE_CMAKE_ARGS (extra -D options for all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh

extra_cmake_args=${KDESERVE_CMAKE_ARGS:-}
cpu_dir=${KDESERVE_BUILD_DIR:-build}
cuda_dir=${KDESERVE_CUDA_BUILD_DIR:-build-cuda}
asan_dir=${KDESERVE_ASAN_BUILD_DIR:-build-asan}
tsan_dir=${KDESERVE_TSAN_BUILD_DIR:-build-tsan}
sanitizer_cmake_args="-DCMAKE_CXX_COMPILER=clang++ -DKDESERVE_BUILD_BENCHMARKS=OFF"
failed=()
# The CUDA build's tests: the GoogleTest suites of the executables its target kdeserve_cuda_checks
# builds (tests/CMakeLists.txt; keep the two together), the server scripts that depend on the
# build, the integration service suite and the CUDA image.
cuda_checks='^(AttentionApi|AttentionOnCuda|KdeformerFused|KdeformerFusedOnCuda|ModelsOnCuda|ServerConfig|ServerStatus|ServerLogging|ServerMetrics|ThreadStacks)\.'
cuda_checks+='|^(server_(smoke|runtime_libs|cuda_device)_test|integration_ServiceTest|deploy_image_rootfs_cuda)$'
builds=${KDESERVE_TEST_BUILDS:-cpu cuda asan tsan}
for variant in $builds; do
  case "$variant" in
    cpu)
      export KDESERVE_BUILD_DIR=$cpu_dir
      export KDESERVE_CMAKE_ARGS="$extra_cmake_args"
      ;;
    cuda)
      if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
        echo "test.sh: the CUDA build needs CUDA's nvcc (/usr/local/cuda or PATH); run with" \
             "KDESERVE_TEST_BUILDS=cpu to test the CPU build only" >&2
        exit 1
      fi
      export KDESERVE_BUILD_DIR=$cuda_dir
      export KDESERVE_CMAKE_ARGS="-DKDESERVE_WITH_CUDA=ON $extra_cmake_args"
      ;;
    asan)
      export KDESERVE_BUILD_DIR=$asan_dir
      export KDESERVE_CMAKE_ARGS="$sanitizer_cmake_args -DKDESERVE_SANITIZE=address,undefined"
      KDESERVE_CMAKE_ARGS+=" -DKDESERVE_FUZZ=ON $extra_cmake_args"
      ;;
    tsan)
      export KDESERVE_BUILD_DIR=$tsan_dir
      export KDESERVE_CMAKE_ARGS="$sanitizer_cmake_args -DKDESERVE_SANITIZE=thread $extra_cmake_args"
      ;;
    *)
      echo "test.sh: unknown build '$variant' in KDESERVE_TEST_BUILDS (cpu, cuda, asan, tsan)" >&2
      exit 2
      ;;
  esac
  echo "== test.sh: $variant build in $KDESERVE_BUILD_DIR"
  start=$SECONDS
  targets=() tests=()
  case "$variant" in
    # A selection that matched nothing (a suite renamed) fails instead of passing empty.
    cuda) targets=(kdeserve_cuda_checks) tests=(-R "$cuda_checks" --no-tests=error) ;;
    asan) targets=(kdeserve_sanitizer_checks) tests=(-L 'server|integration|fuzz') ;;
    # Under TSan (5-15x slower) one batch's time varies too much for this timing test to set up
    # its expired-while-queued call; the other builds run it, and the hardening and integration
    # tests cover expiry while queued under TSan.
    # The echoed-strings limits, the Triton client and the runtime-libraries checks (~4 min of
    # the TSan run) test wire formats and linking, not threads: the ASan build runs them.
    tsan) targets=(kdeserve_sanitizer_checks)
          tests=(-L 'server|integration'
                 -E 'ServiceTest.DeadlinePassedWhileQueuedIsNotComputed|^server_(echo_limits|oip_tritonclient|runtime_libs)_test$') ;;
  esac
  if ((${#targets[@]})); then
    bash scripts/build.sh "${targets[@]}"
  else
    bash scripts/build.sh
  fi
  built=$SECONDS
  # A fuzz target's ctest runs 60 s here; scripts/fuzz.sh runs the full budget.
  if ! (cd "$KDESERVE_BUILD_DIR" &&
        KDESERVE_FUZZ_SECONDS=${KDESERVE_FUZZ_SECONDS:-60} \
          ctest --output-on-failure -j "$(nproc)" "${tests[@]}" "$@"); then
    failed+=("$variant")
  fi
  echo "== test.sh: $variant build: built in $((built - start)) s, tested in $((SECONDS - built)) s"
done
if ((${#failed[@]})); then
  echo "test.sh: tests failed in the ${failed[*]} build(s)" >&2
  exit 1
fi
echo "test.sh: all tests passed ($builds)"
