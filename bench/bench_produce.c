/*
 * produce: kmq_producer_t against a raw librdkafka producer loop with the
 * same librdkafka configuration (both built by kmq_conf_build_rdkafka from
 * one kmq_conf_t: acks=all, idempotence, lz4, linger.ms=10,
 * batch.num.messages=1000, murmur2_random, ...), plus Kafka's Java
 * ProducerPerformance as a reference.
 *
 * Each implementation gets a fresh topic, a warm-up (metadata, connections,
 * producer id) that is not measured, then two phases:
 *   max      N messages flat out; the interval is first send .. last
 *            delivery report (flush);
 *   rate=R   R msg/s for --rate-secs; latency is taken from each message's
 *            scheduled send time, so a sender that falls behind shows it
 *            (no coordinated omission).
 * Latency = send -> delivery report, recorded in a kmq_hist_t by the
 * delivery callback.
 * Two raw variants: "raw" serves delivery reports on the sending thread
 * (rd_kafka_poll(rk, 0) after each produce, librdkafka's example loop);
 * "raw-thread" serves them on a dedicated poll thread, as kmq does, so the
 * difference to kmq is kmq's own per-message work. The ratio goal is judged
 * against the faster of the two. A third, "raw-thread+hdr", is raw-thread
 * plus the one record header ("user_id" = key) kmq_producer_send adds to
 * every record: it shows what that header costs. The order rotates between
 * repetitions.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "bench.h"
#include "kmq/hist.h"
#include "kmq/producer.h"

#define BENCH_POOL 256  /* distinct payloads, cycled */
#define BENCH_WARMUP 1000

typedef struct {
  kmq_hist_t *h;
  atomic_llong done, errors;
} bench__dr_t;

/* kmq; raw librdkafka polling on the sending thread (the idiomatic loop:
 * rd_kafka_poll(rk, 0) after each produce); raw librdkafka with a dedicated
 * poll thread serving delivery reports, the way kmq's producer does. */
typedef enum {
  BENCH_KMQ,
  BENCH_RAW,
  BENCH_RAW_THREAD,
  BENCH_RAW_THREAD_HDR,
  BENCH_KINDS
} bench__kind_t;
static const char *const bench__impl[] = {"kmq", "raw", "raw-thread",
                                          "raw-thread+hdr"};

typedef struct {
  bench__kind_t kind;
  const char *topic;
  kmq_producer_t *p;
  rd_kafka_t *rk;
  bench__dr_t dr;
  pthread_t poller;
  atomic_int stop;
} bench__prod_t;

typedef struct {
  char *val[BENCH_POOL];
  size_t len[BENCH_POOL];
  char (*keys)[16];
  int nkeys;
} bench__traffic_t;

static void bench__record(bench__dr_t *dr, void *opaque, int failed) {
  kmq_hist_record(dr->h, bench_now_us() - (int64_t)(intptr_t)opaque);
  if (failed)
    atomic_fetch_add_explicit(&dr->errors, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&dr->done, 1, memory_order_relaxed);
}

/* @locality kmq producer's poll thread */
static void bench__kmq_dr(const kmq_delivery_t *d, void *opaque) {
  bench__record(opaque, d->opaque, d->status != KMQ_DELIVERY_DELIVERED);
}

/* @locality the sending thread (inside rd_kafka_poll / rd_kafka_flush) */
static void bench__raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                          void *opaque) {
  (void)rk;
  bench__record(opaque, m->_private, m->err != 0);
}

/* raw-thread's poll thread, like kmq's (lib/util.c kmq__poller_main). */
static void *bench__poller(void *arg) {
  bench__prod_t *x = arg;
  while (!atomic_load_explicit(&x->stop, memory_order_relaxed))
    rd_kafka_poll(x->rk, 100);
  return NULL;
}

static void bench__open(const bench_opts_t *o, bench__prod_t *x) {
  char errstr[512];
  kmq_conf_t *conf = bench_conf(o, x->topic, NULL);
  if (x->kind == BENCH_KMQ) {
    x->p = kmq_producer_new(conf, bench__kmq_dr, &x->dr, NULL, NULL, errstr,
                            sizeof(errstr));
    if (!x->p)
      bench_die("kmq_producer_new: %s", errstr);
  } else {
    rd_kafka_conf_t *rc = kmq_conf_build_rdkafka(conf, KMQ_CLIENT_PRODUCER,
                                                 errstr, sizeof(errstr));
    if (!rc)
      bench_die("raw producer conf: %s", errstr);
    rd_kafka_conf_set_opaque(rc, &x->dr);
    rd_kafka_conf_set_dr_msg_cb(rc, bench__raw_dr);
    x->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
    if (!x->rk)
      bench_die("raw producer: %s", errstr);
    if (x->kind >= BENCH_RAW_THREAD &&
        pthread_create(&x->poller, NULL, bench__poller, x))
      bench_die("cannot start the poll thread");
  }
  kmq_conf_destroy(conf);
}

static void bench__close(bench__prod_t *x) {
  if (x->kind == BENCH_KMQ) {
    kmq_producer_destroy(x->p);
  } else {
    if (x->kind >= BENCH_RAW_THREAD) {
      atomic_store(&x->stop, 1);
      pthread_join(x->poller, NULL);
    }
    rd_kafka_flush(x->rk, 30000);
    rd_kafka_destroy(x->rk);
  }
}

static int bench__send(bench__prod_t *x, const char *key, const char *val,
                       size_t len, int64_t t_us) {
  if (x->kind == BENCH_KMQ) {
    kmq_produce_msg_t m = {.key = key, .key_len = strlen(key), .value = val,
                           .value_len = len, .opaque = (void *)(intptr_t)t_us};
    return kmq_producer_send(x->p, &m, NULL) == KMQ_OK ? 0 : -1;
  }
  rd_kafka_resp_err_t err;
  for (;;) {
    if (x->kind == BENCH_RAW_THREAD_HDR) {
      /* The one header kmq_producer_send adds to every record. */
      rd_kafka_headers_t *h = rd_kafka_headers_new(3);
      rd_kafka_header_add(h, "user_id", -1, key, (ssize_t)strlen(key));
      err = rd_kafka_producev(x->rk, RD_KAFKA_V_TOPIC(x->topic),
                              RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(h),
                              RD_KAFKA_V_OPAQUE((void *)(intptr_t)t_us),
                              RD_KAFKA_V_END);
      if (err)
        rd_kafka_headers_destroy(h); /* not taken on failure */
    } else {
      err = rd_kafka_producev(x->rk, RD_KAFKA_V_TOPIC(x->topic),
                              RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE((void *)val, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_OPAQUE((void *)(intptr_t)t_us),
                              RD_KAFKA_V_END);
    }
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
      break;
    rd_kafka_poll(x->rk, 10); /* as kmq_producer_send does */
  }
  if (x->kind == BENCH_RAW)
    rd_kafka_poll(x->rk, 0);
  return err ? -1 : 0;
}

static int bench__flush(bench__prod_t *x) {
  if (x->kind == BENCH_KMQ)
    return kmq_producer_flush(x->p, 60000) == KMQ_OK ? 0 : -1;
  return rd_kafka_flush(x->rk, 60000) ? -1 : 0;
}

/* Sends n messages (flat out when rate is 0) and waits for every delivery
 * report; fills row when not NULL. */
static int bench__phase(bench__prod_t *x, const bench__traffic_t *tr,
                        int64_t n, int rate, bench_row_t *row) {
  kmq_hist_reset(x->dr.h);
  atomic_store(&x->dr.done, 0);
  atomic_store(&x->dr.errors, 0);
  int64_t bytes = 0, refused = 0;
  int64_t cpu0 = bench_cpu_us(), t0 = bench_now_us();
  for (int64_t i = 0; i < n; i++) {
    int64_t t;
    if (rate) {
      t = t0 + i * 1000000 / rate;
      if (bench_now_us() < t)
        bench_sleep_until_us(t);
    } else {
      t = bench_now_us();
    }
    int k = (int)(i % BENCH_POOL);
    if (bench__send(x, tr->keys[i % tr->nkeys], tr->val[k], tr->len[k], t)) {
      refused++;
      continue;
    }
    bytes += (int64_t)tr->len[k];
  }
  int64_t t_sent = bench_now_us();
  int flushed = bench__flush(x);
  int64_t t1 = bench_now_us(), cpu1 = bench_cpu_us();
  long long done = atomic_load(&x->dr.done), errors = atomic_load(&x->dr.errors);
  if (flushed || refused || errors || done != n) {
    bench_log("%s: %lld of %lld delivered, %lld failed, %lld refused%s",
              bench__impl[x->kind], done, (long long)n, errors,
              (long long)refused, flushed ? ", flush timed out" : "");
  }
  if (!row)
    return flushed || refused || errors ? -1 : 0;
  double secs = (double)(t1 - t0) / 1e6;
  row->n = (double)n;
  row->secs = secs;
  row->msg_s = (double)n / secs;
  row->mb_s = (double)bytes / secs / (1024.0 * 1024.0);
  row->p50_us = (double)kmq_hist_percentile(x->dr.h, 50);
  row->p99_us = (double)kmq_hist_percentile(x->dr.h, 99);
  row->p999_us = (double)kmq_hist_percentile(x->dr.h, 99.9);
  row->max_us = (double)kmq_hist_max(x->dr.h);
  bench_row_extra(row, "send_msg_s", (double)n * 1e6 / (double)(t_sent - t0));
  bench_row_extra(row, "avg_bytes", (double)bytes / (double)(n ? n : 1));
  /* client CPU per message: far less sensitive than msg/s to what else
   * runs on the machine (the broker shares the 2 cores) */
  bench_row_extra(row, "cpu_us_per_msg", (double)(cpu1 - cpu0) / (double)n);
  bench_row_extra(row, "errors", (double)(errors + refused));
  return flushed || refused || errors ? -1 : 0;
}

static int bench__one(const bench_opts_t *o, const bench__traffic_t *tr,
                      bench__kind_t kind, bench_run_t *run) {
  char topic[128], phase[40], prefix[40];
  snprintf(prefix, sizeof(prefix), "bench-p-%d", (int)kind);
  bench_name(topic, sizeof(topic), prefix);
  bench_create_topic(o, topic);
  bench__prod_t x = {.kind = kind, .topic = topic};
  x.dr.h = kmq_hist_new();
  if (!x.dr.h)
    bench_die("out of memory");
  bench__open(o, &x);
  const char *impl = bench__impl[kind];
  int err = bench__phase(&x, tr, BENCH_WARMUP, 0, NULL);
  err |= bench__phase(&x, tr, o->messages, 0, bench_row_add(run, impl, "max"));
  snprintf(phase, sizeof(phase), "rate=%d", o->rate);
  err |= bench__phase(&x, tr, (int64_t)(o->rate * o->rate_secs), o->rate,
                      bench_row_add(run, impl, phase));
  bench__close(&x);
  kmq_hist_destroy(x.dr.h);
  return err;
}

int bench_produce(const bench_opts_t *o, int rep, bench_run_t *run) {
  bench__traffic_t tr = {.nkeys = o->users};
  uint64_t rng = 0x9E3779B97F4A7C15ULL;
  char buf[1 << 16];
  if (o->size > (int)sizeof(buf) - 64)
    bench_die("--size at most %zu", sizeof(buf) - 64);
  for (int i = 0; i < BENCH_POOL; i++) {
    tr.len[i] = bench_envelope(i % o->users, i, -1, -1, o->size, &rng, buf,
                               sizeof(buf));
    tr.val[i] = malloc(tr.len[i] + 1);
    if (!tr.val[i])
      bench_die("out of memory");
    memcpy(tr.val[i], buf, tr.len[i] + 1);
  }
  tr.keys = calloc((size_t)o->users, sizeof(*tr.keys));
  if (!tr.keys)
    bench_die("out of memory");
  for (int u = 0; u < o->users; u++)
    snprintf(tr.keys[u], sizeof(tr.keys[u]), "wm%06d", u);

  int err = 0;
  for (int i = 0; i < BENCH_KINDS; i++) { /* rotate who goes first */
    bench__kind_t kind = (bench__kind_t)((i + rep) % BENCH_KINDS);
    if (!o->only || !strcmp(o->only, bench__impl[kind]))
      err |= bench__one(o, &tr, kind, run);
  }
  if (o->java_lib) {
    char topic[128];
    bench_name(topic, sizeof(topic), "bench-p-java");
    bench_create_topic(o, topic);
    bench_java_produce(o, topic, run);
  }

  bench_row_t *k = bench_row_find(run, "kmq", "max");
  bench_row_t *r = bench_row_find(run, "raw", "max");
  bench_row_t *t = bench_row_find(run, "raw-thread", "max");
  if (k && r && t && r->msg_s > 0 && t->msg_s > 0) {
    bench_ratio(run, "produce_kmq_over_raw", k->msg_s / r->msg_s);
    bench_ratio(run, "produce_kmq_over_raw_thread", k->msg_s / t->msg_s);
    /* The goal is judged against the faster raw variant. */
    bench_ratio(run, "produce_kmq_over_best_raw",
                k->msg_s / (r->msg_s > t->msg_s ? r->msg_s : t->msg_s));
    /* CPU efficiency: raw's client CPU per message / kmq's */
    double kc = bench_row_get_extra(k, "cpu_us_per_msg");
    double rc = bench_row_get_extra(r, "cpu_us_per_msg");
    double tc = bench_row_get_extra(t, "cpu_us_per_msg");
    if (kc > 0)
      bench_ratio(run, "produce_cpu_raw_thread_over_kmq", tc / kc);
    if (kc > 0)
      bench_ratio(run, "produce_cpu_raw_over_kmq", rc / kc);
  }
  if (err) {
    run->failed = 1;
    snprintf(run->note, sizeof(run->note), "delivery errors (see stderr)");
  }
  for (int i = 0; i < BENCH_POOL; i++)
    free(tr.val[i]);
  free(tr.keys);
  return 0;
}
