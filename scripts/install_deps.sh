#!/usr/bin/env bash
# Installs what kdeserve needs: Debian packages through apt, and the PyPI packages (LibTorch 2.11
# from the torch wheel, the deployment checks' tools) from the hash-pinned requirements/*.txt into
# the project virtual environment (never into system Python). Idempotent: packages already
# present are skipped, apt-get runs only when something is missing, and pip only when what the
# venv should hold changed. Never installs OpenBLAS: its static TLS exhausts civetweb's worker
# stacks, so prometheus-cpp's Exposer fails (DEVELOPERS.md).
#
#   install_deps.sh                  everything: build, tests, benchmarks, deployment checks
#   install_deps.sh --build          only what compiling the server and CLI needs (image build)
#   install_deps.sh --torch full|cpu|none
#                                    the PyPI torch wheel in the venv: full (default) with every
#                                    CUDA library it depends on (requirements/torch.txt: CUDA
#                                    builds and GPUs, 4.6 GB); cpu only torch and the two CUDA
#                                    runtime wheels its CPU library links (cudart, CUPTI: CPU
#                                    builds and the CPU image, 1.3 GB); none nothing (brought by
#                                    the caller). --external-torch is --torch none.
#   install_deps.sh --cuda-toolkit   also CUDA's compiler and headers from PyPI
#                                    (requirements/cuda-toolkit.txt) for machines without
#                                    /usr/local/cuda (the CUDA image's build stage)
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
  build-essential cmake ninja-build ccache pkg-config git patchelf
  libopencv-dev libjpeg62-turbo-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev prometheus-cpp-dev libyaml-cpp-dev nlohmann-json3-dev
)
venv_packages=(python3 python3-venv)
# The wheels of requirements/torch.txt that --torch cpu installs.
cpu_torch_wheels=(torch nvidia-cuda-runtime nvidia-cuda-cupti)
check_packages=(
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3 python3-numpy python3-matplotlib python3-torch python3-grpcio python3-yaml
  prometheus yamllint debootstrap
  clang libclang-rt-14-dev llvm  # sanitizer and fuzz builds: ASan/UBSan/TSan/libFuzzer, llvm-symbolizer
)

profile=all torch=full cuda_toolkit=0 list=0 list_requirements=0 runtime_file=""
while (($#)); do
  case "$1" in
    --build) profile=build ;;
    --torch)
      torch=${2:?--torch needs full, cpu or none}; shift
      [[ "$torch" =~ ^(full|cpu|none)$ ]] || { echo "install_deps: --torch $torch: want full, cpu or none" >&2; exit 2; }
      ;;
    --cuda-toolkit) cuda_toolkit=1 ;;
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
    ;;
  *)
    packages=("${build_packages[@]}")
    if [[ "$torch" != none || "$profile" == all || "$cuda_toolkit" == 1 ]]; then
      packages+=("${venv_packages[@]}")
    fi
    if [[ "$profile" == all ]]; then packages+=("${check_packages[@]}"); fi
    ;;
esac

# Requirements files for the venv, installed in this order (checks.txt is compiled under
# torch.txt's pins).
requirements=()
if [[ "$profile" != runtime ]]; then
  case "$torch" in
    full) requirements+=(requirements/torch.txt) ;;
    cpu) requirements+=("requirements/torch.txt[${cpu_torch_wheels[*]}]") ;;
  esac
  if ((cuda_toolkit)); then requirements+=(requirements/cuda-toolkit.txt); fi
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
  echo "install_deps: WARNING: OpenBLAS is installed; its static TLS breaks the metrics server's threads" >&2
fi

# PyPI packages into the project venv, hash-checked, reinstalled when a requirements file changes.
# "FILE[a b]" names only the wheels a, b of FILE (hash-pinned blocks, installed without deps).
requirement_blocks() {
  local spec=$1 file=${1%%[*} names
  if [[ "$spec" == *"["*"]" ]]; then
    names=${spec#*[}
    names=${names%]}
    awk -v names=" $names " '
      /^[^ #]/ { split($1, a, "=="); keep = index(names, " " a[1] " ") > 0 }
      keep && !/^ *#/ { print }' "$file"
  else
    cat "$file"
  fi
}
if ((${#requirements[@]})); then
  venv=${KDESERVE_VENV:-.venv}
  stamp=$venv/.kdeserve-requirements.sha256
  want=$(for r in "${requirements[@]}"; do echo "$r"; requirement_blocks "$r"; done | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] && [[ -x "$venv/bin/python" ]]; then
    echo "install_deps: venv $venv up to date (${requirements[*]})"
  else
    [[ -x "$venv/bin/python" ]] || /usr/bin/python3 -m venv "$venv"
    for r in "${requirements[@]}"; do
      echo "install_deps: pip install -r $r into $venv"
      requirement_blocks "$r" >"$venv/.kdeserve-requirements.txt"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --no-deps --only-binary=:all: -r "$venv/.kdeserve-requirements.txt"
    done
    # A subset (--torch cpu) lacks torch's Python dependencies on purpose: only its libraries
    # are used.
    if [[ "$torch" != cpu ]]; then "$venv/bin/python" -m pip check; fi
    echo "$want" >"$stamp"
  fi
fi
