/*
 * The Java reference rows: Kafka's own ProducerPerformance and
 * ConsumerPerformance (kafka-tools jar from scripts/setup.sh) against the
 * same broker, their summary lines parsed from stdout. Their stderr (JVM and
 * client logs) goes to <out>/java-<topic>.log.
 *
 * Differences from the C rows, stated in the output: ProducerPerformance
 * sends keyless records (sticky partitioner) with random-letter values, and
 * batch.size is set to 1000 records' worth of bytes to match librdkafka's
 * batch.num.messages=1000; the JVM's start-up and JIT warm-up are inside its
 * numbers. ConsumerPerformance commits with the Java defaults (auto commit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* Runs cmd, returns the last stdout line that contains `needle` in line. */
static int bench__java_run(const char *cmd, const char *needle, char *line,
                           size_t size) {
  FILE *f = popen(cmd, "r");
  if (!f) {
    bench_log("java: cannot run: %s", cmd);
    return -1;
  }
  char buf[1024];
  int found = 0;
  while (fgets(buf, sizeof(buf), f))
    if (strstr(buf, needle)) {
      snprintf(line, size, "%s", buf);
      found = 1;
    }
  int st = pclose(f);
  if (st != 0 || !found) {
    bench_log("java: exit status %d%s: %s", st, found ? "" : ", no summary",
              cmd);
    return -1;
  }
  return 0;
}

int bench_java_produce(const bench_opts_t *o, const char *topic,
                       bench_run_t *run) {
  char cmd[2048], line[1024];
  long batch = 1000L * o->size;
  if (batch > 1000000)
    batch = 1000000; /* librdkafka's batch.size default */
  snprintf(cmd, sizeof(cmd),
           "java -Xmx512m -cp '%s/*' org.apache.kafka.tools.ProducerPerformance"
           " --topic %s --num-records %lld --record-size %d --throughput -1"
           " --producer-props bootstrap.servers=%s acks=all"
           " compression.type=lz4 linger.ms=10 enable.idempotence=true"
           " batch.size=%ld 2>>'%s/java-%s.log'",
           o->java_lib, topic, (long long)o->messages, o->size, o->bootstrap,
           batch, o->out_dir, topic);
  int64_t t0 = bench_now_us();
  if (bench__java_run(cmd, "99.9th", line, sizeof(line)))
    return -1;
  long long n;
  double rps, mbs, avg, mx, p50, p95, p99, p999;
  if (sscanf(line,
             "%lld records sent, %lf records/sec (%lf MB/sec), %lf ms avg "
             "latency, %lf ms max latency, %lf ms 50th, %lf ms 95th, %lf ms "
             "99th, %lf ms 99.9th",
             &n, &rps, &mbs, &avg, &mx, &p50, &p95, &p99, &p999) != 9) {
    bench_log("java: cannot parse: %s", line);
    return -1;
  }
  bench_row_t *r = bench_row_add(run, "java", "max");
  r->n = (double)n;
  r->secs = (double)n / rps;
  r->msg_s = rps;
  r->mb_s = mbs;
  r->p50_us = p50 * 1000;
  r->p99_us = p99 * 1000;
  r->p999_us = p999 * 1000;
  r->max_us = mx * 1000;
  bench_row_extra(r, "avg_us", avg * 1000);
  bench_row_extra(r, "jvm_wall_s", (double)(bench_now_us() - t0) / 1e6);
  return 0;
}

int bench_java_consume(const bench_opts_t *o, const char *topic,
                       bench_run_t *run) {
  char cmd[2048], line[1024], group[128];
  bench_name(group, sizeof(group), "bench-c-java");
  snprintf(cmd, sizeof(cmd),
           "java -Xmx512m -cp '%s/*' org.apache.kafka.tools.ConsumerPerformance"
           " --bootstrap-server %s --topic %s --messages %lld --group %s"
           " --timeout 60000 2>>'%s/java-%s.log'",
           o->java_lib, o->bootstrap, topic, (long long)o->messages, group,
           o->out_dir, topic);
  int64_t t0 = bench_now_us();
  /* The data line: start, end, MB, MB.sec, nMsg, nMsg.sec, rebalance.ms,
   * fetch.ms, fetch.MB.sec, fetch.nMsg.sec; the dates have no commas. */
  if (bench__java_run(cmd, ", ", line, sizeof(line)))
    return -1;
  double f[10];
  int k = 0;
  char *save = NULL;
  for (char *tok = strtok_r(line, ",", &save); tok && k < 10;
       tok = strtok_r(NULL, ",", &save), k++)
    f[k] = k < 2 ? 0 : strtod(tok, NULL);
  if (k < 10 || f[4] <= 0) {
    bench_log("java: cannot parse the ConsumerPerformance line");
    return -1;
  }
  bench_row_t *r = bench_row_add(run, "java", "no-op");
  r->n = f[4];
  r->secs = f[7] / 1000.0;
  r->msg_s = f[9]; /* fetch.nMsg.sec: without the group join */
  r->mb_s = f[8];
  bench_row_extra(r, "msg_s_with_join", f[5]);
  bench_row_extra(r, "rebalance_ms", f[6]);
  bench_row_extra(r, "jvm_wall_s", (double)(bench_now_us() - t0) / 1e6);
  return 0;
}
