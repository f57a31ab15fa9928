#!/usr/bin/env bash
# Regenerates the hash-pinned requirement files from the .in files (Python 3.11, glibc x86_64,
# as on the project's machines). Needs uv (`pip install uv` in any scratch venv).
#   bash requirements/compile.sh
# checks.txt is compiled under torch.txt's pins, so both install into one venv without conflict.
set -euo pipefail
cd "$(dirname "$0")"
common=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36 --quiet)
uv pip compile "${common[@]}" torch.in -o torch.txt
uv pip compile "${common[@]}" --constraint torch.txt checks.in -o checks.txt
uv pip compile "${common[@]}" --constraint torch.txt cuda-toolkit.in -o cuda-toolkit.txt
