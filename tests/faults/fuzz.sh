#!/usr/bin/env bash
# Short libFuzzer runs of the commit gate (tests/fuzz/fuzz_gate.c, against a
# reference model), of its commit-metadata text (tests/fuzz/fuzz_gate_meta.c,
# against a reference decoder), of the envelope decoder
# (tests/fuzz/fuzz_envelope.c) and of the WeCom callback decoder
# (tests/fuzz/fuzz_wecom.c), for CI. Builds build-fuzz with clang
# (-DKMQ_FUZZ=ON), then runs each fuzzer for FUZZ_SECONDS (default 20) on a
# scratch copy of its corpus, so the checked-in corpus under tests/fuzz/corpus/
# only changes when someone adds to it on purpose. Exit status: 0 when no
# fuzzer found anything; otherwise the crashing input is kept in
# build-fuzz/fuzz-artifacts/ and printed.
#
#   bash tests/faults/fuzz.sh                 # all four, 20 s each
#   FUZZ_SECONDS=300 bash tests/faults/fuzz.sh gate
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
SECONDS_EACH=${FUZZ_SECONDS:-20}
BUILD=${FUZZ_BUILD_DIR:-$REPO/build-fuzz}
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(gate gate_meta envelope wecom)

command -v clang >/dev/null || { echo "fuzz.sh: clang not found" >&2; exit 1; }
CC=clang cmake -S . -B "$BUILD" -G Ninja -DKMQ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$BUILD" "${TARGETS[@]/#/fuzz_}" >/dev/null

ART=$BUILD/fuzz-artifacts
mkdir -p "$ART"
status=0
for t in "${TARGETS[@]}"; do
  bin=$BUILD/tests/fuzz_$t
  seeds=$REPO/tests/fuzz/corpus/$t
  rm -f "$ART/$t-"* # artifacts of an earlier run
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/kmq-fuzz-$t.XXXXXX")
  cp -r "$seeds"/. "$scratch"/
  echo "fuzz.sh: $t for ${SECONDS_EACH}s ($(ls "$seeds" | wc -l) seeds)"
  # -max_len covers the largest seed; leaks and UB abort (halt_on_error).
  if ! ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       "$bin" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
         -artifact_prefix="$ART/$t-" "$scratch" >"$ART/$t.log" 2>&1; then
    status=1
    echo "fuzz.sh: $t FAILED; last lines of $ART/$t.log:" >&2
    tail -n 30 "$ART/$t.log" >&2
    ls -1 "$ART/$t-"* 2>/dev/null >&2 || true
  else
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$ART/$t.log" |
      sed "s/^/fuzz.sh: $t: /"
  fi
  rm -rf "$scratch"
done
exit $status
