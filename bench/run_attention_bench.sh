#!/usr/bin/env bash
# Runs attention_bench with one thread and with every core (one process each: BLIS fixes its
# thread count at its first call), keeps each run's output and CSV in out/attention_bench/
# (KDESERVE_BENCH_OUT to change) and ends with both runs' summary tables together.
# Extra arguments go to attention_bench (e.g. --methods kdeformer,wildcat, --shapes biggan) and
# Google Benchmark. After each attention_bench run, with the same thread count, the authors'
# KDEformer runs in the project venv (bench/kdeformer_reference_bench.py: read from a fetched
# mirror of majid-daliri/kdeformer, KDESERVE_KDEFORMER_MIRROR; skipped, saying so, without one).
set -euo pipefail
bin=${KDESERVE_BUILD_DIR:-build}/bench/attention_bench
out=${KDESERVE_BENCH_OUT:-out/attention_bench}
mkdir -p "$out"
threads=(1)
[ "$(nproc)" -gt 1 ] && threads+=("$(nproc)")
for t in "${threads[@]}"; do
  echo "== attention_bench --threads $t"
  "$bin" --threads "$t" --csv "$out/t$t.csv" "$@" | tee "$out/t$t.txt"
  if [ -x .venv/bin/python ]; then
    echo "== the authors' KDEformer, --threads $t"
    .venv/bin/python bench/kdeformer_reference_bench.py --threads "$t" \
      --csv "$out/reference_t$t.csv" | tee "$out/reference_t$t.txt"
  fi
done
echo
for t in "${threads[@]}"; do
  sed -n '/^Summary/,$p' "$out/t$t.txt"
  [ -f "$out/reference_t$t.txt" ] && cat "$out/reference_t$t.txt"
  echo
done
echo "CSV: $out/t*.csv"
