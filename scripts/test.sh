#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the build and the checks need, builds
# everything in Release and runs every ctest suite. Extra arguments go to ctest (e.g. -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
cd "${KDESERVE_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
