#!/usr/bin/env bash
# Installs what it needs, builds, and runs the paper's GloVe
# attention-approximation experiment, writing CSV + PNG to out/glove. Extra arguments go to
# the experiment (see `build/bench/glove_experiment --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh --torch cpu  # a CPU build needs only torch, cudart and CUPTI
bash scripts/build.sh glove_experiment
build_dir=${KDESERVE_BUILD_DIR:-build}
"$build_dir/bench/glove_experiment" --out out/glove "$@"
