#!/usr/bin/env bash
# Runs one libFuzzer target for its budget: the ctest of every kdeserve_add_fuzzer target
# (cmake/KdeserveSanitize.cmake) and, through it, scripts/fuzz.sh.
#   run_fuzzer.sh FUZZER WORK_DIR MAX_LEN DICT|- FLAGS RUNS SECONDS [CORPUS_DIR...]
# Seeds: what FUZZER generates (KDESERVE_FUZZ_WRITE_SEEDS) plus the files of each CORPUS_DIR of
# at most MAX_LEN bytes. It fuzzes until RUNS executions or SECONDS seconds, whichever comes
# first (KDESERVE_FUZZ_RUNS / KDESERVE_FUZZ_SECONDS in the environment override both; per input
# KDESERVE_FUZZ_INPUT_TIMEOUT seconds, default 10), with FLAGS (a word list, may be empty) as
# more libFuzzer options. It keeps what it finds in WORK_DIR/corpus, writes a failing input to
# WORK_DIR/artifacts/ and one summary line to WORK_DIR/summary.txt.
# Exit status: libFuzzer's (0: nothing found).
set -uo pipefail
if (($# < 7)); then
  echo "usage: run_fuzzer.sh FUZZER WORK_DIR MAX_LEN DICT|- FLAGS RUNS SECONDS [CORPUS_DIR...]" >&2
  exit 2
fi
fuzzer=$1 work=$2 max_len=$3 dict=$4
read -r -a flags <<< "$5"
runs=${KDESERVE_FUZZ_RUNS:-$6}
seconds=${KDESERVE_FUZZ_SECONDS:-$7}
input_timeout=${KDESERVE_FUZZ_INPUT_TIMEOUT:-10}
shift 7
name=$(basename "$fuzzer")

rm -rf "$work/seeds" "$work/artifacts"
mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
if ! KDESERVE_FUZZ_WRITE_SEEDS="$work/seeds" "$fuzzer"; then
  echo "run_fuzzer: $name could not write its generated seeds" >&2
  exit 1
fi
for dir in "$@"; do
  if [[ ! -d $dir ]]; then
    echo "run_fuzzer: note: seed folder $dir not found (no ../shared?); fuzzing without it"
    continue
  fi
  tag=$(basename "$dir")
  copied=0
  while IFS= read -r -d '' file; do
    cp "$file" "$work/seeds/$tag-$(basename "$file" | tr -c 'A-Za-z0-9._-' '_')"
    copied=$((copied + 1))
  done < <(find "$dir" -type f -size -"$((max_len + 1))"c -print0)
  echo "run_fuzzer: $copied seed(s) of at most $max_len bytes from $dir"
done

args=(-runs="$runs" -max_total_time="$seconds" -max_len="$max_len" -timeout="$input_timeout"
      -print_final_stats=1 -print_funcs=0 -artifact_prefix="$work/artifacts/")
[[ $dict != - ]] && args+=(-dict="$dict")
args+=("${flags[@]}")
echo "run_fuzzer: $fuzzer ${args[*]} $work/corpus $work/seeds"
start=$SECONDS
"$fuzzer" "${args[@]}" "$work/corpus" "$work/seeds" 2>&1 | tee "$work/fuzz.log"
rc=${PIPESTATUS[0]}
elapsed=$((SECONDS - start))
executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -1)
result=$([[ $rc == 0 ]] && echo "nothing found" || echo "FAILED (exit status $rc)")
summary=$(printf '%s: %s executions in %s s (budget %s runs / %s s), corpus %s inputs: %s' \
  "$name" "${executions:-?}" "$elapsed" "$runs" "$seconds" \
  "$(find "$work/corpus" -type f | wc -l)" "$result")
echo "$summary" > "$work/summary.txt"
echo "run_fuzzer: $summary"
if [[ $rc != 0 ]]; then
  for artifact in "$work"/artifacts/*; do
    [[ -e $artifact ]] && echo "run_fuzzer: reproduce with: $fuzzer $artifact"
  done
fi
exit "$rc"
