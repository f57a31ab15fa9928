#!/usr/bin/env bash
# Whole-model latency, ours against PyTorch 2.x on the upstream Python models, with the same
# threads: build/bench/model_bench (both attention modes, each layer group's attention time and
# peak memory), then bench/model_reference_bench.py in the project venv, which runs the upstream
# models eager and under torch.compile and the KDEformer authors' models, interleaved call by call
# with our model_bench --serve, and prints best PyTorch ÷ ours per row (skipped, saying so,
# without the venv or the fetched mirrors).
#   bash bench/run_model_bench.sh [--threads N] [--rounds R]     (default: every core, 5 rounds)
# Output in out/model_bench/ (KDESERVE_BENCH_OUT to change).
set -euo pipefail
bin=${KDESERVE_BUILD_DIR:-build}/bench/model_bench
out=${KDESERVE_BENCH_OUT:-out/model_bench}
threads=$(nproc) rounds=5
while (($#)); do
  case "$1" in
    --threads) threads=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: run_model_bench.sh [--threads N] [--rounds R]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
echo "== model_bench --threads $threads"
"$bin" --threads "$threads" | tee "$out/ours.txt"
if [ -x .venv/bin/python ]; then
  echo "== interleaved with the upstream models in PyTorch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  .venv/bin/python bench/model_reference_bench.py --threads "$threads" --ours "$bin" \
    --rounds "$rounds" --csv "$out/interleaved.csv" | tee "$out/interleaved.txt"
else
  echo "run_model_bench: no .venv (bash scripts/install_deps.sh); PyTorch's models skipped"
fi
