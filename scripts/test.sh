#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the builds and the checks need, then builds
# and tests both supported builds, in Release, against LibTorch 2.11 (the venv's PyPI wheel):
#   build/       KDESERVE_WITH_CUDA=OFF: every ctest suite (unit, integration, slow: the CPU image);
#   build-cuda/  KDESERVE_WITH_CUDA=ON (TORCH_CUDA_ARCH_LIST 8.0;9.0): the whole project links
#                against CUDA; its tests run their CPU parts here (the CUDA tests skip, saying
#                why, without a GPU), the server refuses device: cuda:N without one, and the CUDA
#                image is executed.
# Extra arguments go to every ctest run (e.g. -L unit). Environment: KDESERVE_TEST_BUILDS
# ("cpu cuda" by default; "cpu" or "cuda" for one), KDESERVE_BUILD_DIR / KDESERVE_CUDA_BUILD_DIR
# (default build / build-cuda), KDESERVE_CMAKE_ARGS (extra -D options for both).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh

extra_cmake_args=${KDESERVE_CMAKE_ARGS:-}
cpu_dir=${KDESERVE_BUILD_DIR:-build}
cuda_dir=${KDESERVE_CUDA_BUILD_DIR:-build-cuda}
failed=()
for variant in ${KDESERVE_TEST_BUILDS:-cpu cuda}; do
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
    *) echo "test.sh: unknown build '$variant' in KDESERVE_TEST_BUILDS (cpu, cuda)" >&2; exit 2 ;;
  esac
  echo "== test.sh: $variant build in $KDESERVE_BUILD_DIR"
  bash scripts/build.sh
  if ! (cd "$KDESERVE_BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" "$@"); then
    failed+=("$variant")
  fi
done
if ((${#failed[@]})); then
  echo "test.sh: tests failed in the ${failed[*]} build(s)" >&2
  exit 1
fi
echo "test.sh: all tests passed (${KDESERVE_TEST_BUILDS:-cpu cuda})"
