#!/usr/bin/env bash
# Installs the Debian packages (and, for the checks, the npm tools) kdeserve needs, and selects
# BLIS as the BLAS behind libtorch. Idempotent: packages already present are skipped, and
# apt-get runs only when something is missing. Never installs OpenBLAS: its static TLS plus
# glog's exhausts civetweb's worker stacks, so prometheus-cpp's Exposer fails (DEVELOPERS.md).
#
#   install_deps.sh                  everything: build, tests, benchmarks, deployment checks
#   install_deps.sh --build          only what compiling the server and CLI needs (image build)
#   install_deps.sh --build --external-torch
#                                    as --build, without Debian's LibTorch and BLAS (the CUDA
#                                    image brings a CUDA LibTorch of its own)
#   install_deps.sh --runtime FILE   the packages listed in FILE, one per line (the runtime
#                                    image; FILE comes from scripts/runtime_packages.sh)
#   install_deps.sh --list [--build] print the package list and exit
set -euo pipefail
cd "$(dirname "$0")/.."

build_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libopencv-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev prometheus-cpp-dev libyaml-cpp-dev nlohmann-json3-dev
)
torch_packages=(libtorch-dev libblis4-openmp liblapack3)
check_packages=(
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3 python3-numpy python3-matplotlib python3-torch python3-grpcio python3-yaml
  prometheus yamllint debootstrap
)

profile=all external_torch=0 list=0 runtime_file=""
while (($#)); do
  case "$1" in
    --build) profile=build ;;
    --external-torch) external_torch=1 ;;
    --runtime) profile=runtime; runtime_file=${2:?--runtime needs a FILE}; shift ;;
    --list) list=1 ;;
    *) echo "install_deps: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

packages=()
case "$profile" in
  runtime)
    mapfile -t packages < <(grep -v '^[[:space:]]*\(#\|$\)' "$runtime_file")
    # libtorch asks for "libblas3 | libblas.so.3": name BLIS so apt skips the reference BLAS.
    if printf '%s\n' "${packages[@]}" | grep -q '^libtorch'; then
      packages+=(libblis4-openmp liblapack3)
    fi
    ;;
  *)
    packages=("${build_packages[@]}")
    if ((!external_torch)); then packages+=("${torch_packages[@]}"); fi
    if [[ "$profile" == all ]]; then packages+=("${check_packages[@]}"); fi
    ;;
esac

if ((list)); then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# The deployment checks run npm tools; Debian's nodejs/npm only when the machine has none.
if [[ "$profile" == all ]] && ! command -v npm >/dev/null; then missing+=(nodejs npm); fi

if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all ${#packages[@]} packages present"
fi

if dpkg-query -W -f='${Status}' libopenblas0 2>/dev/null | grep -q "install ok installed" ||
   dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "install ok installed"; then
  echo "install_deps: WARNING: OpenBLAS is installed; kdeserve selects BLIS regardless" >&2
fi

# BLAS: BLIS (~20x the reference BLAS here); LAPACK: the reference one (openblas's drags it back).
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
select_alternative() {
  local name=$1 path=$2
  if [[ -e "$path" ]] && [[ "$(readlink -f "/etc/alternatives/$name" 2>/dev/null)" != "$(readlink -f "$path")" ]]; then
    $SUDO update-alternatives --set "$name" "$path"
  fi
}
select_alternative "libblas.so.3-$arch" "/usr/lib/$arch/blis-openmp/libblas.so.3"
select_alternative "liblapack.so.3-$arch" "/usr/lib/$arch/lapack/liblapack.so.3"
if [[ -e /usr/lib/$arch/libblas.so.3 ]]; then
  echo "install_deps: BLAS -> $(readlink -f "/usr/lib/$arch/libblas.so.3")"
  echo "install_deps: LAPACK -> $(readlink -f "/usr/lib/$arch/liblapack.so.3")"
fi

# npm tools of the deployment checks (tests/deploy/package-lock.json), reinstalled when the
# lock file changes.
if [[ "$profile" == all ]]; then
  lock=tests/deploy/package-lock.json stamp=tests/deploy/node_modules/.kdeserve-lock.sha256
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
    echo "install_deps: npm ci in tests/deploy"
    (cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  else
    echo "install_deps: npm tools of tests/deploy present"
  fi
fi
