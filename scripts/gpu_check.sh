#!/usr/bin/env bash
# The prepared check for a GPU machine (nvcc, CMake, ninja and a pip PyTorch 2.11; no gRPC,
# spdlog or prometheus-cpp, maybe no GoogleTest, Google Benchmark or OpenCV): builds attention/
# and models/ with their tests and benchmarks against that PyTorch with -DKDESERVE_WITH_CUDA=ON
# (or takes the ones --prepare-prebuilt built here), runs the CUDA tests (which must run, not
# skip, when a GPU is visible), the CPU unit tests, and attention_bench on CUDA (exact: chunked,
# SDPA and SDPA on bfloat16 vs KDEformer, fused and ATen, at the paper's shapes and n = 4096 up
# to 131072; then the peers in a second run), and writes the results. Every step has its own
# time limit (configure 120 s, build 300 s, each test binary 120 s, the benchmarks 150 + 120 s,
# ncu 90 s); no whole run on a GPU has been timed yet.
#
#   bash scripts/gpu_check.sh [--out DIR]     results in DIR (default out/gpu_check; $OUT if set):
#                                             gpu_check.md (summary), attention_bench_cuda*.csv,
#                                             and the logs (*.txt; packed into logs.tgz in $OUT)
#   bash scripts/gpu_check.sh --prepare       here, on a machine the installer has set up: copies
#                                             Debian's GoogleTest/GoogleMock/Google Benchmark
#                                             headers, libraries and CMake packages into
#                                             .gpu-deps/, which the GPU run uses when the machine
#                                             has none of its own (carry .gpu-deps with the tree)
#   bash scripts/gpu_check.sh --prepare-prebuilt
#                                             here: builds the CUDA tests and attention_bench in
#                                             build-cuda/ against the venv's PyTorch (the same
#                                             2.11+cu130 wheel as the GPU machine's) and copies
#                                             them, with Google Benchmark's library, into
#                                             .gpu-prebuilt/ (carry it: a few MiB)
#   bash scripts/gpu_check.sh --prebuilt DIR  on the GPU machine: runs DIR's binaries against
#                                             that machine's PyTorch instead of building (saves
#                                             the build's minutes of device time)
#
# Environment: KDESERVE_GPU_PYTHON (default python3: the one with torch), KDESERVE_GPU_BUILD_DIR
# (default build-gpu), KDESERVE_GPU_JOBS (default nproc), KDESERVE_GPU_MAX_N (default 131072),
# KDESERVE_GPU_PEERS (the peers' bench run, default hyperattention,performer,reformer,
# scatterbrain,wildcat,thinformer; empty: none), KDESERVE_GPU_PROFILE=1 (per-kernel times of one
# KDEformer call at the largest n under ncu, when the machine has it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
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

# The binaries --prebuilt runs: the CUDA tests' executables and the benchmark.
prebuilt_tests=(kdeformer_fused_test attention_cuda_test attention_api_test)
prepare_prebuilt() {
  local dir=$root/.gpu-prebuilt build=${KDESERVE_CUDA_BUILD_DIR:-build-cuda} t lib
  KDESERVE_BUILD_DIR=$build KDESERVE_CMAKE_ARGS="-DKDESERVE_WITH_CUDA=ON ${KDESERVE_CMAKE_ARGS:-}" \
    bash scripts/build.sh "${prebuilt_tests[@]}" attention_bench || exit 1
  rm -rf "$dir"
  mkdir -p "$dir/lib"
  for t in "${prebuilt_tests[@]}"; do cp "$build/tests/attention/$t" "$dir/"; done
  cp "$build/bench/attention_bench" "$dir/"
  # Google Benchmark is Debian's shared library; everything else comes from the GPU machine's
  # PyTorch (libtorch*, libc10*) and its CUDA wheels (libcudart).
  lib=$(ldd "$dir/attention_bench" | awk '/libbenchmark/ {print $3}')
  [[ -n "$lib" ]] && cp -L "$lib" "$dir/lib/"
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.gpu-prebuilt/' "$exclude" 2>/dev/null || echo '/.gpu-prebuilt/' >>"$exclude"
  echo "gpu_check --prepare-prebuilt: $(du -sh "$dir" | cut -f1) in .gpu-prebuilt ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', uncommitted changes'))"
}

out=${OUT:-out/gpu_check}
prebuilt=
while (($#)); do
  case "$1" in
    --prepare) prepare; exit 0 ;;
    --prepare-prebuilt) prepare_prebuilt; exit 0 ;;
    --prebuilt) prebuilt=$(cd "${2:?--prebuilt needs a DIR}" && pwd); shift ;;
    --out) out=${2:?--out needs a DIR}; shift ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The device tool brings back at most 8 files from $OUT: there the logs are packed into one
# logs.tgz on the way out, beside gpu_check.md and the CSVs.
# shellcheck disable=SC2317  # called by the EXIT trap
pack_logs() {
  [[ -n "${OUT:-}" && "$out" == "$(cd "$OUT" 2>/dev/null && pwd)" ]] || return 0
  (cd "$out" && compgen -G '*.txt' >/dev/null && tar czf logs.tgz --remove-files ./*.txt)
}
trap pack_logs EXIT
summary=$out/gpu_check.md
python=${KDESERVE_GPU_PYTHON:-python3}
build=${KDESERVE_GPU_BUILD_DIR:-build-gpu}
jobs=${KDESERVE_GPU_JOBS:-$(nproc)}
max_n=${KDESERVE_GPU_MAX_N:-131072}
peers=${KDESERVE_GPU_PEERS-hyperattention,performer,reformer,scatterbrain,wildcat,thinformer}
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
gpus=$(tail -1 <<<"$torch_info" | awk '{print $NF}')
if [[ -n "$prebuilt" ]]; then
  # Binaries built elsewhere against the same PyTorch: its libraries and CUDA runtime here.
  export LD_LIBRARY_PATH="$prebuilt/lib:$torch_dir/lib:$torch_dir/../nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  bench=$prebuilt/attention_bench
  note "- prebuilt binaries from $prebuilt: $(cd "$prebuilt" && echo *)"
  missing=$(for t in "${prebuilt_tests[@]}" attention_bench; do ldd "$prebuilt/$t" | grep 'not found'; done | sort -u)
  [[ -z "$missing" ]] || { note "  FAIL: unresolved libraries: $missing"; exit 1; }
  # The CUDA tests, verbosely (with a GPU visible none may skip), then the CPU tests.
  : >"$out/ctest_cuda.txt"
  : >"$out/ctest.txt"
  for t in "${prebuilt_tests[@]}"; do
    step "CUDA tests of $t" 120 "$out/cuda_$t.txt" "$prebuilt/$t" --gtest_filter='*OnCuda*'
    cat "$out/cuda_$t.txt" >>"$out/ctest_cuda.txt"
    step "CPU tests of $t" 120 "$out/cpu_$t.txt" "$prebuilt/$t" --gtest_filter='-*OnCuda*'
    cat "$out/cpu_$t.txt" >>"$out/ctest.txt"
  done
  ran=$(grep -cE '^\[       OK \] .*OnCuda' "$out/ctest_cuda.txt" || true)
  skipped=$(grep -cE '^\[  SKIPPED \] .*OnCuda.*\(' "$out/ctest_cuda.txt" || true)
  failed=$(grep -E '^\[  FAILED  \] .*\(' "$out/ctest_cuda.txt" "$out/ctest.txt" | sort -u)
  note "  CUDA tests passed: $ran, skipped: $skipped ($gpus GPU(s) visible)"
  [[ -z "$failed" ]] || note "  FAILED: $failed"
  grep -E '^\[  FAILED  \]|Failure|Expected|Which is|actual|error' "$out/ctest_cuda.txt" | head -40 >>"$summary"
else
  cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DKDESERVE_WITH_CUDA=ON -DKDESERVE_BUILD_SERVER=OFF
              "-DKDESERVE_TORCH=$torch_dir")
  [[ -d "$deps" ]] && cmake_args+=("-DCMAKE_PREFIX_PATH=$deps")
  [[ -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null && cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  step "configure (CUDA build, KDESERVE_TORCH=$torch_dir)" 120 "$out/configure.txt" \
    cmake -S . -B "$build" "${cmake_args[@]}" || { tail -30 "$out/configure.txt"; exit 1; }
  step "build attention/, models/, tests, benchmarks (-j$jobs)" 300 "$out/build.txt" \
    cmake --build "$build" -j "$jobs" || { grep -E "error|FAILED" "$out/build.txt" | head -30; exit 1; }
  bench=$build/bench/attention_bench
  # The CUDA tests, verbosely: with a GPU visible none may skip.
  step "CUDA tests (ctest -R OnCuda)" 120 "$out/ctest_cuda.txt" \
    ctest --test-dir "$build" -R 'OnCuda' --output-on-failure -V
  skipped=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Skipped' "$out/ctest_cuda.txt" || true)
  ran=$(grep -cE 'Test +#[0-9]+: .*OnCuda.* Passed' "$out/ctest_cuda.txt" || true)
  note "  CUDA tests passed: $ran, skipped: $skipped ($gpus GPU(s) visible)"
  step "CPU unit tests of the CUDA build (ctest -L unit -E OnCuda, -j$jobs)" 180 "$out/ctest.txt" \
    ctest --test-dir "$build" -L unit -E 'OnCuda' -j "$jobs" --output-on-failure
  grep -E 'tests passed|tests failed' "$out/ctest.txt" | tee -a "$summary"
fi
if ((gpus > 0 && skipped > 0)); then
  note "  FAIL: CUDA tests skipped although a GPU is visible:"
  grep -h -A1 'Skipped\|SKIPPED' "$out/ctest_cuda.txt" | grep 'needs a CUDA' | sort -u | head -3 | tee -a "$summary"
  status=1
fi

if ((gpus > 0)); then
  # KDEformer (fused CUDA kernel and the ATen composition) against the exact backends and SDPA
  # on bfloat16; the peers in a run of their own, so a slow one cannot cost the first table.
  step "attention_bench --device cuda --max-n $max_n (exact, KDEformer)" 150 \
    "$out/attention_bench_cuda.txt" "$bench" --device cuda --max-n "$max_n" --threads "$jobs" \
    --methods kdeformer_fused,kdeformer_aten,kdeformer_ff_fused,kdeformer_ff_aten --min-time 0.2 \
    --csv "$out/attention_bench_cuda.csv"
  note ""
  note "## attention_bench on CUDA (same run)"
  note '```'
  sed -n '/^Summary/,$p' "$out/attention_bench_cuda.txt" | tee -a "$summary"
  note '```'
  if [[ -n "$peers" ]]; then
    step "attention_bench --device cuda (peers: $peers)" 120 "$out/attention_bench_cuda_peers.txt" \
      "$bench" --device cuda --max-n "$max_n" --threads "$jobs" --methods "kdeformer_fused,$peers" \
      --min-time 0.1 --csv "$out/attention_bench_cuda_peers.csv"
    note ""
    note "## attention_bench on CUDA, the peers (second run)"
    note '```'
    sed -n '/^Summary/,$p' "$out/attention_bench_cuda_peers.txt" | tee -a "$summary"
    note '```'
  fi
  if [[ "${KDESERVE_GPU_PROFILE:-0}" == 1 ]] && command -v ncu >/dev/null; then
    step "ncu: kernels of one fused KDEformer call at n = $max_n" 90 "$out/ncu_kdeformer.txt" \
      ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-count 400 \
      "$bench" --device cuda --max-n "$max_n" --shapes "n=$max_n" --methods kdeformer_fused \
      --benchmark_filter="n=$max_n/kdeformer_fused/" --min-time 0.001
  fi
else
  note "- attention_bench on CUDA: not run, no GPU visible"
  status=1
fi
note ""
note "total: $(elapsed) s, status $status"
exit "$status"
