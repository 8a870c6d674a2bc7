/*
 * consume: kmq's full pipeline (kmq_runtime_t: consumer -> dispatcher ->
 * actors -> no-op default processor -> ack -> commit gate -> committer)
 * against a raw librdkafka consumer loop (rd_kafka_consumer_poll, manual
 * rd_kafka_offsets_store, async commit every 1000 offsets or 1000 ms, the
 * same cadence as kmq's committer defaults) on the same pre-filled topic,
 * each with its own group id. Both consumers are configured by
 * kmq_conf_build_rdkafka from one kmq_conf_t, so librdkafka runs with the
 * same settings (cooperative-sticky, manual store, earliest, ...).
 *
 * A third row, raw+decode, is the raw loop plus kmq_msg_decode() of every
 * record: it separates the cost of parsing the envelope (which kmq does on
 * its workers) from the cost of kmq's scheduling and commit machinery.
 * Java's ConsumerPerformance reads the same topic as a reference.
 *
 * Throughput is measured from the first message processed to the last (the
 * group join is excluded, as ConsumerPerformance's fetch.nMsg.sec does).
 * The topic is filled once per process with valid envelopes
 * (tools/traffic.h) over --users keys; every repetition uses new groups.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "bench.h"
#include "kmq/message.h"
#include "kmq/producer.h"
#include "kmq/runtime.h"

static char bench__topic[128];
static double bench__avg_bytes;

static void bench__fill(const bench_opts_t *o) {
  char errstr[512], buf[1 << 16];
  bench_name(bench__topic, sizeof(bench__topic), "bench-c");
  bench_create_topic(o, bench__topic);
  kmq_conf_t *conf = bench_conf(o, bench__topic, NULL);
  kmq_producer_t *p =
      kmq_producer_new(conf, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  if (!p)
    bench_die("producer: %s", errstr);
  uint64_t rng = 0x2545F4914F6CDD1DULL;
  int64_t bytes = 0, t0 = bench_now_us();
  char key[16];
  for (int64_t i = 0; i < o->messages; i++) {
    int u = (int)(i % o->users), seq = (int)(i / o->users);
    size_t n = bench_envelope(u, seq, -1, -1, o->size, &rng, buf, sizeof(buf));
    snprintf(key, sizeof(key), "wm%06d", u);
    kmq_produce_msg_t m = {.key = key, .key_len = strlen(key), .value = buf,
                           .value_len = n};
    if (kmq_producer_send(p, &m, NULL))
      bench_die("pre-fill: send refused");
    bytes += (int64_t)n;
  }
  if (kmq_producer_flush(p, 120000))
    bench_die("pre-fill: flush timed out");
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  kmq_producer_destroy(p);
  kmq_conf_destroy(conf);
  if (st.delivered != o->messages)
    bench_die("pre-fill: %lld of %lld delivered", (long long)st.delivered,
              (long long)o->messages);
  bench__avg_bytes = (double)bytes / (double)o->messages;
  bench_log("pre-filled %s: %lld messages, %.0f bytes each, %d partitions, "
            "%.1f s",
            bench__topic, (long long)o->messages, bench__avg_bytes,
            o->partitions, (double)(bench_now_us() - t0) / 1e6);
}

static void bench__fill_row(bench_row_t *row, int64_t n, int64_t t_first,
                            int64_t t_last) {
  double secs = (double)(t_last - t_first) / 1e6;
  row->n = (double)n;
  row->secs = secs;
  row->msg_s = secs > 0 ? (double)(n - 1) / secs : -1;
  row->mb_s = row->msg_s * bench__avg_bytes / (1024.0 * 1024.0);
}

/* How much the row's peak RSS grew over the RSS at its start (its
 * consumer's prefetch, records and decoding, in MiB), when the kernel
 * tells. */
static void bench__rss_extra(bench_row_t *row, long rss0, long rss1) {
  if (rss0 >= 0 && rss1 >= 0)
    bench_row_extra(row, "peak_rss_growth_mb", (double)(rss1 - rss0) / 1024.0);
}

/* ---- kmq pipeline ---- */

typedef struct {
  int64_t n;
  atomic_llong count;
  _Atomic int64_t t_first, t_last;
} bench__noop_t;

/* The default processor: counts and returns. @locality any worker */
static kmq_proc_result_t bench__noop(const kmq_chat_msg_t *msg,
                                     kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)ctx;
  bench__noop_t *s = opaque;
  long long c = atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
  if (c == 0)
    atomic_store(&s->t_first, bench_now_us());
  if (c + 1 == s->n)
    atomic_store(&s->t_last, bench_now_us());
  return KMQ_PROC_OK;
}

static void bench__sample(const kmq_partition_info_t *pi, void *opaque) {
  int64_t *acc = opaque;
  acc[0] += pi->backlog;
  acc[1] += pi->in_flight;
}

/* raw: the processor is registered with kmq_proc_set_raw, so the pipeline
 * runs without JSON decoding (the poll -> dispatch -> actor ->
 * gate -> commit); otherwise as the default, behind kmq_msg_decode. */
static int bench__kmq(const bench_opts_t *o, int raw, bench_run_t *run) {
  const char *impl = raw ? "kmq-raw" : "kmq";
  char group[128], errstr[512], v[32];
  bench_name(group, sizeof(group), raw ? "bench-c-kmqraw" : "bench-c-kmq");
  kmq_conf_t *conf = bench_conf(o, bench__topic, group);
  snprintf(v, sizeof(v), "%d", o->workers);
  bench_conf_set(conf, "kmq.sched.workers", v);
  bench__noop_t st = {.n = o->messages};
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  if (!reg || (raw ? kmq_proc_set_raw(reg, bench__noop, &st)
                   : kmq_proc_set_default(reg, bench__noop, &st)))
    bench_die("registry: %s", errstr);
  long rss0 = bench_rss_peak_reset();
  kmq_runtime_t *rt =
      kmq_runtime_new(conf, reg, NULL, NULL, errstr, sizeof(errstr));
  if (!rt)
    bench_die("kmq_runtime_new: %s", errstr);
  bench_threads_t th0, th1;
  bench_threads_snap(&th0);
  int64_t cpu0 = bench_cpu_us();
  int64_t t0 = bench_now_us(), backlog_max = 0, inflight_max = 0, polls = 0;
  int err = 0;
  while (atomic_load(&st.count) < o->messages) {
    int r = kmq_runtime_poll(rt, 100);
    if (r < 0 && r != KMQ_ERR_BACKPRESSURE) {
      bench_log("kmq_runtime_poll: %s", kmq_err2str((kmq_err_t)r));
      err = -1;
      break;
    }
    polls++;
    /* The gate backlog after every poll (the runtime's own metric is
     * sampled once a second). @locality poll thread: this one. */
    int64_t acc[2] = {0, 0};
    kmq_consumer_partitions(kmq_runtime_consumer(rt), bench__sample, acc);
    if (acc[0] > backlog_max)
      backlog_max = acc[0];
    if (acc[1] > inflight_max)
      inflight_max = acc[1];
    if (bench_now_us() - t0 > 300 * 1000000LL) {
      bench_log("%s: timed out after %lld of %lld messages", impl,
                (long long)atomic_load(&st.count), (long long)o->messages);
      err = -1;
      break;
    }
  }
  int64_t t_done = bench_now_us(), cpu1 = bench_cpu_us();
  bench_threads_snap(&th1);
  long rss1 = bench_rss_peak_kb();
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(rt, &mx);
  kmq_consumer_stats_t cs; /* @locality poll thread: this one */
  kmq_consumer_stats(kmq_runtime_consumer(rt), &cs);
  int64_t lag_done = bench_group_lag(o, group, bench__topic);
  kmq_runtime_destroy(rt);
  int64_t lag_close = bench_group_lag(o, group, bench__topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(conf);

  bench_row_t *row = bench_row_add(run, impl, "no-op");
  if (!err)
    bench__fill_row(row, o->messages, atomic_load(&st.t_first),
                    atomic_load(&st.t_last));
  /* dispatch -> ack inside kmq, from the runtime's histogram */
  row->p50_us = (double)mx.latency_p50_us;
  row->p99_us = (double)mx.latency_p99_us;
  row->p999_us = (double)mx.latency_p999_us;
  row->max_us = (double)mx.latency_max_us;
  bench_row_extra(row, "gate_backlog_max", (double)backlog_max);
  bench_row_extra(row, "in_flight_max", (double)inflight_max);
  bench_row_extra(row, "mailbox_depth_max", (double)mx.mailbox_depth_max);
  bench_row_extra(row, "commit_lag_done", (double)lag_done);
  bench_row_extra(row, "commit_lag_closed", (double)lag_close);
  bench_row_extra(row, "failed", (double)mx.failed);
  /* offers refused (a full mailbox or actor table): the record waits in
   * the consumer and its partition is not read until it is taken */
  bench_row_extra(row, "backpressured", (double)cs.backpressured);
  bench_row_extra(row, "polls", (double)polls);
  bench_row_extra(row, "wall_s", (double)(t_done - t0) / 1e6);
  bench_row_extra(row, "cpu_us_per_msg",
                  (double)(cpu1 - cpu0) / (double)o->messages);
  bench_threads_extra(row, &th0, &th1, o->messages);
  bench__rss_extra(row, rss0, rss1);
  if (mx.failed || mx.dlq) {
    bench_log("%s: %lld messages failed (DLQ %lld): the envelopes are bad",
              impl, (long long)mx.failed, (long long)mx.dlq);
    err = -1;
  }
  return err;
}

/* ---- raw librdkafka loop ---- */

#define BENCH_MAX_PARTS 256

static void bench__store_commit(rd_kafka_t *rk, const char *topic,
                                const int64_t *next, int nparts, int async) {
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new(nparts);
  for (int i = 0; i < nparts; i++)
    if (next[i] >= 0)
      rd_kafka_topic_partition_list_add(l, topic, i)->offset = next[i];
  if (l->cnt) {
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(rk, l);
    if (err)
      bench_log("raw: offsets_store: %s", rd_kafka_err2str(err));
    err = rd_kafka_commit(rk, NULL, async);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
      bench_log("raw: commit: %s", rd_kafka_err2str(err));
  }
  rd_kafka_topic_partition_list_destroy(l);
}

static int bench__raw(const bench_opts_t *o, int decode, bench_run_t *run) {
  char group[128], errstr[512];
  bench_name(group, sizeof(group), decode ? "bench-c-rawdec" : "bench-c-raw");
  kmq_conf_t *conf = bench_conf(o, bench__topic, group);
  rd_kafka_conf_t *rc = kmq_conf_build_rdkafka(conf, KMQ_CLIENT_CONSUMER,
                                               errstr, sizeof(errstr));
  if (!rc)
    bench_die("raw consumer conf: %s", errstr);
  long rss0 = bench_rss_peak_reset();
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
  if (!rk)
    bench_die("raw consumer: %s", errstr);
  rd_kafka_poll_set_consumer(rk);
  kmq_msg_decoder_t *dec = decode ? kmq_msg_decoder_new(conf, errstr,
                                                        sizeof(errstr))
                                  : NULL;
  if (decode && !dec)
    bench_die("decoder: %s", errstr);
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, bench__topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t kerr = rd_kafka_subscribe(rk, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  if (kerr)
    bench_die("raw subscribe: %s", rd_kafka_err2str(kerr));

  int64_t next[BENCH_MAX_PARTS];
  for (int i = 0; i < BENCH_MAX_PARTS; i++)
    next[i] = -1;
  int nparts = o->partitions < BENCH_MAX_PARTS ? o->partitions
                                               : BENCH_MAX_PARTS;
  int64_t count = 0, since_commit = 0, bad = 0, t_first = 0, t_last = 0;
  bench_threads_t th0, th1;
  bench_threads_snap(&th0);
  int64_t cpu0 = bench_cpu_us();
  int64_t t0 = bench_now_us(), last_commit = t0;
  int err = 0;
  while (count < o->messages) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    int64_t now = 0;
    if (m) {
      if (!m->err) {
        if (decode) {
          kmq_chat_msg_t msg;
          if (kmq_msg_decode(dec, m->payload, m->len, &msg, errstr,
                             sizeof(errstr)) ||
              !kmq_msg_key_matches(&msg, m->key, m->key_len))
            bad++;
          kmq_chat_msg_clear(&msg);
        }
        if (m->partition < nparts)
          next[m->partition] = m->offset + 1;
        count++;
        since_commit++;
        if (count == 1)
          t_first = bench_now_us();
        if (count == o->messages)
          t_last = bench_now_us();
      }
      rd_kafka_message_destroy(m);
    }
    if (since_commit >= 1000 ||
        (since_commit && (now = bench_now_us()) - last_commit >= 1000000)) {
      bench__store_commit(rk, bench__topic, next, nparts, 1);
      since_commit = 0;
      last_commit = now ? now : bench_now_us();
    }
    if (!m && bench_now_us() - t0 > 300 * 1000000LL) {
      bench_log("raw: timed out after %lld messages", (long long)count);
      err = -1;
      break;
    }
  }
  int64_t t_done = bench_now_us(), cpu1 = bench_cpu_us();
  bench_threads_snap(&th1);
  long rss1 = bench_rss_peak_kb();
  int64_t lag_done = bench_group_lag(o, group, bench__topic);
  bench__store_commit(rk, bench__topic, next, nparts, 0);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  int64_t lag_close = bench_group_lag(o, group, bench__topic);
  kmq_msg_decoder_destroy(dec);
  kmq_conf_destroy(conf);

  bench_row_t *row = bench_row_add(run, decode ? "raw+decode" : "raw", "no-op");
  if (!err)
    bench__fill_row(row, o->messages, t_first, t_last);
  bench_row_extra(row, "commit_lag_done", (double)lag_done);
  bench_row_extra(row, "commit_lag_closed", (double)lag_close);
  bench_row_extra(row, "wall_s", (double)(t_done - t0) / 1e6);
  bench_row_extra(row, "cpu_us_per_msg",
                  (double)(cpu1 - cpu0) / (double)o->messages);
  bench_threads_extra(row, &th0, &th1, o->messages);
  bench__rss_extra(row, rss0, rss1);
  if (bad) {
    bench_log("raw+decode: %lld records did not decode", (long long)bad);
    err = -1;
  }
  return err;
}

/* Records key = a's msg/s over b's, when both rows exist and ran. */
static void bench__rate_ratio(bench_run_t *run, const char *key,
                              const bench_row_t *a, const bench_row_t *b) {
  if (a && b && a->msg_s > 0 && b->msg_s > 0)
    bench_ratio(run, key, a->msg_s / b->msg_s);
}

/* Records key = a's CPU per message over b's (b the costlier, kmq). */
static void bench__cpu_ratio(bench_run_t *run, const char *key,
                             const bench_row_t *a, const bench_row_t *b) {
  if (a && b && bench_row_get_extra(b, "cpu_us_per_msg") > 0)
    bench_ratio(run, key,
                bench_row_get_extra(a, "cpu_us_per_msg") /
                    bench_row_get_extra(b, "cpu_us_per_msg"));
}

int bench_consume(const bench_opts_t *o, int rep, bench_run_t *run) {
  if (!bench__topic[0])
    bench__fill(o);
  int err = 0;
  /* Rotate the order between repetitions. */
  static const char *const impl[] = {"kmq", "raw", "kmq-raw", "raw+decode"};
  int nimpl = o->decode_row ? 4 : 3;
  for (int i = 0; i < nimpl; i++) {
    int which = (i + rep) % nimpl;
    if (o->only && strcmp(o->only, impl[which]))
      continue;
    err |= which == 0   ? bench__kmq(o, 0, run)
           : which == 1 ? bench__raw(o, 0, run)
           : which == 2 ? bench__kmq(o, 1, run)
                        : bench__raw(o, 1, run);
  }
  if (o->java_lib)
    bench_java_consume(o, bench__topic, run);
  bench_row_t *k = bench_row_find(run, "kmq", "no-op");
  bench_row_t *r = bench_row_find(run, "raw", "no-op");
  bench_row_t *d = bench_row_find(run, "raw+decode", "no-op");
  bench_row_t *kr = bench_row_find(run, "kmq-raw", "no-op");
  bench__rate_ratio(run, "consume_kmq_over_raw", k, r);
  bench__rate_ratio(run, "consume_kmqraw_over_raw", kr, r);
  bench__cpu_ratio(run, "consume_cpu_raw_over_kmqraw", r, kr);
  bench__rate_ratio(run, "consume_rawdecode_over_raw", d, r);
  bench__rate_ratio(run, "consume_kmq_over_rawdecode", k, d);
  bench__cpu_ratio(run, "consume_cpu_rawdecode_over_kmq", d, k);
  if (err) {
    run->failed = 1;
    snprintf(run->note, sizeof(run->note), "consumer errors (see stderr)");
  }
  return 0;
}
