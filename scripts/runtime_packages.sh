#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries the given binaries link directly
# (readelf NEEDED, resolved by ldd, then dpkg -S), one per line, sorted: the runtime image installs
# these, and apt brings their own dependencies.
#   runtime_packages.sh [--vendored DIR]... BINARY...
# BINARY: an executable or a shared library (name the libraries a vendored one only dlopens, such
# as cuDNN's sub-libraries: ldd cannot see those). Libraries under a --vendored DIR (the project
# venv's PyPI wheels: the images copy those files themselves) belong to no package; the packages of
# *their* NEEDED libraries outside the vendored dirs are listed instead (cuDNN needs zlib1g).
# Exits 1 when a library is missing or owned by no package.
set -euo pipefail

vendored=() binaries=()
while (($#)); do
  case "$1" in
    --vendored) vendored+=("$(readlink -f "${2:?--vendored needs a DIR}")"); shift ;;
    *) binaries+=("$1") ;;
  esac
  shift
done
((${#binaries[@]})) || { echo "usage: $0 [--vendored DIR]... BINARY..." >&2; exit 2; }

owner() {  # the package owning a file; tries the path as given and across the /usr merge
  local path=$1 candidates=("$1")
  case "$path" in
    /usr/lib/*) candidates+=("${path#/usr}") ;;
    /lib/*) candidates+=("/usr$path") ;;
  esac
  for c in "${candidates[@]}"; do
    if out=$(dpkg-query -S "$c" 2>/dev/null); then
      echo "${out%%:*}" | cut -d, -f1 | sed 's/:.*//'
      return 0
    fi
  done
  return 1
}

status=0
declare -A packages=()
is_vendored() {
  local v
  for v in "${vendored[@]}"; do [[ "$1" == "$v"/* ]] && return 0; done
  return 1
}
needed_of() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' '; }
for bin in "${binaries[@]}"; do
  [[ -f "$bin" ]] && readelf -h "$bin" >/dev/null 2>&1 ||
    { echo "runtime_packages: $bin is not an ELF file" >&2; exit 2; }
  # soname -> path as the loader resolves the binary's closure
  declare -A resolved=()
  while read -r line; do
    if [[ "$line" == *"not found"* ]]; then
      echo "runtime_packages: $bin: ${line%% *} not found" >&2
      status=1
      continue
    fi
    [[ "$line" == *"=> /"* ]] || continue
    lib=${line#*=> }
    resolved[${line%% *}]=${lib%% (*}
  done < <(ldd "$bin")
  # Wanted: the binary's NEEDED, and the NEEDED of each vendored library it loads.
  wanted=" $(needed_of "$bin") "
  for soname in "${!resolved[@]}"; do
    real=$(readlink -f "${resolved[$soname]}")
    if is_vendored "$real"; then wanted+=" $(needed_of "$real") "; fi
  done
  for soname in "${!resolved[@]}"; do
    [[ "$wanted" == *" $soname "* ]] || continue
    lib=${resolved[$soname]}
    real=$(readlink -f "$lib")
    is_vendored "$real" && continue
    # Alternatives (libblas.so.3) resolve to the selected implementation's package.
    if pkg=$(owner "$real") || pkg=$(owner "$lib"); then
      packages[$pkg]=1
    else
      echo "runtime_packages: $bin: $lib ($real) belongs to no package" >&2
      status=1
    fi
  done
  unset resolved
done
printf '%s\n' "${!packages[@]}" | sort
exit "$status"
