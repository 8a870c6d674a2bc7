/* The runtime end to end on a real broker: per-user order with random
 * processing delays on several workers, nothing missing or duplicated,
 * committed offsets at the end; bad input dead-lettered with its reason;
 * members joining and leaving mid-stream without loss or reordering. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/admin.h"
#include "kmq/producer.h"
#include "kmq/runtime.h"
#include "testutil.h"
#include "traffic.h"

#define NPART 6

static char topic[96], dlq_topic[112];

typedef struct {
  int users, per_user;
  int max_delay_us;
  /* Per user: the last seq processed (any member) and a "running" flag that
   * catches two members (or workers) processing one user at once. */
  int *last;
  atomic_int *running;
  atomic_int processed, violations, concurrent, duplicates;
  int max_duplicates; /* replays allowed (rebalances drop queued work) */
} check_t;

static kmq_conf_t *conf_for(const char *group) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr)),
                   KMQ_OK);
  if (group)
    kmq_conf_set(c, "group.id", group, errstr, sizeof(errstr));
  kmq_conf_set(c, "consumer.session.timeout.ms", "10000", errstr,
               sizeof(errstr));
  kmq_conf_set(c, "consumer.heartbeat.interval.ms", "500", errstr,
               sizeof(errstr));
  kmq_conf_set(c, "kmq.sched.workers", "4", errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.msg.max.bytes", "4096", errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.commit.interval.ms", "200", errstr, sizeof(errstr));
  return c;
}

static void setup_topics(void) {
  char errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-rt");
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kmq_conf_t *c = conf_for(NULL);
  ck_assert_msg(!kmq_admin_create_topic(c, topic, NPART, 1, NULL, 0, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  ck_assert_msg(!kmq_admin_create_topic(c, dlq_topic, NPART, 1, NULL, 0,
                                        30000, errstr, sizeof(errstr)),
                "%s", errstr);
  kmq_conf_destroy(c);
}

static void produce(int users, int from, int to, int with_bad) {
  char errstr[512], buf[1024], user[16];
  kmq_conf_t *c = conf_for(NULL);
  kmq_producer_t *p =
      kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  for (int s = from; s < to; s++)
    for (int u = 0; u < users; u++) {
      int n = kmq_traffic_envelope(u, s, buf, sizeof(buf));
      kmq_traffic_user(u, user, sizeof(user));
      kmq_produce_msg_t m = {.key = user, .key_len = strlen(user),
                             .value = buf, .value_len = (size_t)n};
      ck_assert_int_eq(kmq_producer_send(p, &m, NULL), KMQ_OK);
    }
  for (int k = 0; with_bad && k < KMQ_TRAFFIC_BAD_KINDS; k++) {
    kmq_traffic_bad_t bad;
    kmq_traffic_bad(k, 4096, &bad);
    if (bad.key_len) {
      kmq_produce_msg_t m = {.key = bad.key, .key_len = bad.key_len,
                             .value = bad.value, .value_len = bad.value_len};
      ck_assert_int_eq(kmq_producer_send(p, &m, NULL), KMQ_OK);
    } else {
      rd_kafka_t *rk = kmq_producer_rk(p);
      ck_assert_int_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                         RD_KAFKA_V_VALUE(bad.value,
                                                          bad.value_len),
                                         RD_KAFKA_V_MSGFLAGS(
                                             RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_OPAQUE(NULL),
                                         RD_KAFKA_V_END),
                       0);
    }
    free(bad.value);
  }
  /* The keyless record bypassed the producer's accounting: flush librdkafka
   * itself too. */
  rd_kafka_flush(kmq_producer_rk(p), 30000);
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
}

static kmq_proc_result_t check_order(const kmq_chat_msg_t *msg,
                                     kmq_proc_ctx_t *ctx, void *opaque) {
  check_t *ck = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq))
    return KMQ_PROC_FAIL;
  if (atomic_exchange(&ck->running[u], 1))
    atomic_fetch_add(&ck->concurrent, 1);
  if (ck->max_delay_us) {
    /* Random work: different users finish out of offset order. */
    unsigned r = (unsigned)(u * 2654435761u + (unsigned)seq * 40503u);
    struct timespec ts = {0, (long)(r % (unsigned)ck->max_delay_us) * 1000};
    nanosleep(&ts, NULL);
  }
  /* last[u] is the highest seq processed so far. The next new one must be
   * exactly last + 1: processing seq s before every earlier seq of the user
   * was processed is a reordering. A seq at or below last is a replay
   * (at-least-once redelivery from the committed offset). */
  if (seq <= ck->last[u])
    atomic_fetch_add(&ck->duplicates, 1);
  else if (seq != ck->last[u] + 1)
    atomic_fetch_add(&ck->violations, 1);
  if (seq > ck->last[u])
    ck->last[u] = seq;
  atomic_store(&ck->running[u], 0);
  atomic_fetch_add(&ck->processed, 1);
  return KMQ_PROC_OK;
}

static check_t *check_new(int users, int per_user, int max_delay_us) {
  check_t *ck = calloc(1, sizeof(*ck));
  ck->users = users;
  ck->per_user = per_user;
  ck->max_delay_us = max_delay_us;
  ck->last = malloc(sizeof(int) * (size_t)users);
  ck->running = calloc((size_t)users, sizeof(atomic_int));
  for (int i = 0; i < users; i++)
    ck->last[i] = -1;
  return ck;
}

static void check_free(check_t *ck) {
  free(ck->last);
  free(ck->running);
  free(ck);
}

static void check_complete(check_t *ck) {
  ck_assert_int_eq(atomic_load(&ck->violations), 0);
  ck_assert_int_eq(atomic_load(&ck->concurrent), 0);
  ck_assert_int_le(atomic_load(&ck->duplicates), ck->max_duplicates);
  for (int u = 0; u < ck->users; u++)
    ck_assert_msg(ck->last[u] == ck->per_user - 1, "user %d stopped at %d", u,
                  ck->last[u]);
  ck_assert_int_eq(atomic_load(&ck->processed) - atomic_load(&ck->duplicates),
                   ck->users * ck->per_user);
}

/* A runtime for conf c and registry reg; asserts. */
static kmq_runtime_t *runtime_new(kmq_conf_t *c, kmq_proc_registry_t *reg) {
  char errstr[512];
  kmq_runtime_t *rt =
      kmq_runtime_new(c, reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  return rt;
}

/* Polls rt until at least `processed` messages were processed and `failed`
 * dead-lettered, or timeout_ms passed; the last metrics in *mx. */
static void run_until(kmq_runtime_t *rt, int64_t processed, int64_t failed,
                      int timeout_ms, kmq_runtime_metrics_t *mx) {
  int64_t deadline = kt_now_ms() + timeout_ms;
  do {
    ck_assert_int_ge(kmq_runtime_poll(rt, 100), 0);
    kmq_runtime_metrics(rt, mx);
  } while ((mx->processed < processed || mx->failed < failed) &&
           kt_now_ms() < deadline);
}

static kmq_proc_registry_t *registry(check_t *ck) {
  char errstr[256];
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  const char *types[] = {"text", "image", "event", "location", "link",
                         "voice"};
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(kmq_proc_register(reg, types[i], check_order, ck),
                     KMQ_OK);
  return reg;
}


typedef struct {
  const char *reason[KMQ_TRAFFIC_BAD_KINDS];
  int seen[KMQ_TRAFFIC_BAD_KINDS];
} dlq_seen_t;

static void on_dlq(const rd_kafka_message_t *m, void *opaque) {
  dlq_seen_t *d = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  const char *reason = json_string_value(json_object_get(j, "reason"));
  ck_assert_ptr_nonnull(reason);
  ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "error")));
  ck_assert(json_is_integer(json_object_get(j, "original_offset")));
  ck_assert_str_eq(json_string_value(json_object_get(j, "original_topic")),
                   topic);
  int matched = 0;
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS && !matched; k++)
    if (!d->seen[k] && !strcmp(d->reason[k], reason)) {
      d->seen[k] = 1;
      matched = 1;
    }
  ck_assert_msg(matched, "unexpected DLQ reason %s", reason);
  json_decref(j);
}

START_TEST(thousand_users_in_order_with_random_delays) {
  const int users = 1000, per = 100;
  setup_topics();
  produce(users, 0, per, 1);
  char group[64];
  kt_unique_name(group, sizeof(group), "rt");
  check_t *ck = check_new(users, per, 300);
  kmq_conf_t *c = conf_for(group);
  kmq_proc_registry_t *reg = registry(ck);
  kmq_runtime_t *rt = runtime_new(c, reg);
  kmq_runtime_metrics_t mx;
  run_until(rt, users * per, KMQ_TRAFFIC_BAD_KINDS, 240000, &mx);
  ck_assert_int_eq(mx.processed, users * per);
  ck_assert_int_eq(mx.failed, KMQ_TRAFFIC_BAD_KINDS);
  ck_assert_int_eq(mx.dlq_lost, 0);
  ck_assert_int_gt(mx.latency_p99_us, 0);
  kmq_runtime_destroy(rt);
  check_complete(ck);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  /* Every bad record is in the DLQ with its precise reason. */
  dlq_seen_t d = {0};
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS; k++) {
    kmq_traffic_bad_t bad;
    kmq_traffic_bad(k, 4096, &bad);
    d.reason[k] = bad.reason;
    free(bad.value);
  }
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), dlq_topic,
                                 KMQ_TRAFFIC_BAD_KINDS, 30000, on_dlq, &d),
                   KMQ_TRAFFIC_BAD_KINDS);
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS; k++)
    ck_assert_msg(d.seen[k], "no DLQ record with reason %s", d.reason[k]);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  check_free(ck);
}
END_TEST

/* ---- a raw processor: records undecoded, same order and gate ---- */

typedef struct {
  check_t *ck;
  kmq_msg_decoder_t *dec;
  atomic_int with_msg; /* calls that got a decoded message: must stay 0 */
} raw_app_t;

/* Decodes the record itself, as an application with its own parsing
 * would, and dead-letters what it cannot use by returning FAIL. */
static kmq_proc_result_t raw_proc(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  raw_app_t *a = opaque;
  if (msg)
    atomic_fetch_add(&a->with_msg, 1);
  size_t len, klen;
  const void *v = kmq_proc_ctx_value(ctx, &len);
  const char *key = kmq_proc_ctx_user(ctx, &klen);
  kmq_chat_msg_t m;
  char err[256];
  kmq_err_t e = kmq_msg_decode(a->dec, v, len, &m, err, sizeof(err));
  if (e) {
    kmq_proc_ctx_set_reason(ctx, "%s: %s", kmq_msg_reason(e), err);
    return KMQ_PROC_FAIL;
  }
  kmq_proc_result_t r;
  if (!kmq_msg_key_matches(&m, key, klen)) {
    kmq_proc_ctx_set_reason(ctx, "%s: key differs", KMQ_MSG_REASON_KEY_MISMATCH);
    r = KMQ_PROC_FAIL;
  } else {
    r = check_order(&m, ctx, a->ck);
  }
  kmq_chat_msg_clear(&m);
  return r;
}

typedef struct {
  int consumer[KMQ_TRAFFIC_BAD_KINDS]; /* dead-lettered before dispatch */
  int processor[KMQ_TRAFFIC_BAD_KINDS]; /* by raw_proc, reason in error */
  const char *reason[KMQ_TRAFFIC_BAD_KINDS];
  int other;
} raw_dlq_t;

static void on_raw_dlq(const rd_kafka_message_t *m, void *opaque) {
  raw_dlq_t *d = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  const char *reason = json_string_value(json_object_get(j, "reason"));
  const char *error = json_string_value(json_object_get(j, "error"));
  ck_assert_ptr_nonnull(reason);
  ck_assert_ptr_nonnull(error);
  int matched = 0;
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS && !matched; k++) {
    size_t n = strlen(d->reason[k]);
    if (!strcmp(reason, d->reason[k]) && !d->consumer[k]) {
      d->consumer[k] = matched = 1;
    } else if (!strcmp(reason, KMQ_PROC_REASON_FAILED) &&
               !strncmp(error, d->reason[k], n) && error[n] == ':' &&
               !d->processor[k]) {
      d->processor[k] = matched = 1;
    }
  }
  if (!matched)
    d->other++;
  json_decref(j);
}

START_TEST(raw_processor_gets_records_undecoded) {
  const int users = 200, per = 20;
  setup_topics();
  produce(users, 0, per, 1);
  char group[64], errstr[512];
  kt_unique_name(group, sizeof(group), "rtraw");
  raw_app_t a = {.ck = check_new(users, per, 100)};
  kmq_conf_t *c = conf_for(group);
  a.dec = kmq_msg_decoder_new(c, errstr, sizeof(errstr));
  ck_assert_msg(a.dec, "%s", errstr);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, raw_proc, &a), KMQ_OK);
  kmq_runtime_t *rt = runtime_new(c, reg);
  kmq_runtime_metrics_t mx;
  run_until(rt, users * per, KMQ_TRAFFIC_BAD_KINDS, 120000, &mx);
  ck_assert_int_eq(mx.processed, users * per);
  ck_assert_int_eq(mx.failed, KMQ_TRAFFIC_BAD_KINDS);
  kmq_runtime_destroy(rt);
  ck_assert_int_eq(atomic_load(&a.with_msg), 0);
  check_complete(a.ck);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  /* The keyless and the oversized record never reach the processor; the
   * four a parser rejects are dead-lettered by the processor, with the
   * decoder's reason first in their error. */
  raw_dlq_t d = {0};
  int want_consumer = 0;
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS; k++) {
    kmq_traffic_bad_t bad;
    kmq_traffic_bad(k, 4096, &bad);
    d.reason[k] = bad.reason;
    want_consumer += !bad.key_len || !strcmp(bad.reason, "too_large");
    free(bad.value);
  }
  ck_assert_int_eq(want_consumer, 2);
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), dlq_topic,
                                 KMQ_TRAFFIC_BAD_KINDS, 30000, on_raw_dlq, &d),
                   KMQ_TRAFFIC_BAD_KINDS);
  ck_assert_int_eq(d.other, 0);
  int by_consumer = 0, by_processor = 0;
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS; k++) {
    by_consumer += d.consumer[k];
    by_processor += d.processor[k];
  }
  ck_assert_int_eq(by_consumer, 2);
  ck_assert_int_eq(by_processor, KMQ_TRAFFIC_BAD_KINDS - 2);
  kmq_proc_registry_destroy(reg);
  kmq_msg_decoder_destroy(a.dec);
  kmq_conf_destroy(c);
  check_free(a.ck);
}
END_TEST

/* ---- members joining and leaving mid-stream ---- */

typedef struct {
  kmq_runtime_t *rt;
  atomic_int stop;
} member_t;

static void *member_run(void *arg) {
  member_t *m = arg;
  while (!atomic_load(&m->stop))
    kmq_runtime_poll(m->rt, 50);
  return NULL;
}

START_TEST(members_join_and_leave_midstream) {
  const int users = 300, per = 60;
  setup_topics();
  char group[64], errstr[512];
  kt_unique_name(group, sizeof(group), "rt2");
  check_t *ck = check_new(users, per, 200);
  /* Each rebalance drops the revoked partitions' queued messages; those
   * behind a dropped one in offset order but already processed (other
   * users) are replayed by the new owner: a bounded number, never a gap. */
  ck->max_duplicates = users * per / 2;
  kmq_conf_t *c = conf_for(group);
  kmq_proc_registry_t *reg = registry(ck);
  member_t a = {kmq_runtime_new(c, reg, NULL, NULL, errstr, sizeof(errstr)),
                0};
  ck_assert_msg(a.rt, "%s", errstr);
  pthread_t ta, tb;
  pthread_create(&ta, NULL, member_run, &a);
  produce(users, 0, per / 3, 0);
  /* B joins while A works. */
  member_t b = {kmq_runtime_new(c, reg, NULL, NULL, errstr, sizeof(errstr)),
                0};
  ck_assert_msg(b.rt, "%s", errstr);
  pthread_create(&tb, NULL, member_run, &b);
  produce(users, per / 3, 2 * per / 3, 0);
  /* A leaves while B works; its queued messages go back to the group. */
  atomic_store(&a.stop, 1);
  pthread_join(ta, NULL);
  kmq_runtime_destroy(a.rt);
  produce(users, 2 * per / 3, per, 0);
  int64_t deadline = kt_now_ms() + 120000;
  while (atomic_load(&ck->processed) - atomic_load(&ck->duplicates) <
             users * per &&
         kt_now_ms() < deadline) {
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL); /* the members run on their own threads */
  }
  atomic_store(&b.stop, 1);
  pthread_join(tb, NULL);
  kmq_runtime_destroy(b.rt);
  check_complete(ck);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  check_free(ck);
}
END_TEST


/* ---- processor outcomes: retry, fail, async; order kept throughout ---- */

typedef struct {
  check_t *ck;
  atomic_int attempts_seen;
  pthread_t th;
  /* A one-slot hand-off to the completer thread. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  kmq_proc_ctx_t *pending;
  int stop;
} outcome_app_t;

static void *completer(void *arg) {
  outcome_app_t *a = arg;
  pthread_mutex_lock(&a->mu);
  for (;;) {
    while (!a->pending && !a->stop)
      pthread_cond_wait(&a->cv, &a->mu);
    if (!a->pending && a->stop)
      break;
    kmq_proc_ctx_t *ctx = a->pending;
    a->pending = NULL;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    ck_assert_int_eq(kmq_proc_ctx_complete(ctx, KMQ_PROC_OK), KMQ_OK);
    pthread_mutex_lock(&a->mu);
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

/* seq % 10: 3 -> RETRY on the first two attempts then OK; 7 -> FAIL
 * (dead-lettered); 5 -> ASYNC completed by another thread; else OK. */
static kmq_proc_result_t outcomes(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  outcome_app_t *a = opaque;
  int u, seq;
  ck_assert_int_eq(
      kmq_traffic_parse_id(msg->message_id.ptr, msg->message_id.len, &u, &seq),
      0);
  atomic_fetch_add(&a->attempts_seen, 1);
  /* Order: whatever the outcome, a user's seqs arrive increasing, and a
   * retried message is retried before the user's next one. */
  if (kmq_proc_ctx_attempt(ctx) == 1) {
    if (seq != a->ck->last[u] + 1)
      atomic_fetch_add(&a->ck->violations, 1);
    a->ck->last[u] = seq;
  } else if (seq != a->ck->last[u]) {
    atomic_fetch_add(&a->ck->violations, 1);
  }
  if (seq % 10 == 3 && kmq_proc_ctx_attempt(ctx) < 3)
    return KMQ_PROC_RETRY;
  if (seq % 10 == 7) {
    kmq_proc_ctx_set_reason(ctx, "seq %d is refused by the test", seq);
    return KMQ_PROC_FAIL;
  }
  atomic_fetch_add(&a->ck->processed, 1);
  if (seq % 10 == 5) {
    pthread_mutex_lock(&a->mu);
    while (a->pending)
      pthread_cond_wait(&a->cv, &a->mu);
    a->pending = ctx;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return KMQ_PROC_ASYNC;
  }
  return KMQ_PROC_OK;
}

typedef struct {
  int processor_failed;
  int other;
} reason_count_t;

static void count_failed(const rd_kafka_message_t *m, void *opaque) {
  reason_count_t *r = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  const char *reason = json_string_value(json_object_get(j, "reason"));
  const char *error = json_string_value(json_object_get(j, "error"));
  if (reason && !strcmp(reason, "processor_failed") && error &&
      strstr(error, "refused by the test"))
    r->processor_failed++;
  else
    r->other++;
  json_decref(j);
}

START_TEST(processor_retry_fail_async) {
  const int users = 50, per = 20;
  setup_topics();
  produce(users, 0, per, 0);
  char group[64], errstr[512];
  kt_unique_name(group, sizeof(group), "rt3");
  outcome_app_t a = {.ck = check_new(users, per, 0)};
  pthread_mutex_init(&a.mu, NULL);
  pthread_cond_init(&a.cv, NULL);
  pthread_create(&a.th, NULL, completer, &a);
  kmq_conf_t *c = conf_for(group);
  kmq_conf_set(c, "kmq.proc.retries", "3", errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.proc.backoff.ms", "1", errstr, sizeof(errstr));
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, outcomes, &a), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  const int failing = users * (per / 10);
  kmq_runtime_metrics_t mx;
  int64_t deadline = kt_now_ms() + 120000;
  do {
    kmq_runtime_poll(rt, 100);
    kmq_runtime_metrics(rt, &mx);
  } while ((mx.processed + mx.failed < users * per) && kt_now_ms() < deadline);
  ck_assert_int_eq(mx.failed, failing);
  ck_assert_int_eq(mx.processed, users * per - failing);
  ck_assert_int_eq(mx.retried, users * (per / 10) * 2);
  kmq_runtime_destroy(rt);
  pthread_mutex_lock(&a.mu);
  a.stop = 1;
  pthread_cond_broadcast(&a.cv);
  pthread_mutex_unlock(&a.mu);
  pthread_join(a.th, NULL);
  ck_assert_int_eq(atomic_load(&a.ck->violations), 0);
  for (int u = 0; u < users; u++)
    ck_assert_int_eq(a.ck->last[u], per - 1);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  reason_count_t rc = {0};
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), dlq_topic, failing, 30000,
                                 count_failed, &rc),
                   failing);
  ck_assert_int_eq(rc.processor_failed, failing);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  check_free(a.ck);
}
END_TEST

/* ---- backpressure: a slow processor pauses partitions, bounded memory ---- */

static atomic_int slow_gate; /* processors wait while it is 0 */

static kmq_proc_result_t slow(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                              void *opaque) {
  (void)msg;
  (void)ctx;
  check_t *ck = opaque;
  while (!atomic_load(&slow_gate)) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL); /* the test's brake, not a synchronisation */
  }
  atomic_fetch_add(&ck->processed, 1);
  return KMQ_PROC_OK;
}

START_TEST(slow_processor_pauses_and_resumes) {
  const int users = 20, per = 100;
  setup_topics();
  produce(users, 0, per, 0);
  char group[64], errstr[512];
  kt_unique_name(group, sizeof(group), "rt4");
  check_t *ck = check_new(users, per, 0);
  kmq_conf_t *c = conf_for(group);
  kmq_conf_set(c, "kmq.sched.mailbox.size", "4", errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.max.inflight", "64", errstr, sizeof(errstr));
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  kmq_proc_set_default(reg, slow, ck);
  atomic_store(&slow_gate, 0);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  kmq_consumer_stats_t cs;
  int64_t deadline = kt_now_ms() + 60000;
  int64_t max_inflight = 0;
  /* Blocked processors: the runtime must stop taking messages (pause)
   * rather than queue all 2000. */
  do {
    kmq_runtime_poll(rt, 50);
    kmq_consumer_stats(kmq_runtime_consumer(rt), &cs);
    if (cs.in_flight > max_inflight)
      max_inflight = cs.in_flight;
  } while (cs.paused == 0 && kt_now_ms() < deadline);
  ck_assert_int_gt(cs.paused, 0);
  for (int i = 0; i < 50; i++) { /* keep polling: still bounded */
    kmq_runtime_poll(rt, 10);
    kmq_consumer_stats(kmq_runtime_consumer(rt), &cs);
    if (cs.in_flight > max_inflight)
      max_inflight = cs.in_flight;
  }
  ck_assert_int_le(max_inflight, 64);
  atomic_store(&slow_gate, 1); /* release: everything drains and resumes */
  deadline = kt_now_ms() + 60000;
  do {
    kmq_runtime_poll(rt, 50);
    kmq_consumer_stats(kmq_runtime_consumer(rt), &cs);
  } while ((atomic_load(&ck->processed) < users * per || cs.paused) &&
           kt_now_ms() < deadline);
  ck_assert_int_eq(atomic_load(&ck->processed), users * per);
  ck_assert_int_eq(cs.paused, 0);
  kmq_runtime_destroy(rt);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  check_free(ck);
}
END_TEST

int main(void) {
  Suite *s = suite_create("runtime_broker");
  TCase *tc = tcase_create("broker");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, thousand_users_in_order_with_random_delays);
  tcase_add_test(tc, members_join_and_leave_midstream);
  tcase_add_test(tc, processor_retry_fail_async);
  tcase_add_test(tc, slow_processor_pauses_and_resumes);
  tcase_add_test(tc, raw_processor_gets_records_undecoded);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
