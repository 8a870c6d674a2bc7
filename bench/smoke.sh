#!/usr/bin/env bash
# Smoke run of one kmq-bench mode (ctest, tests/bench.cmake): checks that the
# harness works - exit status 0 and a well-formed JSON file written - not the
# speed. Usage: smoke.sh KMQ_BENCH MODE [extra kmq-bench options]
# The broker comes from $KMQ_BOOTSTRAP (scripts/test.sh exports it).
set -euo pipefail
bin=$1
mode=$2
shift 2
if [[ $mode != sched && $mode != decode && -z ${KMQ_BOOTSTRAP:-} ]]; then
  echo "smoke: KMQ_BOOTSTRAP is not set (start a broker: scripts/kafka.sh start)" >&2
  exit 1
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/kmq-bench-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$bin" "$mode" --smoke --out "$out" "$@"
shopt -s nullglob
files=("$out/$mode"-*.json)
if ((${#files[@]} != 1)); then
  echo "smoke: expected one $mode-*.json in $out, found ${#files[@]}" >&2
  exit 1
fi
"$bin" check-json "${files[0]}"
echo "smoke: $mode ok (${files[0]##*/})"
