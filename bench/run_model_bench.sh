#!/usr/bin/env bash
# Whole-model latency, ours against PyTorch 2.x on the upstream Python models, in one run with
# the same threads: build/bench/model_bench (both attention modes), then the upstream models
# eager and under torch.compile in the project venv (bench/model_reference_bench.py, read from
# fetched mirrors; skipped, saying so, without them), then model_bench again, so that a drift of
# the shared machine shows as a difference between the two model_bench runs.
#   bash bench/run_model_bench.sh [--threads N]     (default: every core)
# Output in out/model_bench/ (KDESERVE_BENCH_OUT to change).
set -euo pipefail
bin=${KDESERVE_BUILD_DIR:-build}/bench/model_bench
out=${KDESERVE_BENCH_OUT:-out/model_bench}
threads=$(nproc)
if [ "${1:-}" = "--threads" ]; then threads=$2; fi
mkdir -p "$out"
echo "== model_bench --threads $threads (first)"
"$bin" --threads "$threads" | tee "$out/ours_first.txt"
if [ -x .venv/bin/python ]; then
  echo "== upstream models in PyTorch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  .venv/bin/python bench/model_reference_bench.py --threads "$threads" \
    --csv "$out/upstream.csv" | tee "$out/upstream.txt"
fi
echo "== model_bench --threads $threads (second)"
"$bin" --threads "$threads" | tee "$out/ours_second.txt"
