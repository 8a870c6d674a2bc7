#!/usr/bin/env bash
# Runs every kmq test from a clean checkout (the README's test command; CI runs
# it through .ci/run):
#   1. scripts/setup.sh: packages, Kafka jars, Java reference tools;
#   2. builds: plain (-Werror), ASan+UBSan, TSan;
#   3. starts a real single-node Kafka broker (scripts/kafka.sh) on free
#      loopback ports and a private MariaDB server (scripts/mariadb.sh, for
#      the fallback store's tests: $KMQ_MARIADB_URL), and stops both on exit
#      whatever happens;
#   4. ctest: the whole suite on the plain build (unit, mock cluster, real
#      broker, Java partitioner, bench smoke runs, fault scenarios including
#      private 1- and 3-node clusters); the same on the ASan+UBSan build except
#      the private-cluster scenarios (broker kill/restart cycles are slow under
#      ASan and exercise no extra kmq code); the tests labelled "tsan" (gate,
#      scheduler, registry, histogram, metrics exposition, fallback store,
#      WeCom API client, and the librdkafka clients: consumer acks on the
#      mock cluster, runtime, metrics read while it runs, retries,
#      shutdown, endpoint and fatal errors on the broker) on the TSan build,
#      librdkafka's C11 threads made visible to TSan by tests/tsan_c11.c;
#   5. a short libFuzzer run of the gate and the envelope decoder.
# Options: --quick (plain build only, no sanitizer passes).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1

bash scripts/setup.sh

JOBS=$(nproc)
build() { # dir, cmake args...
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  ninja -C "$dir" -j "$JOBS" >/dev/null
}

echo "test: building (plain)"
build build
if ((!QUICK)); then
  echo "test: building (ASan+UBSan)"
  build build-asan -DKMQ_ASAN=ON
  echo "test: building (TSan)"
  build build-tsan -DKMQ_TSAN=ON
fi

export KMQ_KAFKA_STATE=$REPO/build/kafka-state
export KMQ_MARIADB_STATE=$REPO/build/mariadb-state
cleanup() {
  bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  bash scripts/mariadb.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
cleanup
eval "$(bash scripts/kafka.sh start)"
export KMQ_BOOTSTRAP
echo "test: broker at $KMQ_BOOTSTRAP"
eval "$(bash scripts/mariadb.sh start)" # exports KMQ_MARIADB_URL, ..._SOCKET, ..._PORT
echo "test: MariaDB on port $KMQ_MARIADB_PORT"

# librdkafka's own stderr logs stay in the ctest logs; failures print them.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$REPO/tests/lsan.supp:print_suppressions=0
# (The librdkafka-client tests add tests/tsan.supp and
# ignore_noninstrumented_modules=1: kmq_tsan_rdkafka in tests/CMakeLists.txt.)
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

status=0
run() { # title, build dir, ctest args...
  local title=$1 dir=$2
  shift 2
  echo "test: ctest ($title)"
  ctest --test-dir "$dir" --output-on-failure --timeout 900 "$@" || status=1
}
run plain build
if ((!QUICK)); then
  run "ASan+UBSan" build-asan -LE "cluster1|cluster3"
  run TSan build-tsan -L tsan
  echo "test: fuzzing (gate, envelope)"
  FUZZ_SECONDS=15 bash tests/faults/fuzz.sh || status=1
fi
exit $status
