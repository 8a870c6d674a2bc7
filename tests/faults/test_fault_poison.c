/* Scenario 6: poison input on the shared broker ($KMQ_BOOTSTRAP). While
 * traffic flows through a kmq runtime (this process), records that cannot
 * be processed are written into the same partitions: every kind of
 * tools/traffic.h's bad records (malformed JSON, missing user id, oversized,
 * no key, invalid UTF-8, key differing from the user id), five more under
 * real users' keys so that they sit between that user's messages; a
 * processor always fails one message type for some users, another always
 * asks for a retry; one message takes longer than max.poll.interval.ms.
 * Asserted: each bad record is in the DLQ exactly once, at its original
 * partition/offset, with its precise reason and an error text; every
 * traffic message is processed or dead-lettered, in order, once; the slow
 * message does not make the member leave (one assignment, no rebalance) and
 * its partition keeps moving while it runs. */
#include <check.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "kmq/runtime.h"
#include "testutil.h"
#include "traffic.h"

#define NPART 4
#define USERS 60
#define PER 30
#define SLOW_USER 5
#define SLOW_SEQ 20
#define SLOW_MS 8000
#define MAX_POISON 16

typedef struct {
  kf_verify_t *v;
  atomic_llong fail_calls, retry_calls;
  atomic_llong slow_start_ns, slow_end_ns, slow_calls;
  atomic_int slow_partition;
  atomic_llong slow_offset;
  atomic_int slow_running;
  atomic_llong moved_meanwhile; /* later offsets of its partition done */
} app_t;

static int fails(int u) { return u % 10 == 3; }   /* "link" always FAILs */
static int retries(int u) { return u % 10 == 7; } /* "voice" always RETRYs */

static kmq_proc_result_t on_msg(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                                void *opaque) {
  app_t *a = opaque;
  int64_t t = kf_now_ns();
  int u, s;
  if (kmq_traffic_msg_id(msg, ctx, &u, &s))
    return KMQ_PROC_FAIL;
  if (msg->type == KMQ_MSG_LINK && fails(u)) {
    atomic_fetch_add(&a->fail_calls, 1);
    kmq_proc_ctx_set_reason(ctx, "refused by the test: user %d seq %d", u, s);
    return KMQ_PROC_FAIL;
  }
  if (msg->type == KMQ_MSG_VOICE && retries(u)) {
    atomic_fetch_add(&a->retry_calls, 1);
    kmq_proc_ctx_set_reason(ctx, "still unavailable: user %d seq %d attempt %d",
                            u, s, kmq_proc_ctx_attempt(ctx));
    return KMQ_PROC_RETRY;
  }
  if (u == SLOW_USER && s == SLOW_SEQ) {
    /* Longer than consumer.max.poll.interval.ms: workers run processors,
     * the poll thread keeps polling, so the member must stay. */
    atomic_fetch_add(&a->slow_calls, 1);
    atomic_store(&a->slow_partition, kmq_proc_ctx_partition(ctx));
    atomic_store(&a->slow_offset, kmq_proc_ctx_offset(ctx));
    atomic_store(&a->slow_start_ns, t);
    atomic_store(&a->slow_running, 1);
    struct timespec ts = {SLOW_MS / 1000, (SLOW_MS % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&a->slow_running, 0);
    atomic_store(&a->slow_end_ns, kf_now_ns());
  } else if (atomic_load(&a->slow_running) &&
             kmq_proc_ctx_partition(ctx) == atomic_load(&a->slow_partition) &&
             kmq_proc_ctx_offset(ctx) > atomic_load(&a->slow_offset)) {
    atomic_fetch_add(&a->moved_meanwhile, 1);
  }
  kf_verify_processed_span(a->v, u, s, kmq_proc_ctx_partition(ctx),
                           kmq_proc_ctx_offset(ctx), t, kf_now_ns(), 0);
  return KMQ_PROC_OK;
}

/* A poison record, where it landed, and what the DLQ must say. */
typedef struct {
  const char *name, *reason;
  int32_t partition;
  int64_t offset;
  int seen;
  char error[256];
} poison_t;

typedef struct {
  poison_t p[MAX_POISON];
  int n;
  atomic_int reports;
} poisons_t;

static void poison_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                      void *opaque) {
  (void)rk;
  poisons_t *ps = opaque;
  poison_t *p = m->_private;
  ck_assert_msg(!m->err, "poison %s not written: %s", p->name,
                rd_kafka_err2str(m->err));
  p->partition = m->partition;
  p->offset = m->offset;
  atomic_fetch_add(&ps->reports, 1);
}

/* Writes the bad records with a plain producer (the keyless one cannot go
 * through kmq_producer_send) using kmq's partitioner, so keyed ones land in
 * their user's partition. */
static void produce_poison(const char *bs, const char *topic, size_t max_bytes,
                           poisons_t *ps) {
  char errstr[512];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  rd_kafka_conf_set(rc, "bootstrap.servers", bs, errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "partitioner", "murmur2_random", errstr,
                    sizeof(errstr));
  rd_kafka_conf_set(rc, "enable.idempotence", "true", errstr, sizeof(errstr));
  rd_kafka_conf_set_dr_msg_cb(rc, poison_dr);
  rd_kafka_conf_set_opaque(rc, ps);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  /* Every kind under its own key, then five under real users' keys. */
  int real_kinds[] = {0, 1, 2, 4, 5};
  int total = KMQ_TRAFFIC_BAD_KINDS + 5;
  for (int i = 0; i < total; i++) {
    int k = i < KMQ_TRAFFIC_BAD_KINDS ? i : real_kinds[i - KMQ_TRAFFIC_BAD_KINDS];
    kmq_traffic_bad_t bad;
    kmq_traffic_bad(k, max_bytes, &bad);
    if (i >= KMQ_TRAFFIC_BAD_KINDS) {
      int u = 10 * (i - KMQ_TRAFFIC_BAD_KINDS) + 1; /* users 1, 11, 21, .. */
      kmq_traffic_user(u, bad.key, sizeof(bad.key));
      bad.key_len = strlen(bad.key);
    }
    poison_t *p = &ps->p[ps->n++];
    p->name = bad.name;
    p->reason = bad.reason;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_KEY(bad.key_len ? bad.key : NULL, bad.key_len),
        RD_KAFKA_V_VALUE(bad.value, bad.value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(p),
        RD_KAFKA_V_END);
    ck_assert_msg(!err, "%s", rd_kafka_err2str(err));
    free(bad.value);
  }
  ck_assert_int_eq(rd_kafka_flush(rk, 30000), 0);
  ck_assert_int_eq(atomic_load(&ps->reports), ps->n);
  rd_kafka_destroy(rk);
}

typedef struct {
  poisons_t *ps;
  kf_verify_t *v;
  const char *topic;
  int unexpected;
  int64_t fail_dlq, retry_dlq;
} dlq_ctx_t;

static void on_dlq(const rd_kafka_message_t *m, void *opaque) {
  dlq_ctx_t *d = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_msg(j, "DLQ record is not JSON");
  const char *reason = json_string_value(json_object_get(j, "reason"));
  const char *error = json_string_value(json_object_get(j, "error"));
  json_t *jp = json_object_get(j, "original_partition");
  json_t *jo = json_object_get(j, "original_offset");
  ck_assert_ptr_nonnull(reason);
  ck_assert_msg(error && *error, "DLQ record with reason %s has no error",
                reason);
  ck_assert_str_eq(json_string_value(json_object_get(j, "original_topic")),
                   d->topic);
  ck_assert(json_is_integer(jp) && json_is_integer(jo));
  int32_t part = (int32_t)json_integer_value(jp);
  int64_t off = json_integer_value(jo);
  for (int i = 0; i < d->ps->n; i++) {
    poison_t *p = &d->ps->p[i];
    if (p->partition == part && p->offset == off) {
      p->seen++;
      ck_assert_msg(!strcmp(p->reason, reason),
                    "%s at %d/%lld: DLQ reason %s, expected %s", p->name,
                    part, (long long)off, reason, p->reason);
      snprintf(p->error, sizeof(p->error), "%s", error);
      json_decref(j);
      return;
    }
  }
  /* A traffic message a processor gave up on. */
  const char *payload = json_string_value(json_object_get(j, "payload"));
  json_t *pj = payload ? json_loads(payload, 0, NULL) : NULL;
  const char *id =
      pj ? json_string_value(json_object_get(pj, "message_id")) : NULL;
  int u, s;
  if (id && !kmq_traffic_parse_id(id, strlen(id), &u, &s)) {
    kf_verify_dlq(d->v, u, s, reason);
    if (!strcmp(reason, "processor_failed")) {
      d->fail_dlq++;
      char want[128];
      snprintf(want, sizeof(want), "refused by the test: user %d seq %d", u,
               s);
      ck_assert_str_eq(error, want);
    } else if (!strcmp(reason, "retries_exhausted")) {
      d->retry_dlq++;
      ck_assert_msg(strstr(error, "still unavailable") != NULL, "%s", error);
    } else {
      d->unexpected++;
    }
  } else {
    d->unexpected++;
  }
  json_decref(pj);
  json_decref(j);
}

static void sample_commit(const kmq_partition_info_t *pi, void *opaque) {
  kf_verify_t *v = opaque;
  if (pi->committed >= 0)
    kf_verify_committed(v, pi->partition, pi->committed, kf_now_ns());
}

/* One runtime poll, then the consumer's committed offsets to the checker
 * (commits seen: they judge redeliveries and stalled partitions).
 * @locality test thread = poll thread */
static void poll_once(kmq_runtime_t *rt, kf_verify_t *v) {
  int n = kmq_runtime_poll(rt, 50);
  ck_assert_msg(n >= 0 || n == KMQ_ERR_BACKPRESSURE, "poll: %d", n);
  kmq_consumer_partitions(kmq_runtime_consumer(rt), sample_commit, v);
}

typedef struct {
  const int64_t *high;
  int behind;
} ends_t;

static void at_end(const kmq_partition_info_t *pi, void *opaque) {
  ends_t *e = opaque;
  if (pi->partition >= 0 && pi->partition < NPART &&
      pi->committed >= e->high[pi->partition])
    e->behind--;
}

/* The traffic has stopped: polls until the runtime has committed the end of
 * every partition or kf_stall_ms() passed, then gives the checker the ends
 * and the deadline (it counts the stalled partitions). Returns how many
 * were still behind. */
static int await_end_commits(kmq_runtime_t *rt, kf_verify_t *v,
                             const char *topic) {
  int64_t high[NPART];
  rd_kafka_t *rk = kmq_consumer_rk(kmq_runtime_consumer(rt));
  for (int p = 0; p < NPART; p++) {
    int64_t lo;
    ck_assert_int_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo,
                                                      &high[p], 5000),
                     0);
  }
  int64_t deadline_ns = kf_now_ns() + (int64_t)kf_stall_ms() * 1000000;
  ends_t e = {high, NPART};
  while (e.behind && kf_now_ns() < deadline_ns) {
    poll_once(rt, v);
    e.behind = NPART;
    kmq_consumer_partitions(kmq_runtime_consumer(rt), at_end, &e);
  }
  for (int p = 0; p < NPART; p++)
    kf_verify_end(v, p, high[p], deadline_ns);
  return e.behind;
}

START_TEST(poison_input_goes_to_dlq_and_partitions_keep_moving) {
  int64_t t0 = kt_now_ms();
  const char *bs = kt_bootstrap();
  char topic[96], dlq[112], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "fpoison");
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  kt_unique_name(group, sizeof(group), "fpg");
  kf_topics(bs, topic, NPART, 1, 0);
  kf_verify_t *v = kf_verify_new(USERS, PER, 1);
  app_t app = {.v = v};
  atomic_store(&app.slow_partition, -1);

  kmq_conf_t *c = kf_conf(bs, topic, group);
  kf_set(c, "kmq.msg.max.bytes", "4096");
  kf_set(c, "kmq.proc.retries", "2");
  kf_set(c, "kmq.proc.backoff.ms", "10");
  kf_set(c, "consumer.max.poll.interval.ms", "6000");
  kf_set(c, "consumer.session.timeout.ms", "6000");
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, on_msg, &app), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);

  kf_traffic_t tr;
  kmq_conf_t *pc = kf_conf(bs, topic, NULL);
  kf_traffic_start(&tr, pc, v, USERS, PER, 600);
  kmq_conf_destroy(pc);
  /* Poison in the middle of the stream. */
  int64_t deadline = kt_now_ms() + 60000;
  while (atomic_load(&tr.sent) < USERS * PER / 2 && kt_now_ms() < deadline)
    poll_once(rt, v);
  poisons_t *ps = calloc(1, sizeof(*ps));
  produce_poison(bs, topic, 4096, ps);
  ck_assert(kf_traffic_finish(&tr, 30000));
  ck_assert_int_eq(atomic_load(&tr.delivered), USERS * PER);
  kf_traffic_release(&tr);
  int behind = await_end_commits(rt, v, topic);

  /* Expected dead letters: every poison record, the failing and the
   * retrying processors' messages. Committed at the end, all are done;
   * behind, they cannot be (the report says what is missing). */
  int64_t fail_msgs = 0, retry_msgs = 0;
  for (int u = 0; u < USERS; u++)
    for (int s = 0; s < PER; s++) {
      fail_msgs += fails(u) && s % 6 == 4;
      retry_msgs += retries(u) && s % 6 == 5;
    }
  int64_t want_failed = ps->n + fail_msgs + retry_msgs;
  int64_t want_ok = (int64_t)USERS * PER - fail_msgs - retry_msgs;
  kmq_runtime_metrics_t mx;
  deadline = kt_now_ms() + (behind ? 0 : 120000);
  do {
    poll_once(rt, v);
    kmq_runtime_metrics(rt, &mx);
  } while ((mx.processed < want_ok || mx.failed < want_failed) &&
           kt_now_ms() < deadline);
  kmq_consumer_stats_t cs;
  kmq_consumer_stats(kmq_runtime_consumer(rt), &cs);
  kmq_runtime_destroy(rt);

  dlq_ctx_t d = {ps, v, topic, 0, 0, 0};
  int n = kf_read_dlq(bs, dlq, NULL, on_dlq, &d, 30000);
  kf_report_t r;
  kf_verify_run(v, &r);
  kf_report_emit(&r, "poison: bad records, failing/retrying/slow processors",
                 kt_now_ms() - t0);
  ck_assert_msg(r.lost == 0, "lost %lld: %s", (long long)r.lost,
                r.first_problem);
  ck_assert_msg(r.reordered == 0, "reordered %lld: %s",
                (long long)r.reordered, r.first_problem);
  ck_assert_int_eq(r.dup_uncommitted + r.dup_committed + r.dup_in_topic, 0);
  kf_assert_no_overlap_no_stall(&r);
  ck_assert_int_eq(r.consumer_dlq, fail_msgs + retry_msgs);
  ck_assert_int_eq(r.processed, want_ok);

  ck_assert_int_eq(mx.processed, want_ok);
  ck_assert_int_eq(mx.failed, want_failed);
  ck_assert_int_eq(mx.dlq_lost, 0);
  /* The slow processor outlived max.poll.interval.ms without costing the
   * member its assignment: one rebalance (the first assignment). */
  ck_assert_int_eq(atomic_load(&app.slow_calls), 1);
  ck_assert_int_eq(mx.rebalances, 1);
  ck_assert_int_eq(cs.revoked, 0);
  ck_assert_int_eq(cs.lost, 0);

  ck_assert_int_eq(n, want_failed);
  ck_assert_int_eq(d.unexpected, 0);
  for (int i = 0; i < ps->n; i++) {
    ck_assert_msg(ps->p[i].seen == 1, "%s (%d/%lld) seen %d times in the DLQ",
                  ps->p[i].name, ps->p[i].partition,
                  (long long)ps->p[i].offset, ps->p[i].seen);
    fprintf(stderr, "[poison] %-36s partition %d offset %-5lld -> %s: %s\n",
            ps->p[i].name, ps->p[i].partition, (long long)ps->p[i].offset,
            ps->p[i].reason, ps->p[i].error);
  }
  ck_assert_int_eq(d.fail_dlq, fail_msgs);
  ck_assert_int_eq(d.retry_dlq, retry_msgs);
  /* Each retrying message was tried 1 + kmq.proc.retries times. */
  ck_assert_int_eq(atomic_load(&app.retry_calls), retry_msgs * 3);

  /* The slow message's partition kept moving while it ran: later offsets
   * of that partition (other users) were processed meanwhile. */
  fprintf(stderr, "[poison] slow message: partition %d offset %lld, %.1f s; "
                  "%lld later offsets of its partition done meanwhile\n",
          atomic_load(&app.slow_partition),
          (long long)atomic_load(&app.slow_offset),
          (atomic_load(&app.slow_end_ns) - atomic_load(&app.slow_start_ns)) /
              1e9,
          (long long)atomic_load(&app.moved_meanwhile));
  ck_assert_int_gt(atomic_load(&app.moved_meanwhile), 0);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  kf_verify_destroy(v);
  free(ps);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fault_poison");
  TCase *tc = tcase_create("poison");
  tcase_set_timeout(tc, 300);
  KF_ADD_TEST(tc, poison_input_goes_to_dlq_and_partitions_keep_moving);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
