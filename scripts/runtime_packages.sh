#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that hold the shared libraries the given binaries link
# directly (readelf NEEDED, resolved by ldd, then dpkg -S), one per line, sorted: the runtime
# image installs these, and apt brings their own dependencies.
#   runtime_packages.sh [--vendored DIR]... BINARY...
# Libraries under a --vendored DIR (e.g. a LibTorch unpacked into /opt/libtorch) are skipped:
# the image copies that folder itself. Exits 1 when a library is missing or owned by no package.
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
for bin in "${binaries[@]}"; do
  [[ -x "$bin" ]] || { echo "runtime_packages: $bin is not an executable" >&2; exit 2; }
  needed=" $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ') "
  while read -r line; do
    if [[ "$line" == *"not found"* ]]; then
      echo "runtime_packages: $bin: ${line%% *} not found" >&2
      status=1
      continue
    fi
    [[ "$line" == *"=> /"* ]] || continue
    [[ "$needed" == *" ${line%% *} "* ]] || continue
    lib=${line#*=> }
    lib=${lib%% (*}
    real=$(readlink -f "$lib")
    skip=0
    for v in "${vendored[@]}"; do [[ "$real" == "$v"/* ]] && skip=1; done
    ((skip)) && continue
    # Alternatives (libblas.so.3) resolve to the selected implementation's package.
    if pkg=$(owner "$real") || pkg=$(owner "$lib"); then
      packages[$pkg]=1
    else
      echo "runtime_packages: $bin: $lib ($real) belongs to no package" >&2
      status=1
    fi
  done < <(ldd "$bin")
done
printf '%s\n' "${!packages[@]}" | sort
exit "$status"
