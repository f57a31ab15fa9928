#!/usr/bin/env bash
# Installs what kdeserve needs: Debian packages through apt, and the PyPI packages (LibTorch 2.11
# from the torch wheel, the deployment checks' tools) from the hash-pinned requirements/*.txt into
# the project virtual environment (never into system Python). Idempotent: packages already
# present are skipped, apt-get runs only when something is missing, and pip only when a
# requirements file changed. For Debian's LibTorch it selects BLIS as the BLAS, never OpenBLAS:
# its static TLS plus glog's exhausts civetweb's worker stacks, so prometheus-cpp's Exposer
# fails (DEVELOPERS.md).
#
#   install_deps.sh                  everything: build, tests, benchmarks, deployment checks
#   install_deps.sh --build          only what compiling the server and CLI needs (image build)
#   install_deps.sh --torch venv|system|none
#                                    where LibTorch comes from: venv (default) the PyPI wheel in
#                                    the venv (requirements/torch.txt); system Debian's
#                                    libtorch-dev 1.13 with BLIS; none nothing (brought by the
#                                    caller). --external-torch is --torch none.
#   install_deps.sh --runtime FILE   the packages listed in FILE, one per line (the runtime
#                                    image; FILE comes from scripts/runtime_packages.sh)
#   install_deps.sh --list [--build] [--torch T]
#                                    print the Debian package list and exit
#   install_deps.sh --list-requirements [--build] [--torch T]
#                                    print the requirements files installed into the venv
# Environment: KDESERVE_VENV, the virtual environment (default: .venv in the checkout), made
# with Debian's /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$0")/.."

build_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libopencv-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev prometheus-cpp-dev libyaml-cpp-dev nlohmann-json3-dev
)
system_torch_packages=(libtorch-dev libblis4-openmp liblapack3)
venv_packages=(python3 python3-venv)
check_packages=(
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3 python3-numpy python3-matplotlib python3-torch python3-grpcio python3-yaml
  prometheus yamllint debootstrap
)

profile=all torch=venv list=0 list_requirements=0 runtime_file=""
while (($#)); do
  case "$1" in
    --build) profile=build ;;
    --torch)
      torch=${2:?--torch needs venv, system or none}; shift
      [[ "$torch" =~ ^(venv|system|none)$ ]] || { echo "install_deps: --torch $torch: want venv, system or none" >&2; exit 2; }
      ;;
    --external-torch) torch=none ;;
    --list-requirements) list_requirements=1 ;;
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
    # The full profile builds against both LibTorches (CI builds every supported one).
    if [[ "$torch" == system || "$profile" == all ]]; then packages+=("${system_torch_packages[@]}"); fi
    if [[ "$torch" == venv || "$profile" == all ]]; then packages+=("${venv_packages[@]}"); fi
    if [[ "$profile" == all ]]; then packages+=("${check_packages[@]}"); fi
    ;;
esac

# Requirements files for the venv, installed in this order (checks.txt is compiled under
# torch.txt's pins).
requirements=()
if [[ "$profile" != runtime ]]; then
  if [[ "$torch" == venv ]]; then requirements+=(requirements/torch.txt); fi
  if [[ "$profile" == all ]]; then requirements+=(requirements/checks.txt); fi
fi

if ((list)); then
  printf '%s\n' "${packages[@]}"
  exit 0
fi
if ((list_requirements)); then
  ((${#requirements[@]} == 0)) || printf '%s\n' "${requirements[@]}"
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

# BLAS for Debian's LibTorch: BLIS (~20x the reference BLAS here); LAPACK: the reference one
# (openblas's drags it back). Nothing to select where neither is installed.
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

# PyPI packages into the project venv, hash-checked, reinstalled when a requirements file changes.
if ((${#requirements[@]})); then
  venv=${KDESERVE_VENV:-.venv}
  stamp=$venv/.kdeserve-requirements.sha256
  want=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] && [[ -x "$venv/bin/python" ]]; then
    echo "install_deps: venv $venv up to date (${requirements[*]})"
  else
    [[ -x "$venv/bin/python" ]] || /usr/bin/python3 -m venv "$venv"
    for r in "${requirements[@]}"; do
      echo "install_deps: pip install -r $r into $venv"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --no-deps --only-binary=:all: -r "$r"
    done
    "$venv/bin/python" -m pip check
    echo "$want" >"$stamp"
  fi
fi
