#!/usr/bin/env bash
# Runs a throw-away MariaDB server on loopback for the fallback store's tests
# (no system service: a private instance with its own data dir, as in
# /work/shared/notes/mariadb-and-promtool.md).
#
#   scripts/mariadb.sh start   start on a free port, create database "kmq", print export lines:
#                              eval "$(bash scripts/mariadb.sh start)"
#   scripts/mariadb.sh stop    stop the server this state dir started (by its pid), delete the data
#   scripts/mariadb.sh down    stop the server but keep its data, port and password (a store outage)
#   scripts/mariadb.sh up      start it again after down: same port, same data, same URL
#   scripts/mariadb.sh env     print the export lines of the running server
#
# Environment:
#   KMQ_MARIADB_STATE  state dir (pid, port, temp dir, env); default <repo>/.cache/mariadb/state.
#                      Two servers can run side by side with two state dirs.
#
# Printed variables: KMQ_MARIADB_URL (mysql://root:<pw>@127.0.0.1:<port>/kmq, the value for
# kmq.fallback.url), KMQ_MARIADB_SOCKET, KMQ_MARIADB_PORT.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${KMQ_MARIADB_STATE:-$REPO/.cache/mariadb/state}
PORT_LOCK=${TMPDIR:-/tmp}/kmq-kafka-ports.lock # shared with kafka.sh: one port picker at a time
HOST=127.0.0.1

log() { printf 'mariadb.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
st() { cat "$STATE/$1" 2>/dev/null || true; }

# pid of the server if alive and still ours (its command line names our temp dir).
server_pid() {
  local pid tmp
  pid=$(st pid)
  tmp=$(st tmpdir)
  [[ -n $pid && -n $tmp && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$tmp/" || return 1
  printf '%s\n' "$pid"
}

pick_port() {
  local used p tries=0
  used=" $(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://' | tr '\n' ' ') "
  while :; do
    ((++tries < 10000)) || die "no free port found"
    p=$((20000 + RANDOM % 12000))
    [[ $used == *" $p "* ]] || break
  done
  echo "$p"
}

# Stops the server (TERM, then KILL after 20 s); its files stay.
kill_server() {
  local pid i
  if pid=$(server_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
      [[ -r /proc/$pid/stat ]] || break
      sleep 0.1
    done
    if [[ -r /proc/$pid/stat ]]; then
      kill -KILL "$pid" 2>/dev/null || true
      # Gone before anyone starts on its port or data again.
      for ((i = 0; i < 100; i++)); do
        [[ -r /proc/$pid/stat ]] || break
        sleep 0.1
      done
    fi
    log "stopped (pid $pid)"
  fi
}

# Starts mariadbd on the data in $1 and port $2; waits until it answers
# (root's password $3 once set, none on a fresh data dir). Returns 1 (the
# server stopped, its files kept) when it does not come up.
launch_server() {
  local tmp=$1 port=$2 i
  # The password goes through the environment, not the command line (ps).
  local pw_env=${3:-}
  # innodb_flush_log_at_trx_commit=1 (the default, spelled out): a commit is on disk when it returns.
  mariadbd --no-defaults --datadir="$tmp/data" --socket="$tmp/sock" --port="$port" \
    --bind-address=$HOST --user="$(id -un)" --skip-log-bin --pid-file="$tmp/pid" \
    --innodb-flush-log-at-trx-commit=1 --innodb-buffer-pool-size=32M \
    --log-error="$tmp/error.log" </dev/null >/dev/null 2>&1 9>&- &
  echo $! >"$STATE/pid"
  echo "$port" >"$STATE/port"
  for ((i = 0; i < 300; i++)); do
    [[ -S $tmp/sock ]] && MYSQL_PWD=$pw_env mariadb --no-defaults -S "$tmp/sock" -uroot -e "select 1" </dev/null >/dev/null 2>&1 && break
    server_pid >/dev/null || { cat "$tmp/error.log" >&2; log "mariadbd exited"; return 1; }
    sleep 0.1
  done
  ((i < 300)) || { cat "$tmp/error.log" >&2; kill_server; log "mariadbd did not start within 30 s"; return 1; }
}

cmd_stop() {
  local tmp
  tmp=$(st tmpdir)
  kill_server
  # Only ever delete a dir this script made (mktemp template kmq-mariadb.*).
  [[ -n $tmp && -d $tmp && $(basename "$tmp") == kmq-mariadb.* ]] && rm -rf "$tmp"
  rm -f "$STATE/pid" "$STATE/port" "$STATE/tmpdir" "$STATE/env" "$STATE/pw"
  return 0
}

cmd_down() {
  server_pid >/dev/null || die "not running"
  kill_server
}

cmd_up() {
  local tmp port
  tmp=$(st tmpdir)
  port=$(st port)
  [[ -n $tmp && -d $tmp/data && -n $port && -s $STATE/env ]] || die "nothing to bring up: run start first"
  if server_pid >/dev/null; then
    log "already up"
  else
    command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
    # The port was free when `down` released it; another script's port
    # picker (same lock) must not hand it out meanwhile.
    exec 9>"$PORT_LOCK"
    flock 9
    ! ss -Htln "sport = :$port" 2>/dev/null | grep -q . || die "port $port was taken while the server was down"
    launch_server "$tmp" "$port" "$(st pw)" || die "mariadbd did not come up again (data kept in $tmp)"
    exec 9>&-
    log "up again on $HOST:$port (pid $(st pid))"
  fi
  cat "$STATE/env"
}

cmd_start() {
  mkdir -p "$STATE"
  if server_pid >/dev/null && [[ -s $STATE/env ]]; then
    log "already running"
    cat "$STATE/env"
    return 0
  fi
  cmd_stop
  command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
  command -v mariadbd >/dev/null || die "mariadbd not found (package mariadb-server)"
  local tmp port pw i
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/kmq-mariadb.XXXXXX")
  echo "$tmp" >"$STATE/tmpdir"
  mariadb-install-db --no-defaults --datadir="$tmp/data" --auth-root-authentication-method=normal \
    --skip-test-db --user="$(id -un)" >"$tmp/install.log" 2>&1 || {
    cat "$tmp/install.log" >&2
    die "mariadb-install-db failed"
  }
  exec 9>"$PORT_LOCK"
  flock 9
  port=$(pick_port)
  launch_server "$tmp" "$port" || { cmd_stop; die "could not start mariadbd"; }
  exec 9>&-
  pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mariadb --no-defaults -S "$tmp/sock" -uroot -e \
    "create database kmq; create user if not exists 'root'@'127.0.0.1';
     alter user 'root'@'127.0.0.1' identified by '$pw'; grant all on *.* to 'root'@'127.0.0.1';
     alter user 'root'@'localhost' identified by '$pw';" || {
    cmd_stop
    die "cannot create the database"
  }
  echo "$pw" >"$STATE/pw"
  {
    echo "export KMQ_MARIADB_URL=mysql://root:$pw@$HOST:$port/kmq"
    echo "export KMQ_MARIADB_SOCKET=$tmp/sock"
    echo "export KMQ_MARIADB_PORT=$port"
  } >"$STATE/env"
  log "started on $HOST:$port (pid $(st pid))"
  cat "$STATE/env"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  down) cmd_down ;;
  up) cmd_up ;;
  env) server_pid >/dev/null && [[ -s $STATE/env ]] && cat "$STATE/env" || die "not running" ;;
  *) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
