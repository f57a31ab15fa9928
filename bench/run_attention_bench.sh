#!/usr/bin/env bash
# Runs attention_bench with one thread and with every core (one process each: BLIS fixes its
# thread count at its first call). Extra arguments go to Google Benchmark.
set -euo pipefail
bin=${KDESERVE_BUILD_DIR:-build}/bench/attention_bench
for t in 1 "$(nproc)"; do
  echo "== attention_bench --threads $t"
  "$bin" --threads "$t" "$@"
done
