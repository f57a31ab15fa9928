#!/usr/bin/env bash
# The prepared check for a GPU machine (nvcc, CMake, ninja and a pip PyTorch 2.11; no gRPC,
# spdlog or prometheus-cpp, maybe no GoogleTest, Google Benchmark or OpenCV): builds attention/
# and models/ with their tests and benchmarks against that PyTorch with -DKDESERVE_WITH_CUDA=ON,
# runs the CUDA tests (which must run, not skip, when a GPU is visible), the CPU unit tests, and
# attention_bench on CUDA (exact: chunked and SDPA vs KDEformer at the paper's shapes and n up to
# 65536), and writes the results. Every step has a time limit; the whole run stays under 8 minutes.
#
#   bash scripts/gpu_check.sh [--out DIR]     results in DIR (default out/gpu_check; $OUT if set):
#                                             gpu_check.md (summary), attention_bench_cuda.csv,
#                                             attention_bench_cuda.txt, ctest.txt, build.txt
#   bash scripts/gpu_check.sh --prepare       here, on a machine the installer has set up: copies
#                                             Debian's GoogleTest/GoogleMock/Google Benchmark
#                                             headers, libraries and CMake packages into
#                                             .gpu-deps/, which the GPU run uses when the machine
#                                             has none of its own (carry .gpu-deps with the tree)
#
# Environment: KDESERVE_GPU_PYTHON (default python3: the one with torch), KDESERVE_GPU_BUILD_DIR
# (default build-gpu), KDESERVE_GPU_JOBS (default nproc), KDESERVE_GPU_MAX_N (default 65536).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps=$root/.gpu-deps

prepare() {
  local arch
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  rm -rf "$deps"
  mkdir -p "$deps/include" "$deps/lib/$arch/cmake"
  for pkg in libgtest-dev libgmock-dev libbenchmark-dev; do
    dpkg-query -W "$pkg" >/dev/null 2>&1 || { echo "gpu_check --prepare: $pkg is not installed (bash scripts/install_deps.sh)" >&2; exit 1; }
  done
  cp -r /usr/include/gtest /usr/include/gmock /usr/include/benchmark "$deps/include/"
  cp -a /usr/lib/"$arch"/libgtest*.a /usr/lib/"$arch"/libgmock*.a /usr/lib/"$arch"/libbenchmark* "$deps/lib/$arch/"
  cp -r /usr/lib/"$arch"/cmake/GTest /usr/lib/"$arch"/cmake/benchmark "$deps/lib/$arch/cmake/"
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.gpu-deps/' "$exclude" 2>/dev/null || echo '/.gpu-deps/' >>"$exclude"
  echo "gpu_check --prepare: $(du -sh "$deps" | cut -f1) in .gpu-deps (GoogleTest $(dpkg-query -W -f='${Version}' libgtest-dev), Google Benchmark $(dpkg-query -W -f='${Version}' libbenchmark-dev))"
}

out=${OUT:-out/gpu_check}
while (($#)); do
  case "$1" in
    --prepare) prepare; exit 0 ;;
    --out) out=${2:?--out needs a DIR}; shift ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary=$out/gpu_check.md
python=${KDESERVE_GPU_PYTHON:-python3}
build=${KDESERVE_GPU_BUILD_DIR:-build-gpu}
jobs=${KDESERVE_GPU_JOBS:-$(nproc)}
max_n=${KDESERVE_GPU_MAX_N:-65536}
start=$(date +%s)
status=0

note() { echo "$*" | tee -a "$summary"; }
elapsed() { echo $(($(date +%s) - start)); }
# step NAME LIMIT_S LOG CMD...: runs CMD under a time limit, logs it, records its status and time.
step() {
  local name=$1 limit=$2 log=$3 t0 rc
  shift 3
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  note "- $name: exit $rc in $(($(date +%s) - t0)) s (limit $limit s)$( ((rc == 124)) && echo ', TIMED OUT')"
  ((rc == 0)) || status=1
  return "$rc"
}

: >"$summary"
note "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
note ""
note "## Machine"
note '```'
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"; } | tee -a "$summary"
note "nvcc: $( (command -v nvcc || ls /usr/local/cuda/bin/nvcc) 2>/dev/null | head -1) $( (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | grep -o 'release [0-9.]*')"
torch_info=$("$python" -W ignore -c 'import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())' 2>"$out/torch_import.txt")
torch_dir=$(head -1 <<<"$torch_info")
note "torch: $(tail -1 <<<"$torch_info") ($torch_dir)"
note "cmake: $(cmake --version | head -1), ninja $(ninja --version 2>/dev/null), $(c++ --version | head -1), $(nproc) cores"
note '```'
if [[ ! -d "$torch_dir/share/cmake/Torch" ]]; then
  note "gpu_check: $python has no torch with a CMake package: $torch_info $(cat "$out/torch_import.txt")"
  exit 1
fi

note ""
note "## Steps"
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DKDESERVE_WITH_CUDA=ON -DKDESERVE_BUILD_SERVER=OFF
            "-DKDESERVE_TORCH=$torch_dir")
[[ -d "$deps" ]] && cmake_args+=("-DCMAKE_PREFIX_PATH=$deps")
[[ -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null && cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
step "configure (CUDA build, KDESERVE_TORCH=$torch_dir)" 120 "$out/configure.txt" \
  cmake -S . -B "$build" "${cmake_args[@]}" || { tail -30 "$out/configure.txt"; exit 1; }
step "build attention/, models/, tests, benchmarks (-j$jobs)" 300 "$out/build.txt" \
  cmake --build "$build" -j "$jobs" || { grep -E "error|FAILED" "$out/build.txt" | head -30; exit 1; }

# The CUDA tests, verbosely: with a GPU visible none may skip.
gpus=$(tail -1 <<<"$torch_info" | awk '{print $NF}')
step "CUDA tests (attention_cuda_test, models_cuda_test)" 120 "$out/ctest_cuda.txt" \
  ctest --test-dir "$build" -R 'OnCuda' --output-on-failure -V
skipped=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Skipped' "$out/ctest_cuda.txt" || true)
ran=$(grep -cE 'Test +#[0-9]+: .*OnCuda.* Passed' "$out/ctest_cuda.txt" || true)
note "  CUDA tests passed: $ran, skipped: $skipped ($gpus GPU(s) visible)"
if ((gpus > 0 && skipped > 0)); then
  note "  FAIL: CUDA tests skipped although a GPU is visible:"
  grep -h -A1 'Skipped' "$out/ctest_cuda.txt" | grep 'needs a CUDA' | sort -u | head -3 | tee -a "$summary"
  status=1
fi
step "CPU unit tests of the CUDA build (ctest -L unit -E OnCuda, -j$jobs)" 180 "$out/ctest.txt" \
  ctest --test-dir "$build" -L unit -E 'OnCuda' -j "$jobs" --output-on-failure
grep -E 'tests passed|tests failed' "$out/ctest.txt" | tee -a "$summary"

if ((gpus > 0)); then
  step "attention_bench --device cuda --max-n $max_n" 180 "$out/attention_bench_cuda.txt" \
    "$build/bench/attention_bench" --device cuda --max-n "$max_n" --threads "$jobs" \
    --csv "$out/attention_bench_cuda.csv"
  note ""
  note "## attention_bench on CUDA (same run)"
  note '```'
  sed -n '/^Summary/,$p' "$out/attention_bench_cuda.txt" | tee -a "$summary"
  note '```'
else
  note "- attention_bench on CUDA: not run, no GPU visible"
  status=1
fi
note ""
note "total: $(elapsed) s, status $status"
exit "$status"
