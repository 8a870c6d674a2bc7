#!/usr/bin/env bash
# Idempotent machine set-up for kmq, run as root on Debian 12 (developers and CI):
#   1. apt packages (only the missing ones, so a second run takes ~1 s);
#   2. the Apache Kafka broker + tools jars from Maven Central -> .cache/kafka/lib
#      (scripts/kafka-deps/pom.xml; used by scripts/kafka.sh);
#   3. the Java reference tools (tools/java) -> .cache/java/kmq-java-tools.jar + lib/.
# Steps 2 and 3 are redone only when their pom/sources change (a stamp file records
# the hash of what was built), so a re-run needs no network.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$REPO/.cache
KAFKA_LIB=$CACHE/kafka/lib
JAVA_TOOLS=$CACHE/java

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  librdkafka-dev libjansson-dev libck-dev check libssl-dev
  clang libclang-rt-14-dev
  gnuplot-nox libsqlite3-dev
  maven openjdk-17-jdk-headless
  # Operations and WeCom side: HTTP server (metrics, callbacks, simulator), HTTP
  # client (WeCom API), config file, XML (WeCom callbacks), fallback store
  # (MariaDB server for its tests + client library), promtool for alert rules.
  libmicrohttpd-dev libcurl4-openssl-dev libyaml-dev libexpat1-dev
  mariadb-server libmariadb-dev prometheus
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Quiet, non-interactive Maven. Debian's Maven 3.8 prints stray colour resets (ESC[0m)
# even with -B -q; they are filtered so CI logs stay clean (errors still show).
mvn_q() {
  mvn -B -q "$@" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
}

installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "apt packages: all ${#PACKAGES[@]} present"
    return
  fi
  ((EUID == 0)) || die "missing packages (${missing[*]}) and not root: run as root"
  say "apt packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet; an old list may name versions
  # that are gone from the mirror. Either way one update and a retry fixes it.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt-get update -q
  fi
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    say "apt-get install failed; updating package lists and retrying"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# Hash of the inputs of a build step; kept in <out>/.stamp.
inputs_hash() {
  sha256sum "$@" | sha256sum | cut -c1-32
}

fetch_kafka_jars() {
  local pom=$REPO/scripts/kafka-deps/pom.xml stamp tmp version n
  stamp=$(inputs_hash "$pom")
  if [[ -f $KAFKA_LIB/.stamp && $(cat "$KAFKA_LIB/.stamp") == "$stamp" ]]; then
    say "kafka jars: present in $KAFKA_LIB"
    return
  fi
  say "kafka jars: fetching from Maven Central into $KAFKA_LIB"
  mkdir -p "$CACHE/kafka"
  tmp=$(mktemp -d "$CACHE/kafka/lib.new.XXXXXX")
  # Gathered into a temp dir and swapped in, so an interrupted run never leaves a
  # half-filled lib/ that looks complete.
  if ! mvn_q -f "$pom" dependency:copy-dependencies \
    "-DoutputDirectory=$tmp" -DincludeScope=runtime; then
    rm -rf "$tmp"
    die "mvn could not fetch the Kafka jars"
  fi
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
  [[ -f $tmp/kafka_2.13-$version.jar ]] || { rm -rf "$tmp"; die "kafka_2.13-$version.jar missing after mvn"; }
  # The broker logs through slf4j 1.x: exactly one API jar and one binding, or it
  # logs nothing (no binding) or warns and picks one at random (several).
  n=$(find "$tmp" -name 'slf4j-api-*.jar' | wc -l)
  ((n == 1)) || { rm -rf "$tmp"; die "expected one slf4j-api jar, found $n"; }
  n=$(find "$tmp" \( -name 'log4j-slf4j-impl-*.jar' -o -name 'log4j-slf4j2-impl-*.jar' \
    -o -name 'slf4j-reload4j-*.jar' -o -name 'slf4j-log4j12-*.jar' -o -name 'logback-classic-*.jar' \
    -o -name 'slf4j-simple-*.jar' -o -name 'slf4j-nop-*.jar' \) | wc -l)
  ((n == 1)) || { rm -rf "$tmp"; die "expected one slf4j binding, found $n"; }
  printf '%s\n' "$stamp" >"$tmp/.stamp"
  rm -rf "$KAFKA_LIB"
  mv "$tmp" "$KAFKA_LIB"
  say "kafka jars: $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars, Kafka $version"
}

build_java_tools() {
  local dir=$REPO/tools/java stamp tmp
  local inputs
  mapfile -t inputs < <(find "$dir/pom.xml" "$dir/src" -type f | sort)
  stamp=$(inputs_hash "${inputs[@]}")
  if [[ -f $JAVA_TOOLS/.stamp && $(cat "$JAVA_TOOLS/.stamp") == "$stamp" &&
    -f $JAVA_TOOLS/kmq-java-tools.jar ]]; then
    say "java tools: present in $JAVA_TOOLS"
    return
  fi
  say "java tools: building tools/java"
  mvn_q -f "$dir/pom.xml" package || die "mvn package of tools/java failed"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/java.new.XXXXXX")
  cp "$dir/target/kmq-java-tools.jar" "$tmp/"
  cp -r "$dir/target/lib" "$tmp/lib"
  printf '%s\n' "$stamp" >"$tmp/.stamp"
  rm -rf "$JAVA_TOOLS"
  mv "$tmp" "$JAVA_TOOLS"
  # Smoke test: the empty key into 1 partition is partition 0.
  [[ $(printf '1 \n' | java -jar "$JAVA_TOOLS/kmq-java-tools.jar") == 0 ]] ||
    die "kmq-java-tools.jar does not run"
  say "java tools: $JAVA_TOOLS/kmq-java-tools.jar"
}

install_packages
command -v java >/dev/null || die "java not on PATH after install"
command -v mvn >/dev/null || die "mvn not on PATH after install"
fetch_kafka_jars
build_java_tools
say "done"
