#!/usr/bin/env bash
# The README's first command: sets the machine up, builds kmq, starts a local
# real Kafka broker, runs the demo application, prints its summary, stops the
# broker. The demo (tools/kmq_demo.c) first runs the WeCom path end to end
# (simulated WeCom with signed callbacks over loopback HTTP -> the gateway's
# callback endpoint and puller -> Kafka -> a kmq runtime replying with
# kf/send_msg -> every reply checked in order), then bulk traffic with bad
# records (dead letters by reason, per-user order, committed offsets).
# Extra arguments go to kmq-demo (e.g. --users 2000 --wecom-customers 100).
#   bash scripts/demo.sh --help    prints kmq-demo's options (no broker started)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build kmq-demo >/dev/null
# Help and bad arguments are answered before any broker starts, on the
# terminal (not in build/demo.log).
for a in "$@"; do
  case $a in -h | --help) exec ./build/tools/kmq-demo --help ;; esac
done
./build/tools/kmq-demo --check-args "$@" || exit 2
export KMQ_KAFKA_STATE=$REPO/build/kafka-demo-state
trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT INT TERM
bash scripts/kafka.sh stop >/dev/null 2>&1 || true
eval "$(bash scripts/kafka.sh start)"
export KMQ_BOOTSTRAP
# librdkafka's and kmq's own log lines go to demo.log; the summary to stdout.
./build/tools/kmq-demo "$@" 2>build/demo.log
