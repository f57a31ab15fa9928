#!/usr/bin/env bash
# Installs every Debian package kdeserve's build, tests and benchmarks need, and selects BLIS as
# the BLAS behind libtorch. Idempotent: packages already present are skipped, and apt-get runs
# only when something is missing. Never installs OpenBLAS: its static TLS plus glog's exhausts
# civetweb's worker stacks, so prometheus-cpp's Exposer fails to start (DEVELOPERS.md).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libblis4-openmp liblapack3
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libopencv-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev prometheus-cpp-dev libyaml-cpp-dev nlohmann-json3-dev
  python3-grpcio prometheus
  python3 python3-numpy python3-matplotlib python3-torch
)

if [[ "${1:-}" == "--list" ]]; then
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
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
select_alternative() {
  local name=$1 path=$2
  if [[ -e "$path" ]] && [[ "$(readlink -f "/etc/alternatives/$name" 2>/dev/null)" != "$(readlink -f "$path")" ]]; then
    $SUDO update-alternatives --set "$name" "$path"
  fi
}
select_alternative "libblas.so.3-$arch" "/usr/lib/$arch/blis-openmp/libblas.so.3"
select_alternative "liblapack.so.3-$arch" "/usr/lib/$arch/lapack/liblapack.so.3"
echo "install_deps: BLAS -> $(readlink -f /usr/lib/$arch/libblas.so.3)"
echo "install_deps: LAPACK -> $(readlink -f /usr/lib/$arch/liblapack.so.3)"
