#!/usr/bin/env bash
# kmqctl without a broker: --help and --version of every subcommand, precise
# messages and exit 2 for bad arguments, exit 3 within a bounded time for an
# unreachable broker, and the --endpoint parser against a fixture (file://).
# Usage: test_kmqctl_cli.sh <kmqctl binary> <fixture dir>
set -u
K=$1
FIX=$2
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect <exit> <pattern in output, or ""> <command args...>
expect() {
  local want=$1 pat=$2
  shift 2
  local out rc
  out=$("$K" "$@" </dev/null 2>&1)
  rc=$?
  echo "$ kmqctl $* -> $rc"
  [[ $rc == "$want" ]] || fail "kmqctl $*: exit $rc, want $want; output: $out"
  if [[ -n $pat ]] && ! grep -qF -- "$pat" <<<"$out"; then
    fail "kmqctl $*: output lacks \"$pat\": $out"
  fi
}

expect 0 "kmqctl 0." --version
expect 0 "Commands" --help
expect 2 "Commands" # no command
expect 2 'unknown command "frobnicate"' frobnicate
for c in "topics bootstrap" health stuck skip "dlq inspect" replay; do
  # shellcheck disable=SC2086
  expect 0 "Exit:" $c --help
  # shellcheck disable=SC2086
  expect 0 "KMQ_BOOTSTRAP" $c --help
done
expect 0 "usage: kmqctl topics bootstrap" topics --help
expect 2 'expected "topics bootstrap"' topics create
expect 2 'expected "dlq inspect"' dlq list

# Bad arguments: the option and the value named, exit 2, before any network.
export KMQ_BOOTSTRAP=127.0.0.1:1
expect 2 '--partition: "abc" is not an integer' skip --group g --topic t --partition abc --offset 1
expect 2 '--offset: -5 is out of range' skip --group g --topic t --partition 0 --offset -5
expect 2 '--offset: "12x" is not an integer' skip --group g --topic t --partition 0 --offset 12x
expect 2 'are all required' skip --group g --topic t
expect 2 '--max-lag: "lots" is not an integer' health --topic t --max-lag lots
expect 2 '--timeout: 0 is out of range' --timeout 0 health --topic t
expect 2 '--since: "yesterday" is not a UTC time' replay --topic t --since yesterday
expect 2 '--until must be after --since' replay --topic t --since 2026-01-02 --until 2026-01-01
expect 2 '--batch: 0 is out of range' replay --topic t --batch 0
expect 2 '--max: "x" is not an integer' dlq inspect --topic t --max x
expect 2 "-X nokey: expected KEY=VALUE" -X nokey health --topic t
expect 2 "No such configuration property" -X no.such.prop=1 health --topic t
expect 2 "no topic" health
expect 2 "unexpected argument" health --topic t extra
expect 2 "No such profile" topics bootstrap --profile staging --topic t
expect 2 "/nonexistent.yaml: No such file" -F /nonexistent.yaml health --topic t
# A secret never appears in an error.
expect 2 'for configuration property "security.protocol"' -X sasl.password=hunter2 -X security.protocol=nonsense health --topic t
out=$("$K" -X sasl.password=hunter2 -X security.protocol=nonsense health --topic t 2>&1)
grep -q hunter2 <<<"$out" && fail "a secret was printed: $out"

# An unreachable broker: exit 3, within the --timeout bound (plus start-up),
# for every subcommand that talks to Kafka.
for args in "topics bootstrap --topic t" "health --topic t" \
  "stuck --group g --topic t" \
  "skip --group g --topic t --partition 0 --offset 0 --yes" \
  "dlq inspect --topic t.dlq" "replay --topic t"; do
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  expect 3 "" -b 127.0.0.1:1 --timeout 1500 $args
  ms=$((($(date +%s%N) - t0) / 1000000))
  ((ms < 8000)) || fail "$args took $ms ms against an unreachable broker"
done

# The runtime's /stuck endpoint: the fixture through file:// with
# --runtime-only (no broker asked); a missing or malformed answer is exit 3.
expect 2 "--runtime-only needs --endpoint" stuck --runtime-only
exit_fix() {
  local dir=$1 want=$2 pat=$3 out rc
  out=$("$K" stuck --runtime-only --endpoint "file://$dir" 2>&1)
  rc=$?
  echo "$ kmqctl stuck --endpoint file://$dir -> $rc"
  [[ $rc == "$want" ]] || fail "endpoint $dir: exit $rc, want $want: $out"
  grep -qF -- "$pat" <<<"$out" || fail "endpoint $dir: lacks \"$pat\": $out"
  echo "$out"
}
exit_fix "$FIX" 1 "runtime: 2 blocked partitions"
exit_fix "$FIX" 1 "wecom-kf                         3         10         10 u1                        12.5        3 running"
exit_fix "$FIX" 1 "u7                       42"
exit_fix "$FIX/.." 3 "Couldn't read a file"
exit_fix "$FIX/../badfixture" 3 'expected {"partitions":[...]'

if ((fails)); then
  echo "$fails failure(s)"
  exit 1
fi
echo "all passed"
