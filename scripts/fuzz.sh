#!/usr/bin/env bash
# The full fuzzing run (DEVELOPERS.md "Sanitizer and fuzz builds"): builds the libFuzzer targets
# in the ASan+UBSan build (build-asan/, the one scripts/test.sh's asan build uses) and runs each
# target's ctest for the full budget, KDESERVE_FUZZ_RUNS executions (default 1000000) or
# KDESERVE_FUZZ_SECONDS seconds (default 600), whichever comes first, KDESERVE_FUZZ_JOBS targets
# at a time (default 1: each takes one core), then prints every target's executions, time and
# result. A failing input is kept in <build>/tests/fuzz/runs/<target>/artifacts/.
#   bash scripts/fuzz.sh [CTEST_ARGS...]     e.g. -R fuzz_image for one target
# Environment: KDESERVE_ASAN_BUILD_DIR (default build-asan), KDESERVE_CMAKE_ARGS (extra -D
# options), KDESERVE_BUILD_JOBS. Budgets above the configured ones need a reconfigure
# (-DKDESERVE_FUZZ_SECONDS=...): ctest stops a test 600 s after it.
set -euo pipefail
cd "$(dirname "$0")/.."
export KDESERVE_BUILD_DIR=${KDESERVE_ASAN_BUILD_DIR:-build-asan}
export KDESERVE_CMAKE_ARGS="-DCMAKE_CXX_COMPILER=clang++ -DKDESERVE_BUILD_BENCHMARKS=OFF \
-DKDESERVE_SANITIZE=address,undefined -DKDESERVE_FUZZ=ON ${KDESERVE_CMAKE_ARGS:-}"
start=$SECONDS
bash scripts/build.sh kdeserve_fuzzers
echo "== fuzz.sh: fuzz targets built in $((SECONDS - start)) s"
runs=$KDESERVE_BUILD_DIR/tests/fuzz/runs
rm -f "$runs"/*/summary.txt
status=0
(cd "$KDESERVE_BUILD_DIR" && ctest -L fuzz -j "${KDESERVE_FUZZ_JOBS:-1}" --output-on-failure "$@") ||
  status=$?
echo "== fuzz.sh: results"
found=0
for summary in "$runs"/*/summary.txt; do
  [[ -f $summary ]] || continue
  cat "$summary"
  found=1
done
((found)) || { echo "fuzz.sh: no fuzz target ran" >&2; exit 1; }
exit "$status"
