/*
 * e2e: a kmq producer sends at a fixed rate (--rate, default 5000 msg/s)
 * for --rate-secs over U users (each of --users-list, default 100 then 500;
 * a user is drawn at random per message) while a kmq runtime consumes the
 * topic with a processor that simulates work (--work-us, default 1000 us;
 * a sleep, like a call to an upstream API, or a busy loop with --work spin).
 *
 * Before the clock starts, a warm-up (not measured; bench__phase) puts
 * BENCH_E2E_WARM_BYTES per partition through the whole path, past the
 * broker's first index entries of the new topic.
 *
 * Latency = processed - scheduled send time. The send time (CLOCK_MONOTONIC,
 * us; producer and consumer share this process) travels inside the
 * envelope's content as "bench_t_us", which the processor reads from
 * kmq_chat_msg_t.content; the scheduled time is used so a sender that falls
 * behind shows as latency. Per-user order is checked in the processor:
 * message_id carries (user, seq) (kmq_traffic_parse_id) and each user's seq
 * must grow by exactly one.
 *
 * Where a slow tail comes from: the envelope also carries the actual send
 * time ("bench_s_us"), so each latency splits into the sender's own lag
 * (actual - scheduled: this thread was not scheduled in time, or send
 * blocked) and send -> processed (producer, broker, consumer, kmq, the
 * work); the runtime's histogram gives kmq's own dispatch -> ack. The
 * slowest message is reported with when it was scheduled and its split,
 * and slow_windows counts the 100 ms windows (by scheduled time) that hold
 * a message slower than 20 ms: a tail from one stall shows as a few
 * adjacent windows, a steady one as many. work_p50/p99 is how long the
 * simulated work really took: on a loaded machine a 1 ms sleep returns
 * late, and the workers saturate.
 *
 * Threads: this thread produces; a consumer thread runs the runtime's poll
 * loop itself (kmq_runtime_poll) so that it can sample the commit-gate
 * backlog after every poll (kmq_consumer_partitions is poll-thread only).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"
#include "kmq/hist.h"
#include "kmq/producer.h"
#include "kmq/runtime.h"
#include "traffic.h"

/* Warm-up users: enough keys that every partition gets a warm-up record
 * (64 keys over 6 partitions miss one with probability ~5e-5). */
#define BENCH_E2E_WARM 64
/* Warm-up bytes per partition, before compression: enough that every
 * partition is past its first offset- and time-index entry before the
 * clock starts. The broker writes the first entry on the append after
 * more than log.index.interval.bytes (4096) of batches, as stored (lz4:
 * one round of BENCH_E2E_WARM default envelopes is ~6 KB per partition,
 * ~2-3 KB stored). That first write touches the new segment's
 * preallocated, sparse, memory-mapped index files; on this machine's
 * kernel (Linux 6.18, ext4) the page fault's readahead zero-fills pages
 * of the hole, and it kept one of the broker's request threads busy for
 * 100-250 ms while the produce requests behind it waited (bench/
 * RESULTS.md "The phase-start stall"). Each partition of a new topic pays
 * it once; before this warm-up it fell on the first 0.5 s of nearly every
 * measured phase. 64 KiB leaves the 4096 stored bytes behind unless lz4
 * shrinks the records 16 times. */
#define BENCH_E2E_WARM_BYTES 65536
/* At least this many rounds whatever the size. */
#define BENCH_E2E_WARM_ROUNDS 8

typedef struct {
  const bench_opts_t *o;
  kmq_runtime_t *rt;
  kmq_hist_t *lat, *lat_sent, *lag;
  kmq_hist_t *work; /* how long the simulated work really took */
  atomic_llong t0; /* scheduled time of the first measured message */
  pthread_mutex_t worst_mu;
  int64_t worst_us, worst_at_us, worst_lag_us; /* under worst_mu */
  _Atomic unsigned char *slow; /* per 100 ms window: a message > 20 ms */
  int nslow;
  int users;
  int *last_seq; /* per user; written only by the user's actor */
  atomic_llong processed, violations, duplicates, bad, warm;
  atomic_int stop;
  int64_t backlog_max, inflight_max; /* consumer thread, read after join */
  int poll_err;
} bench__e2e_t;

/* @locality the worker running the user's actor */
static kmq_proc_result_t bench__work(const kmq_chat_msg_t *msg,
                                     kmq_proc_ctx_t *ctx, void *opaque) {
  (void)ctx;
  bench__e2e_t *e = opaque;
  int u, seq;
  json_t *t = json_object_get(msg->content, "bench_t_us");
  if (kmq_traffic_parse_id(msg->message_id.ptr, msg->message_id.len, &u,
                           &seq) ||
      u < 0 || u >= e->users + BENCH_E2E_WARM || !json_is_integer(t)) {
    atomic_fetch_add(&e->bad, 1);
    return KMQ_PROC_OK;
  }
  if (u >= e->users) { /* a warm-up user: not measured */
    atomic_fetch_add(&e->warm, 1);
    return KMQ_PROC_OK;
  }
  if (e->o->work_us > 0) {
    int64_t w0 = bench_now_us();
    if (e->o->work_spin) {
      int64_t end = bench_now_us() + e->o->work_us;
      while (bench_now_us() < end)
        ;
    } else {
      bench_sleep_us(e->o->work_us);
    }
    kmq_hist_record(e->work, bench_now_us() - w0);
  }
  /* One message of a user at a time, handed between workers by the
   * scheduler (which orders these plain accesses). */
  if (seq == e->last_seq[u])
    atomic_fetch_add(&e->duplicates, 1);
  else if (seq != e->last_seq[u] + 1)
    atomic_fetch_add(&e->violations, 1);
  e->last_seq[u] = seq;
  int64_t now = bench_now_us(), ts = (int64_t)json_integer_value(t);
  int64_t lat = now - ts;
  kmq_hist_record(e->lat, lat);
  json_t *s = json_object_get(msg->content, "bench_s_us");
  int64_t lag = json_is_integer(s) ? (int64_t)json_integer_value(s) - ts : 0;
  if (json_is_integer(s)) {
    kmq_hist_record(e->lat_sent, now - (int64_t)json_integer_value(s));
    kmq_hist_record(e->lag, lag > 0 ? lag : 0);
  }
  if (lat > 20000) {
    int64_t w = (ts - atomic_load(&e->t0)) / 100000;
    if (w >= 0 && w < e->nslow)
      atomic_store(&e->slow[w], 1);
  }
  pthread_mutex_lock(&e->worst_mu);
  if (lat > e->worst_us) {
    e->worst_us = lat;
    e->worst_at_us = ts - atomic_load(&e->t0);
    e->worst_lag_us = lag;
  }
  pthread_mutex_unlock(&e->worst_mu);
  atomic_fetch_add(&e->processed, 1);
  return KMQ_PROC_OK;
}

static void bench__sample(const kmq_partition_info_t *pi, void *opaque) {
  int64_t *acc = opaque;
  acc[0] += pi->backlog;
  acc[1] += pi->in_flight;
}

/* The runtime's poll thread. */
static void *bench__consumer(void *arg) {
  bench__e2e_t *e = arg;
  while (!atomic_load(&e->stop)) {
    int r = kmq_runtime_poll(e->rt, 50);
    if (r < 0 && r != KMQ_ERR_BACKPRESSURE) {
      e->poll_err = r;
      break;
    }
    /* The maxima cover the measured phase only, not the warm-up's
     * bursts. */
    if (atomic_load(&e->t0) == 0)
      continue;
    int64_t acc[2] = {0, 0};
    kmq_consumer_partitions(kmq_runtime_consumer(e->rt), bench__sample, acc);
    if (acc[0] > e->backlog_max)
      e->backlog_max = acc[0];
    if (acc[1] > e->inflight_max)
      e->inflight_max = acc[1];
  }
  return NULL;
}

static int bench__phase(const bench_opts_t *o, int users, bench_run_t *run) {
  char topic[128], group[128], errstr[512], v[32], phase[40], key[16];
  char buf[1 << 16];
  bench_name(topic, sizeof(topic), "bench-e2e");
  bench_name(group, sizeof(group), "bench-e2e-g");
  bench_create_topic(o, topic);
  kmq_conf_t *conf = bench_conf(o, topic, group);
  snprintf(v, sizeof(v), "%d", o->workers);
  bench_conf_set(conf, "kmq.sched.workers", v);

  bench__e2e_t e = {.o = o, .users = users};
  e.lat = kmq_hist_new();
  e.lat_sent = kmq_hist_new();
  e.lag = kmq_hist_new();
  e.work = kmq_hist_new();
  pthread_mutex_init(&e.worst_mu, NULL);
  e.nslow = (int)(o->rate_secs * 10) + 1;
  e.slow = calloc((size_t)e.nslow, sizeof(*e.slow));
  e.last_seq = malloc(sizeof(int) * (size_t)(users + 1));
  int *next_seq = calloc((size_t)users, sizeof(int));
  if (!e.lat || !e.lat_sent || !e.lag || !e.work || !e.slow || !e.last_seq || !next_seq)
    bench_die("out of memory");
  for (int u = 0; u < users; u++)
    e.last_seq[u] = -1;
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  if (!reg || kmq_proc_set_default(reg, bench__work, &e))
    bench_die("registry: %s", errstr);
  e.rt = kmq_runtime_new(conf, reg, NULL, NULL, errstr, sizeof(errstr));
  if (!e.rt)
    bench_die("kmq_runtime_new: %s", errstr);
  kmq_producer_t *p =
      kmq_producer_new(conf, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  if (!p)
    bench_die("kmq_producer_new: %s", errstr);
  pthread_t th;
  if (pthread_create(&th, NULL, bench__consumer, &e))
    bench_die("cannot start the consumer thread");

  /* Warm-up, not measured: rounds of one message of each of
   * BENCH_E2E_WARM extra users (indexes `users` and up), each round
   * flushed (one batch per partition), until BENCH_E2E_WARM_BYTES per
   * partition and BENCH_E2E_WARM_ROUNDS rounds went out; then every one
   * of them must have been processed (a new group reads from the earliest
   * offset, so rounds sent before the first assignment are read after
   * it). So before the clock starts the producer has the topic's
   * metadata, the consumer its partitions and fetch positions, every
   * partition on the broker its segment files (the first append creates
   * them) and its first index entries (BENCH_E2E_WARM_BYTES says why),
   * and no warm-up record is left to overlap the measured ones. Its own
   * random state: the measured phase's users and paddings do not depend
   * on how the warm-up went. */
  uint64_t rng = 0xD1B54A32D192ED03ULL ^ (uint64_t)users;
  uint64_t wrng = rng ^ 0x9E3779B97F4A7C15ULL;
  kmq_runtime_metrics_t mx;
  int64_t t_wait = bench_now_us();
  long long warm_sent = 0;
  double warm_bytes = 0, warm_need = (double)BENCH_E2E_WARM_BYTES *
                                     (o->partitions > 0 ? o->partitions : 1);
  for (int w = 0; w < BENCH_E2E_WARM_ROUNDS || warm_bytes < warm_need; w++) {
    for (int k = 0; k < BENCH_E2E_WARM; k++) {
      size_t len = bench_envelope(users + k, w, 0, -1, o->size, &wrng, buf,
                                  sizeof(buf));
      snprintf(key, sizeof(key), "wm%06d", users + k);
      kmq_produce_msg_t m = {.key = key, .key_len = strlen(key), .value = buf,
                             .value_len = len};
      if (kmq_producer_send(p, &m, NULL))
        bench_die("e2e: a warm-up send was refused");
      warm_sent++;
      warm_bytes += (double)len;
    }
    if (kmq_producer_flush(p, 10000))
      bench_die("e2e: the warm-up was not delivered in 10 s");
  }
  while (atomic_load(&e.warm) < warm_sent) {
    if (bench_now_us() - t_wait > 60000000)
      bench_die("e2e: the warm-up messages were not processed in 60 s");
    bench_sleep_us(10000);
  }
  bench_sleep_us(100000);

  int64_t n = (int64_t)(o->rate * o->rate_secs), refused = 0;
  int64_t t0 = bench_now_us();
  atomic_store(&e.t0, t0);
  for (int64_t i = 0; i < n; i++) {
    int64_t t = t0 + i * 1000000 / o->rate;
    if (bench_now_us() < t)
      bench_sleep_until_us(t);
    int u = (int)(bench_rand(&rng) % (uint64_t)users);
    size_t len = bench_envelope(u, next_seq[u]++, t, bench_now_us(), o->size,
                                &rng, buf, sizeof(buf));
    snprintf(key, sizeof(key), "wm%06d", u);
    kmq_produce_msg_t m = {.key = key, .key_len = strlen(key), .value = buf,
                           .value_len = len};
    if (kmq_producer_send(p, &m, NULL))
      refused++; /* a gap in the user's seq: shows as an order violation */
  }
  int64_t t_sent = bench_now_us();
  int err = kmq_producer_flush(p, 60000) ? -1 : 0;
  int64_t want = n - refused;
  while (atomic_load(&e.processed) + atomic_load(&e.bad) < want &&
         bench_now_us() - t_sent < 120000000 && !e.poll_err)
    bench_sleep_us(5000);
  int64_t t_done = bench_now_us();
  atomic_store(&e.stop, 1);
  pthread_join(th, NULL);
  kmq_runtime_metrics(e.rt, &mx);
  kmq_runtime_destroy(e.rt);
  int64_t lag = bench_group_lag(o, group, topic);
  kmq_producer_destroy(p);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(conf);

  long long processed = atomic_load(&e.processed);
  snprintf(phase, sizeof(phase), "users=%d", users);
  bench_row_t *row = bench_row_add(run, "kmq", phase);
  double secs = (double)(t_done - t0) / 1e6;
  row->n = (double)processed;
  row->secs = secs;
  row->msg_s = (double)processed / secs;
  row->mb_s = -1;
  row->p50_us = (double)kmq_hist_percentile(e.lat, 50);
  row->p99_us = (double)kmq_hist_percentile(e.lat, 99);
  row->p999_us = (double)kmq_hist_percentile(e.lat, 99.9);
  row->max_us = (double)kmq_hist_max(e.lat);
  bench_row_extra(row, "send_msg_s", (double)n * 1e6 / (double)(t_sent - t0));
  bench_row_extra(row, "target_msg_s", o->rate);
  bench_row_extra(row, "drain_s", (double)(t_done - t_sent) / 1e6);
  bench_row_extra(row, "order_violations", (double)atomic_load(&e.violations));
  bench_row_extra(row, "duplicates", (double)atomic_load(&e.duplicates));
  bench_row_extra(row, "missing", (double)(n - processed));
  bench_row_extra(row, "gate_backlog_max", (double)e.backlog_max);
  bench_row_extra(row, "in_flight_max", (double)e.inflight_max);
  bench_row_extra(row, "kmq_p99_us", (double)mx.latency_p99_us);
  bench_row_extra(row, "sent_p99_us",
                  (double)kmq_hist_percentile(e.lat_sent, 99));
  bench_row_extra(row, "sender_lag_p99_us",
                  (double)kmq_hist_percentile(e.lag, 99));
  bench_row_extra(row, "sender_lag_max_us", (double)kmq_hist_max(e.lag));
  bench_row_extra(row, "worst_us", (double)e.worst_us);
  bench_row_extra(row, "worst_at_s", (double)e.worst_at_us / 1e6);
  bench_row_extra(row, "worst_sender_lag_us", (double)e.worst_lag_us);
  /* Above --work-us: the worker got its CPU back late (a loaded machine);
   * at 8 workers and 5000 msg/s, a mean over 1.6 ms saturates them. */
  bench_row_extra(row, "work_p50_us", (double)kmq_hist_percentile(e.work, 50));
  bench_row_extra(row, "work_p99_us", (double)kmq_hist_percentile(e.work, 99));
  int slow = 0;
  for (int w = 0; w < e.nslow; w++)
    slow += atomic_load(&e.slow[w]);
  bench_row_extra(row, "slow_windows", slow);
  bench_row_extra(row, "actors_live", (double)mx.actors_live);
  bench_row_extra(row, "commit_lag_closed", (double)lag);
  bench_row_extra(row, "workers", o->workers);
  bench_row_extra(row, "work_us", o->work_us);

  if (e.poll_err)
    bench_log("e2e: kmq_runtime_poll: %s", kmq_err2str((kmq_err_t)e.poll_err));
  if (err || refused || e.poll_err || processed != n ||
      atomic_load(&e.violations) || atomic_load(&e.bad)) {
    bench_log("e2e users=%d: %lld of %lld processed, %lld refused, %lld out "
              "of order, %lld bad",
              users, processed, (long long)n, (long long)refused,
              (long long)atomic_load(&e.violations),
              (long long)atomic_load(&e.bad));
    err = -1;
  }
  kmq_hist_destroy(e.lat);
  kmq_hist_destroy(e.lat_sent);
  kmq_hist_destroy(e.lag);
  kmq_hist_destroy(e.work);
  pthread_mutex_destroy(&e.worst_mu);
  free(e.slow);
  free(e.last_seq);
  free(next_seq);
  return err;
}

int bench_e2e(const bench_opts_t *o, int rep, bench_run_t *run) {
  (void)rep;
  int err = 0;
  for (int i = 0; i < o->n_users_list; i++)
    err |= bench__phase(o, o->users_list[i], run);
  if (err) {
    run->failed = 1;
    snprintf(run->note, sizeof(run->note),
             "lost, bad or out-of-order messages (see stderr)");
  }
  return 0;
}
