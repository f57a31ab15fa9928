#!/usr/bin/env bash
# The one build command: configures kdeserve with CMake (Ninja, Release) and builds it. Used by
# the test command (scripts/test.sh, so CI), the main job (scripts/run.sh) and both container
# images (Dockerfile, Dockerfile.cuda); tests/deploy checks that they all call it.
#   bash scripts/build.sh [TARGET...]     no target: everything (tests and benchmarks included)
# Environment: KDESERVE_BUILD_DIR (default build), KDESERVE_CMAKE_ARGS (extra -D options),
# KDESERVE_BUILD_JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KDESERVE_BUILD_DIR:-build}
jobs=${KDESERVE_BUILD_JOBS:-$(nproc)}
# shellcheck disable=SC2086  # KDESERVE_CMAKE_ARGS holds several words on purpose
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${KDESERVE_CMAKE_ARGS:-}
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"
