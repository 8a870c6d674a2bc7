#!/usr/bin/env bash
# Runs the kmq benchmarks end to end:
#   1. builds kmq-bench (RelWithDebInfo, in $KMQ_BENCH_BUILD, default build-bench/);
#   2. starts a throw-away single-node Kafka broker (scripts/kafka.sh, state in
#      $KMQ_KAFKA_STATE, default /tmp/kmq-bench-kafka) and stops it on exit,
#      whatever happens;
#   3. runs each mode with --reps N (default 5); kmq-bench itself takes the
#      median of every number over the repetitions and writes
#      bench/out/<mode>-<stamp>.{json,png};
#   4. writes bench/out/summary-<stamp>.md (machine, load, exact commands,
#      every table) and copies it to bench/out/latest.md, the source of
#      bench/RESULTS.md.
#
#   bash bench/run.sh [--reps N] [MODE...]     MODE: produce consume e2e sched decode
#   KMQ_BENCH_ARGS="--no-java" bash bench/run.sh consume   (extra kmq-bench options)
#
# Exit status: 0 when every mode ran and every run was valid (nothing lost or
# out of order), whatever the speed; 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
REPS=5
MODES=()
while (($#)); do
  case $1 in
  --reps) REPS=$2; shift 2 ;;
  produce | consume | e2e | sched | decode) MODES+=("$1"); shift ;;
  *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
((${#MODES[@]})) || MODES=(produce consume e2e sched decode)
read -r -a EXTRA <<<"${KMQ_BENCH_ARGS:-}"

BUILD=${KMQ_BENCH_BUILD:-$REPO/build-bench}
echo "run: building kmq-bench in $BUILD"
cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$BUILD" kmq-bench >/dev/null
BIN=$BUILD/bench/kmq-bench

export KMQ_KAFKA_STATE=${KMQ_KAFKA_STATE:-/tmp/kmq-bench-kafka}
need_broker=0
for m in "${MODES[@]}"; do [[ $m == sched || $m == decode ]] || need_broker=1; done
if ((need_broker)); then
  [[ -d .cache/kafka/lib ]] || bash scripts/setup.sh
  cleanup() { bash scripts/kafka.sh stop >/dev/null 2>&1 || true; }
  trap cleanup EXIT INT TERM
  bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  eval "$(bash scripts/kafka.sh start)"
  export KMQ_BOOTSTRAP
  echo "run: broker at $KMQ_BOOTSTRAP"
fi

OUT=$REPO/bench/out
mkdir -p "$OUT"
stamp=$(date +%Y%m%d-%H%M%S)
summary=$OUT/summary-$stamp.md
{
  echo "# kmq-bench summary $stamp"
  echo
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(free -m | awk '/^Mem:/ {print $2}') MiB memory, Linux $(uname -r)"
  echo "- librdkafka $(pkg-config --modversion rdkafka), Kafka broker: single KRaft node from .cache/kafka/lib ($(ls .cache/kafka/lib | grep -m1 -o 'kafka_2.13-[0-9.]*' || echo '?'))"
  echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (working tree has changes)')"
  echo "- command: bash bench/run.sh --reps $REPS ${MODES[*]}${KMQ_BENCH_ARGS:+ (KMQ_BENCH_ARGS=$KMQ_BENCH_ARGS)}"
} >"$summary"

status=0
for mode in "${MODES[@]}"; do
  cmd=("$BIN" "$mode" --reps "$REPS" "${EXTRA[@]}")
  echo "run: ${cmd[*]}"
  {
    echo
    echo "---"
    echo
    echo "\$ kmq-bench $mode --reps $REPS ${EXTRA[*]}"
    echo
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >>"$summary"
  txt=$OUT/$mode-$stamp.txt
  rc=0
  "${cmd[@]}" >"$txt" 2>"$OUT/$mode-$stamp.log" || rc=$?
  cat "$txt" >>"$summary"
  cat "$txt"
  if ((rc)); then
    echo "run: $mode exited with status $rc (stderr in $OUT/$mode-$stamp.log)" | tee -a "$summary"
    status=1
  fi
done
cp "$summary" "$OUT/latest.md"
echo "run: summary in $summary (and bench/out/latest.md)"
exit $status
