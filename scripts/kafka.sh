#!/usr/bin/env bash
# Runs a throw-away Apache Kafka 4.x cluster (KRaft, combined broker+controller
# nodes) on loopback from the jars that scripts/setup.sh gathered into
# .cache/kafka/lib. Used by tests, benches and fault tests.
#
#   scripts/kafka.sh start [--nodes 1|3]   start, wait until it serves, print KMQ_BOOTSTRAP=...
#   scripts/kafka.sh stop                  kill every process it started, delete the data
#   scripts/kafka.sh status                one line per node; exit 0 all up, 1 degraded, 3 not running
#   scripts/kafka.sh env                   print KMQ_BOOTSTRAP=... of the running cluster
#   scripts/kafka.sh kill-node N           SIGKILL node N (1-based) - a crash, not a shutdown
#   scripts/kafka.sh start-node N          restart node N on its old data dir and ports, wait until it serves
#
# Environment:
#   KMQ_KAFKA_STATE  state dir (pids, ports, temp dir, bootstrap); default <repo>/.cache/kafka/state.
#                    Two clusters can run side by side with two state dirs.
#   KMQ_KAFKA_LIB    jar dir; default <repo>/.cache/kafka/lib
#   KMQ_KAFKA_HEAP   JVM heap flags per node; default "-Xms128m -Xmx384m" (2-core, shared machine)
#   KMQ_KAFKA_START_TIMEOUT  seconds start/start-node wait for the cluster; default 90
#
# State dir layout (other code may read it): bootstrap (the KMQ_BOOTSTRAP=... line,
# sourceable), bootstrap.servers (bare host:port list), nodes (count), tmpdir,
# node-N.pid, node-N.port (client port), node-N.cport (controller port),
# last-run-logs/node-N.log (copied at stop, for post-mortems).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=${KMQ_KAFKA_LIB:-$REPO/.cache/kafka/lib}
STATE=${KMQ_KAFKA_STATE:-$REPO/.cache/kafka/state}
HEAP=${KMQ_KAFKA_HEAP:-"-Xms128m -Xmx384m"}
START_TIMEOUT=${KMQ_KAFKA_START_TIMEOUT:-90}
# The readiness probe is compiled once into the cache (javac ~2 s) rather than run
# through the source launcher on every start.
PROBE_DIR=$REPO/.cache/kafka/probe
# Serialises port picking across concurrent starts (also with other state dirs):
# held from picking the ports until the nodes have bound them.
PORT_LOCK=${TMPDIR:-/tmp}/kmq-kafka-ports.lock
HOST=127.0.0.1

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_lib() {
  compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null ||
    die "no Kafka jars in $LIB: run scripts/setup.sh first"
  command -v java >/dev/null || die "java not found: run scripts/setup.sh first"
}

# --- state helpers -------------------------------------------------------------

st() { cat "$STATE/$1" 2>/dev/null || true; }

nodes_count() { st nodes; }

# pid of node N if that process is alive AND is still our broker (its command line
# names our temp dir), so a recycled pid is never signalled.
node_pid() {
  local n=$1 pid tmp
  pid=$(st "node-$n.pid")
  tmp=$(st tmpdir)
  [[ -n $pid && -n $tmp && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$tmp/node-$n/" || return 1
  printf '%s\n' "$pid"
}

alive_count() {
  local n c=0 total
  total=$(nodes_count)
  [[ -n $total ]] || { echo 0; return; }
  for ((n = 1; n <= total; n++)); do
    node_pid "$n" >/dev/null && c=$((c + 1))
  done
  echo "$c"
}

bootstrap_servers() {
  local n total list=""
  total=$(nodes_count)
  for ((n = 1; n <= total; n++)); do
    list+="${list:+,}$HOST:$(st "node-$n.port")"
  done
  printf '%s\n' "$list"
}

# --- ports ---------------------------------------------------------------------

# Ports bound or connected on this host, from /proc (works without ss/netstat;
# mawk has no strtonum, so the hex is converted by bash).
used_ports() {
  local f sl local_addr rest
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $f ]] || continue
    # local_address is "IP:PORT" in hex; the first line is a header.
    while read -r sl local_addr rest; do
      [[ $sl == sl ]] && continue
      echo $((16#${local_addr##*:}))
    done <"$f"
  done | sort -un
}

# Prints $1 distinct free ports. Picked at random below the kernel's ephemeral range
# (32768+) so outgoing client connections cannot grab them before the broker binds.
pick_ports() {
  local want=$1 used picked=" " p tries=0
  used=" $(used_ports | tr '\n' ' ') "
  while ((want > 0)); do
    ((++tries < 10000)) || die "no free port found"
    p=$((20000 + RANDOM % 12000))
    [[ $used == *" $p "* || $picked == *" $p "* ]] && continue
    picked+="$p "
    want=$((want - 1))
  done
  # shellcheck disable=SC2086 # word splitting wanted: one port per line
  printf '%s\n' $picked
}

port_listening() {
  local want f sl local_addr st rest
  want=$(printf '%04X' "$1")
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $f ]] || continue
    while read -r sl local_addr _ st rest; do
      # st 0A = LISTEN
      [[ ${local_addr##*:} == "$want" && $st == 0A ]] && return 0
    done <"$f"
  done
  return 1
}

# --- java helpers ----------------------------------------------------------------

# log4j2 configs: brokers log INFO to stdout (redirected into their log file); tools
# and the probe log WARN to stderr so command substitutions capture only their output.
write_log_configs() {
  local dir=$1
  cat >"$dir/log4j2-broker.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
# Per-request logging and the state-change chatter are noise for tests.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
EOF
  cat >"$dir/log4j2-tools.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = ERR
EOF
}

tool_java() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$(st tmpdir)/log4j2-tools.properties" \
    -cp "$LIB/*" "$@"
}

# Readiness probe: every address must answer an ApiVersions request itself (a broker
# only starts processing requests once it caught up with the metadata log and is
# unfenced), then the cluster must report the expected number of live brokers.
# One JVM that polls, instead of one TopicCommand JVM (~3 s) per attempt.
PROBE_SRC=$(cat <<'EOF'
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public final class KmqKafkaProbe {
  // ApiVersions v0 is never removed (clients need it to negotiate), so it works on any broker.
  static boolean apiVersions(String hostPort, int timeoutMs) {
    int i = hostPort.lastIndexOf(':');
    try (Socket s = new Socket()) {
      s.connect(new InetSocketAddress(hostPort.substring(0, i), Integer.parseInt(hostPort.substring(i + 1))), timeoutMs);
      s.setSoTimeout(timeoutMs);
      byte[] cid = "kmq-probe".getBytes(StandardCharsets.US_ASCII);
      DataOutputStream out = new DataOutputStream(s.getOutputStream());
      out.writeInt(2 + 2 + 4 + 2 + cid.length);
      out.writeShort(18); // ApiVersions
      out.writeShort(0);
      out.writeInt(4242); // correlation id
      out.writeShort(cid.length);
      out.write(cid);
      out.flush();
      DataInputStream in = new DataInputStream(s.getInputStream());
      int size = in.readInt();
      return size >= 6 && in.readInt() == 4242 && in.readShort() == 0;
    } catch (Exception e) {
      return false;
    }
  }

  public static void main(String[] a) throws Exception {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(a[0]));
    int expected = Integer.parseInt(a[1]);
    String[] addrs = a[2].split(",");
    String last = "no answer";
    Admin admin = null;
    try {
      while (System.nanoTime() < deadline) {
        boolean all = true;
        for (String hp : addrs) {
          if (!apiVersions(hp, 2000)) { all = false; last = hp + " does not answer ApiVersions"; break; }
        }
        if (all) {
          if (admin == null) {
            Properties p = new Properties();
            p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a[2]);
            p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
            p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
            p.put(AdminClientConfig.CLIENT_ID_CONFIG, "kmq-probe");
            admin = Admin.create(p);
          }
          try {
            int n = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
            if (n >= expected) { System.out.println("ready: " + n + " broker(s)"); return; }
            last = n + " of " + expected + " brokers alive";
          } catch (Exception e) {
            last = "describeCluster: " + e;
          }
        }
        Thread.sleep(250);
      }
    } finally {
      if (admin != null) admin.close(java.time.Duration.ofSeconds(2));
    }
    System.err.println("not ready: " + last);
    System.exit(1);
  }
}
EOF
)

build_probe() {
  local sum tmp
  sum=$(printf '%s' "$PROBE_SRC" | sha256sum | cut -c1-16)
  [[ -f $PROBE_DIR/$sum/KmqKafkaProbe.class ]] && { printf '%s\n' "$PROBE_DIR/$sum"; return; }
  mkdir -p "$PROBE_DIR"
  tmp=$(mktemp -d "$PROBE_DIR/build.XXXXXX")
  printf '%s\n' "$PROBE_SRC" >"$tmp/KmqKafkaProbe.java"
  javac -nowarn -d "$tmp" -cp "$LIB/*" "$tmp/KmqKafkaProbe.java" >&2 || { rm -rf "$tmp"; die "probe does not compile"; }
  rm -f "$tmp/KmqKafkaProbe.java"
  # rename is atomic; a concurrent builder that won the race leaves an equal result.
  mv -T "$tmp" "$PROBE_DIR/$sum" 2>/dev/null || rm -rf "$tmp"
  printf '%s\n' "$PROBE_DIR/$sum"
}

# --- node lifecycle ----------------------------------------------------------------

write_node_config() {
  local n=$1 total=$2 voters=$3 tmp rf isr
  tmp=$(st tmpdir)
  if ((total >= 3)); then rf=3 isr=2; else rf=1 isr=1; fi
  mkdir -p "$tmp/node-$n/data" "$tmp/node-$n/logs"
  cat >"$tmp/node-$n/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$(st "node-$n.port"),CONTROLLER://$HOST:$(st "node-$n.cport")
advertised.listeners=PLAINTEXT://$HOST:$(st "node-$n.port")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$tmp/node-$n/data
# Auto-create stays on for convenience; tests create their topics explicitly.
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# Fewer internal partitions than the default 50: creating them is the slow part of
# the first group/transaction on a 2-core machine, and tests gain nothing from 50.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
# Fast tests: no initial rebalance delay, and allow short consumer session timeouts.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# Fault tests: a SIGKILLed node is fenced (leaders move) after 6 s instead of 9 s.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
EOF
}

format_node() {
  local n=$1 tmp
  tmp=$(st tmpdir)
  # Static controller.quorum.voters: no --standalone/--initial-controllers needed.
  tool_java kafka.tools.StorageTool format -t "$(st cluster-id)" \
    -c "$tmp/node-$n/server.properties" >"$tmp/node-$n/logs/format.log" 2>&1
}

launch_node() {
  local n=$1 tmp
  tmp=$(st tmpdir)
  # setsid: the broker must not die with the caller's terminal/process group (Ctrl-C in
  # ctest), and stop signals it by pid. All fds are redirected (and the port lock fd 9
  # closed) so a caller like "$(kafka.sh start)" is not held open by the broker.
  # shellcheck disable=SC2086,SC2016 # HEAP is a list of JVM flags; $$ is the inner shell's
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$STATE/node-$n.pid" \
    java $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$tmp/log4j2-broker.properties" \
    "-Dkafka.logs.dir=$tmp/node-$n/logs" \
    -cp "$LIB/*" kafka.Kafka "$tmp/node-$n/server.properties" \
    </dev/null >>"$tmp/node-$n/logs/server.log" 2>&1 9>&- &
  # Wait for the pid file (written before exec) so status/stop can see the node.
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $STATE/node-$n.pid ]] && return 0
    sleep 0.05
  done
  die "node $n did not start"
}

print_log_tails() {
  local n total tmp
  total=$(nodes_count)
  tmp=$(st tmpdir)
  for ((n = 1; n <= ${total:-0}; n++)); do
    for f in "$tmp/node-$n/logs/format.log" "$tmp/node-$n/logs/server.log"; do
      [[ -s $f ]] || continue
      log "---- tail of $f"
      tail -n 40 "$f" >&2
    done
  done
}

# Runs the probe in the background and fails fast if a node process dies meanwhile.
wait_ready() {
  local expected=$1 probe_cp probe_pid n total deadline
  total=$(nodes_count)
  probe_cp=$(build_probe)
  tool_java -cp "$probe_cp:$LIB/*" KmqKafkaProbe "$START_TIMEOUT" "$expected" \
    "$(bootstrap_servers)" >/dev/null 9>&- &
  probe_pid=$!
  deadline=$((SECONDS + START_TIMEOUT + 15))
  while kill -0 "$probe_pid" 2>/dev/null; do
    for ((n = 1; n <= total; n++)); do
      [[ -f $STATE/node-$n.down ]] && continue
      if ! node_pid "$n" >/dev/null; then
        kill "$probe_pid" 2>/dev/null || true
        wait "$probe_pid" 2>/dev/null || true
        log "node $n exited during start-up"
        return 1
      fi
    done
    if ((SECONDS > deadline)); then
      kill "$probe_pid" 2>/dev/null || true
    fi
    sleep 0.3
  done
  wait "$probe_pid"
}

# True while pid runs; a zombie (exited, not yet reaped by whatever adopted it)
# counts as gone.
proc_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Signals the given nodes ($1 = TERM or KILL) and waits until they are gone; after
# TERM, KILLs what is left after a bounded wait.
kill_nodes() {
  local sig=$1 n pid pids=() i left total majority
  shift
  for n in "$@"; do
    pid=$(node_pid "$n") && pids+=("$pid")
  done
  ((${#pids[@]})) || return 0
  total=$(nodes_count)
  majority=$((total / 2 + 1))
  kill "-$sig" "${pids[@]}" 2>/dev/null || true
  # Controlled shutdown of a node takes ~1-3 s, but needs the controller quorum: once
  # fewer than a majority of the cluster's nodes are left, the survivors would hang
  # (until the 20 s bound below), so they are KILLed at once - the data is thrown
  # away anyway.
  for ((i = 0; i < 200; i++)); do
    left=()
    for pid in "${pids[@]}"; do proc_alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    if ((total > 1 && $(alive_count) < majority)); then
      break
    fi
    sleep 0.1
  done
  if ((i == 200)); then
    log "nodes still alive after 20 s: SIGKILL ${left[*]}"
  fi
  kill -KILL "${left[@]}" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    left=()
    for pid in "${pids[@]}"; do proc_alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  die "could not kill pids ${left[*]}"
}

# --- commands ----------------------------------------------------------------------

cmd_stop() {
  local total tmp n
  total=$(nodes_count)
  tmp=$(st tmpdir)
  if [[ -n $total ]]; then
    local all
    mapfile -t all < <(seq 1 "$total")
    kill_nodes TERM "${all[@]}"
  fi
  if [[ -n $tmp && -d $tmp ]]; then
    rm -rf "$STATE/last-run-logs"
    mkdir -p "$STATE/last-run-logs"
    for ((n = 1; n <= ${total:-0}; n++)); do
      cp "$tmp/node-$n/logs/server.log" "$STATE/last-run-logs/node-$n.log" 2>/dev/null || true
    done
    # Only ever delete a dir this script made (mktemp template kmq-kafka.*).
    [[ $(basename "$tmp") == kmq-kafka.* ]] && rm -rf "$tmp"
  fi
  rm -f "$STATE"/node-*.pid "$STATE"/node-*.port "$STATE"/node-*.cport "$STATE"/node-*.down \
    "$STATE/nodes" "$STATE/tmpdir" "$STATE/cluster-id" "$STATE/bootstrap" "$STATE/bootstrap.servers"
  [[ -n $total ]] && log "stopped ($total node(s))"
  return 0
}

cmd_start() {
  local nodes=1
  while (($#)); do
    case $1 in
      --nodes) nodes=${2:-}; shift 2 || usage ;;
      --nodes=*) nodes=${1#*=}; shift ;;
      *) usage ;;
    esac
  done
  [[ $nodes == 1 || $nodes == 3 ]] || die "--nodes must be 1 or 3"
  need_lib
  mkdir -p "$STATE"

  if [[ -n $(nodes_count) ]]; then
    if [[ $(alive_count) == "$(nodes_count)" && $(nodes_count) == "$nodes" && -s $STATE/bootstrap ]]; then
      log "already running ($nodes node(s))"
      cat "$STATE/bootstrap"
      return 0
    fi
    [[ $(alive_count) -gt 0 && $(nodes_count) != "$nodes" ]] &&
      die "a $(nodes_count)-node cluster is running for $STATE: stop it first"
    log "cleaning up a stale or partial cluster"
    cmd_stop
  fi

  local t0=$SECONDS tmp n ports voters="" cid
  exec 9>"$PORT_LOCK"
  flock -w 120 9 || die "could not lock $PORT_LOCK"

  tmp=$(mktemp -d "${TMPDIR:-/tmp}/kmq-kafka.XXXXXXXX")
  # Recorded first, so that stop can clean up whatever a failed start leaves.
  printf '%s\n' "$tmp" >"$STATE/tmpdir"
  printf '%s\n' "$nodes" >"$STATE/nodes"
  # On any failure from here on: show the logs, then leave nothing running.
  trap 'rc=$?; if ((rc)); then print_log_tails; cmd_stop; fi' EXIT
  # Bash skips the EXIT trap when a signal kills it (ctest timeout, Ctrl-C): turn
  # those into an exit so the half-started nodes are cleaned up too.
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  write_log_configs "$tmp"

  mapfile -t ports < <(pick_ports $((2 * nodes)))
  for ((n = 1; n <= nodes; n++)); do
    printf '%s\n' "${ports[2 * n - 2]}" >"$STATE/node-$n.port"
    printf '%s\n' "${ports[2 * n - 1]}" >"$STATE/node-$n.cport"
    voters+="${voters:+,}$n@$HOST:${ports[2 * n - 1]}"
  done

  # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding;
  # generated here to spare a JVM (StorageTool random-uuid). Kafka never issues ids
  # starting with '-' (they look like options), so neither do we.
  cid=-
  while [[ $cid == -* ]]; do
    cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  printf '%s\n' "$cid" >"$STATE/cluster-id"

  for ((n = 1; n <= nodes; n++)); do write_node_config "$n" "$nodes" "$voters"; done
  # Formatting is one JVM per node; run them side by side.
  local fpids=()
  for ((n = 1; n <= nodes; n++)); do format_node "$n" 9>&- & fpids+=($!); done
  for n in "${!fpids[@]}"; do
    wait "${fpids[$n]}" || { log "formatting node $((n + 1)) failed"; exit 1; }
  done

  for ((n = 1; n <= nodes; n++)); do launch_node "$n"; done

  # Keep the port lock until every node has bound its ports, then let others pick.
  local i all
  for ((i = 0; i < 600; i++)); do
    all=1
    for ((n = 1; n <= nodes; n++)); do
      node_pid "$n" >/dev/null || { log "node $n exited during start-up"; exit 1; }
      port_listening "$(st "node-$n.port")" && port_listening "$(st "node-$n.cport")" || all=0
    done
    ((all)) && break
    sleep 0.1
  done
  exec 9>&-

  wait_ready "$nodes" || { log "cluster not ready within ${START_TIMEOUT}s"; exit 1; }
  trap - EXIT INT TERM HUP

  local line
  line="KMQ_BOOTSTRAP=$(bootstrap_servers)"
  bootstrap_servers >"$STATE/bootstrap.servers"
  printf '%s\n' "$line" >"$STATE/bootstrap"
  log "ready: $nodes node(s) in $((SECONDS - t0)) s, data in $tmp"
  printf '%s\n' "$line"
}

cmd_status() {
  local total n pid up=0
  total=$(nodes_count)
  if [[ -z $total ]]; then
    echo "not running (state $STATE)"
    return 3
  fi
  for ((n = 1; n <= total; n++)); do
    if pid=$(node_pid "$n"); then
      up=$((up + 1))
      echo "node $n: up   pid $pid port $(st "node-$n.port") controller $(st "node-$n.cport")"
    else
      echo "node $n: down port $(st "node-$n.port") controller $(st "node-$n.cport")"
    fi
  done
  echo "data: $(st tmpdir)"
  [[ -s $STATE/bootstrap ]] && cat "$STATE/bootstrap"
  if ((up == total)); then return 0; elif ((up > 0)); then return 1; else return 3; fi
}

cmd_env() {
  [[ -s $STATE/bootstrap && $(alive_count) -gt 0 ]] || die "no cluster running for $STATE"
  cat "$STATE/bootstrap"
}

node_arg() {
  local n=${1:-} total
  total=$(nodes_count)
  [[ -n $total ]] || die "no cluster running for $STATE"
  if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > total)); then
    die "node must be 1..$total"
  fi
  printf '%s\n' "$n"
}

cmd_kill_node() {
  local n pid
  n=$(node_arg "${1:-}")
  pid=$(node_pid "$n") || die "node $n is not running"
  # Marked first: a concurrent wait_ready must not treat this as a start-up failure.
  : >"$STATE/node-$n.down"
  kill_nodes KILL "$n"
  log "node $n (pid $pid) killed"
}

cmd_start_node() {
  local n
  n=$(node_arg "${1:-}")
  need_lib
  node_pid "$n" >/dev/null && die "node $n is already running"
  rm -f "$STATE/node-$n.down" "$STATE/node-$n.pid"
  local t0=$SECONDS
  launch_node "$n"
  # Waits until every live node serves and all of them are registered again; a node
  # that is still killed counts as absent.
  local expected=0 m
  for ((m = 1; m <= $(nodes_count); m++)); do
    [[ -f $STATE/node-$m.down ]] || expected=$((expected + 1))
  done
  if ! wait_ready_nodes "$expected"; then
    print_log_tails
    die "node $n not ready within ${START_TIMEOUT}s"
  fi
  log "node $n back in $((SECONDS - t0)) s"
}

# Like wait_ready, but probes only the nodes that are meant to be up.
wait_ready_nodes() {
  local expected=$1 m list="" probe_cp
  for ((m = 1; m <= $(nodes_count); m++)); do
    [[ -f $STATE/node-$m.down ]] || list+="${list:+,}$HOST:$(st "node-$m.port")"
  done
  probe_cp=$(build_probe)
  tool_java -cp "$probe_cp:$LIB/*" KmqKafkaProbe "$START_TIMEOUT" "$expected" "$list" >/dev/null
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    *) usage ;;
  esac
}

main "$@"
