#!/usr/bin/env bash
# The main job (README): installs what it needs, builds the service and its CLI, and runs
# kdeserve-server on the embedded default configuration (deploy/config/server.yaml: T2T-ViT_t-24
# and BigGAN-deep-128 with seeded random weights; gRPC on :8500, metrics on :8502). Extra
# arguments go to the server (see `build/server/kdeserve-server --help`), e.g.
# `--config FILE` or `--model-weights t2t_vit_t_24=weights/t2t_vit_t_24.safetensors`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh --torch cpu  # the CPU build needs only torch, cudart and CUPTI
bash scripts/build.sh kdeserve-server kdeserve-cli
build_dir=${KDESERVE_BUILD_DIR:-build}
exec "$build_dir/server/kdeserve-server" "$@"
