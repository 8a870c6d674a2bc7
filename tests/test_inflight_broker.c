/* The edges of a record's life from poll to commit, on a real broker
 * (issue 9): each case failed on 0f406c5.
 *
 *   paused_partition_comes_back_fetched   a partition paused for
 *       backpressure, given to another member and back, is fetched again;
 *   revoked_messages_never_start          after more revokes than the old
 *       cancellation had slots (64), with one processing that does not
 *       return, a member never starts a message of a partition it no
 *       longer owns;
 *   user_dead_letters_in_offset_order     an oversized record is
 *       dead-lettered in its user's order, after the user's earlier
 *       failures;
 *   long_retry_budget_backoff_capped      kmq.proc.retries=100 with a capped
 *       backoff runs every attempt (the old shift overflowed at 65).
 *
 * Members other than the runtime under test are raw librdkafka consumers of
 * the same group (cooperative-sticky): they join, take partitions, and leave
 * without committing, which is all a rebalance needs.
 * Knobs: KT_REVOKES (rounds of revoked_messages_never_start, default 70),
 * KT_VERBOSE=1 (a line per round), KT_DEBUG / KT_DEBUG_B (librdkafka debug
 * contexts of the member under test / of the joining member). */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/admin.h"
#include "kmq/runtime.h"
#include "brokerutil.h"
#include "testutil.h"
#include "traffic.h"

static char topic[96], dlq_topic[112], group[64];

static kmq_conf_t *conf_new(void) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", kt_bootstrap()},
      {"kmq.topic", topic},
      {"group.id", group},
      {"consumer.session.timeout.ms", "6000"},
      {"consumer.heartbeat.interval.ms", "100"},
      {"kmq.commit.interval.ms", "100"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                  "%s", errstr);
  return c;
}

static void set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[256];
  ck_assert_msg(!kmq_conf_set(c, k, v, errstr, sizeof(errstr)), "%s", errstr);
}

static void setup(const char *name, int partitions) {
  kt_unique_name(topic, sizeof(topic), name);
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kt_unique_name(group, sizeof(group), name);
  kt_create_topics(topic, partitions, dlq_topic);
}

/* User u's traffic envelope seq on `partition` (key = the user id). */
static void send_env(rd_kafka_t *rk, int partition, int u, int seq) {
  kt_send_env(rk, topic, partition, u, seq);
}

/* ---- the member under test, on its own thread ---- */

typedef struct {
  kmq_runtime_t *rt;
  pthread_t th;
} member_t;

static void *member_main(void *arg) {
  member_t *m = arg;
  ck_assert_int_eq(kmq_runtime_run(m->rt), KMQ_OK);
  return NULL;
}

static void member_start(member_t *m, kmq_conf_t *c, kmq_proc_registry_t *r) {
  char errstr[512];
  m->rt = kmq_runtime_new(c, r, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(m->rt, "%s", errstr);
  pthread_create(&m->th, NULL, member_main, m);
}

static void member_stop(member_t *m) {
  kmq_runtime_stop(m->rt);
  pthread_join(m->th, NULL);
  kmq_runtime_destroy(m->rt);
}

static rd_kafka_t *raw_member_join(void) {
  return kt_member_join(kt_bootstrap(), group, topic, getenv("KT_DEBUG_B"));
}

static int64_t rt_assigned(member_t *m) {
  return kt_assignment_bits(kmq_consumer_rk(kmq_runtime_consumer(m->rt)));
}

static bool rt_owns_all(void *arg) {
  void **a = arg;
  return rt_assigned(a[0]) == *(int64_t *)a[1];
}

/* ---- 1: a paused partition that comes back is fetched again ---- */

typedef struct {
  atomic_int slow;          /* processors sleep 20 ms while set */
  atomic_int processed;
  _Atomic unsigned char seen[2][200];
} pause_app_t;

static kmq_proc_result_t pause_proc(const kmq_chat_msg_t *msg,
                                    kmq_proc_ctx_t *ctx, void *opaque) {
  pause_app_t *a = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq))
    return KMQ_PROC_FAIL;
  if (atomic_load(&a->slow)) {
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
  int p = kmq_proc_ctx_partition(ctx);
  if (p >= 0 && p < 2 && seq >= 0 && seq < 200 &&
      !atomic_exchange(&a->seen[p][seq], 1))
    atomic_fetch_add(&a->processed, 1);
  return KMQ_PROC_OK;
}

static bool both_paused(void *arg) {
  kmq_consumer_stats_t st;
  kmq_consumer_stats(kmq_runtime_consumer(((member_t *)arg)->rt), &st);
  return st.paused == 2;
}

static bool all_processed(void *arg) {
  return atomic_load(&((pause_app_t *)arg)->processed) == 400;
}

START_TEST(paused_partition_comes_back_fetched) {
  setup("kmq-inf-pause", 2);
  pause_app_t app = {.slow = 1};
  char errstr[256];
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, pause_proc, &app), KMQ_OK);
  /* Tiny capacity and slow processors: each partition holds more than the
   * consumer keeps before pausing (64) and is paused. */
  kmq_conf_t *c = conf_new();
  set(c, "kmq.max.inflight", "2");
  set(c, "kmq.sched.workers", "1");
  rd_kafka_t *prod = kt_producer_new();
  for (int seq = 0; seq < 100; seq++)
    for (int p = 0; p < 2; p++)
      send_env(prod, p, p, seq); /* user p on partition p */
  member_t a;
  member_start(&a, c, reg);
  ck_assert_msg(kt_wait_until(both_paused, &a, 30000),
                "the member never paused both partitions");
  /* B takes one partition (paused at A) and leaves: A gets it back. */
  rd_kafka_t *b = raw_member_join();
  kt_member_leave(b);
  int64_t both = 3;
  void *arg[2] = {&a, &both};
  ck_assert_msg(kt_wait_until(rt_owns_all, arg, 60000),
                "the member did not get both partitions back");
  /* Fast from now on, and new records on both partitions: all of them must
   * be fetched and processed. */
  atomic_store(&app.slow, 0);
  for (int seq = 100; seq < 200; seq++)
    for (int p = 0; p < 2; p++)
      send_env(prod, p, p, seq);
  kt_producer_done(prod);
  ck_assert_msg(kt_wait_until(all_processed, &app, 60000),
                "%d of 400 records processed: a partition is not fetched",
                atomic_load(&app.processed));
  member_stop(&a);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- 3: revoked partitions' messages never start, after many revokes ---- */

#define REVOKES 70
#define STUCK_USER 999

typedef struct {
  member_t *m;
  atomic_int release;       /* the stuck processing returns once set */
  atomic_int stuck_started;
  atomic_int not_owned;     /* started while the partition was not ours */
  atomic_llong processed;
  char first[160];
} revoke_app_t;

static kmq_proc_result_t revoke_proc(const kmq_chat_msg_t *msg,
                                     kmq_proc_ctx_t *ctx, void *opaque) {
  revoke_app_t *a = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq))
    return KMQ_PROC_FAIL;
  int p = kmq_proc_ctx_partition(ctx);
  /* A message starts only while its partition is assigned here: a revoke
   * waits for running messages before unassigning, so this cannot race. */
  int64_t owned = rt_assigned(a->m);
  if (owned >= 0 && !(owned & ((int64_t)1 << p)) &&
      atomic_fetch_add(&a->not_owned, 1) == 0)
    snprintf(a->first, sizeof(a->first),
             "user %d seq %d of partition %d started while assigned %#llx", u,
             seq, p, (long long)owned);
  if (u == STUCK_USER && seq == 0) {
    atomic_store(&a->stuck_started, 1);
    while (!atomic_load(&a->release)) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL); /* a processing that does not return */
    }
  } else {
    /* About a second of work per round on two workers: the revoke finds
     * messages queued on the partitions it takes away. */
    struct timespec ts = {0, 15 * 1000000};
    nanosleep(&ts, NULL);
  }
  atomic_fetch_add(&a->processed, 1);
  return KMQ_PROC_OK;
}

static bool stuck_started(void *arg) {
  return atomic_load(&((revoke_app_t *)arg)->stuck_started);
}

START_TEST(revoked_messages_never_start) {
  setup("kmq-inf-revoke", 4);
  revoke_app_t app = {0};
  char errstr[256];
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, revoke_proc, &app), KMQ_OK);
  kmq_conf_t *c = conf_new();
  set(c, "kmq.sched.workers", "2");
  /* The old bound: past it, a revoke released the partition with its
   * messages still queued. Now only a warning threshold. */
  set(c, "kmq.revoke.timeout.ms", "200");
  /* Should the stuck user's partition be revoked, the member keeps it for
   * 90% of this (5.4 s), then abandons the stuck processing. */
  set(c, "consumer.max.poll.interval.ms", "6000");
  if (getenv("KT_DEBUG"))
    set(c, "consumer.debug", getenv("KT_DEBUG"));
  member_t a;
  app.m = &a;
  member_start(&a, c, reg);
  rd_kafka_t *prod = kt_producer_new();
  /* The stuck user: its first message never returns (until the end), its
   * second waits behind it in its mailbox. */
  send_env(prod, 0, STUCK_USER, 0);
  send_env(prod, 0, STUCK_USER, 1);
  rd_kafka_flush(prod, 10000);
  ck_assert(kt_wait_until(stuck_started, &app, 30000));
  int seq = 0;
  int revokes = getenv("KT_REVOKES") ? atoi(getenv("KT_REVOKES")) : REVOKES;
  for (int r = 0; r < revokes; r++) {
    /* Queued work on every partition, then a member joins (A revokes
     * some partitions) and leaves (A gets them back). */
    for (int u = 0; u < 120; u++)
      send_env(prod, u % 4, u, seq);
    seq++;
    rd_kafka_flush(prod, 10000);
    int64_t t0 = kt_now_ms();
    rd_kafka_t *b = raw_member_join();
    int64_t t1 = kt_now_ms();
    kt_member_leave(b);
    /* Back to one member before the next joins (otherwise the newcomer
     * takes the leaver's partitions and A revokes nothing). */
    int64_t all = 15;
    void *arg[2] = {&a, &all};
    ck_assert_msg(kt_wait_until(rt_owns_all, arg, 60000),
                  "the member did not get every partition back");
    if (getenv("KT_VERBOSE")) {
      kmq_consumer_stats_t st;
      kmq_consumer_stats(kmq_runtime_consumer(a.rt), &st);
      fprintf(stderr, "cycle %d: join %lld ms leave %lld ms; revoked %lld "
              "lost %lld assigned %lld rebalances %lld\n", r,
              (long long)(t1 - t0), (long long)(kt_now_ms() - t1),
              (long long)st.revoked, (long long)st.lost,
              (long long)st.assigned, (long long)st.rebalances);
    }
  }
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(a.rt, &mx);
  kmq_consumer_stats_t cs;
  kmq_consumer_stats(kmq_runtime_consumer(a.rt), &cs);
  fprintf(stderr, "[revokes] partitions revoked %lld, cancelled %lld, "
                  "processed %lld, abandoned %lld\n",
          (long long)cs.revoked, (long long)mx.cancelled,
          (long long)atomic_load(&app.processed), (long long)cs.abandoned);
  atomic_store(&app.release, 1);
  member_stop(&a);
  kt_producer_done(prod);
  ck_assert_int_ge(cs.revoked, revokes);
  ck_assert_msg(atomic_load(&app.not_owned) == 0,
                "%d messages started on partitions not owned; first: %s",
                atomic_load(&app.not_owned), app.first);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- 5: one user's dead letters in offset order ---- */

static kmq_proc_result_t fail_slowly(const kmq_chat_msg_t *msg,
                                     kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)opaque;
  /* Slow failures: each dead letter is sent well after dispatch. */
  struct timespec ts = {0, 30 * 1000000};
  nanosleep(&ts, NULL);
  kmq_proc_ctx_set_reason(ctx, "refused by the test");
  return KMQ_PROC_FAIL;
}

typedef struct {
  int n;
  int64_t offsets[32];
  char reasons[32][40];
} dlq_seen_t;

static void on_dlq(const rd_kafka_message_t *m, void *opaque) {
  dlq_seen_t *d = opaque;
  json_error_t jerr;
  json_t *o = json_loadb(m->payload, m->len, 0, &jerr);
  ck_assert_msg(o, "DLQ envelope: %s", jerr.text);
  if (d->n < 32) {
    d->offsets[d->n] =
        json_integer_value(json_object_get(o, "original_offset"));
    snprintf(d->reasons[d->n], sizeof(d->reasons[0]), "%s",
             json_string_value(json_object_get(o, "reason")));
  }
  d->n++;
  json_decref(o);
}

static bool failed_11(void *arg) {
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(((member_t *)arg)->rt, &mx);
  return mx.failed == 11;
}

START_TEST(user_dead_letters_in_offset_order) {
  setup("kmq-inf-dlqorder", 1);
  char errstr[256];
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, fail_slowly, NULL), KMQ_OK);
  kmq_conf_t *c = conf_new();
  set(c, "kmq.msg.max.bytes", "4096");
  rd_kafka_t *prod = kt_producer_new();
  for (int seq = 0; seq < 10; seq++)
    send_env(prod, 0, 7, seq);
  /* The same user's oversized record, after its ten failures. */
  char user[16], *big = malloc(5000);
  memset(big, 'x', 5000);
  kmq_traffic_user(7, user, sizeof(user));
  ck_assert_int_eq(
      rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                        RD_KAFKA_V_KEY(user, strlen(user)),
                        RD_KAFKA_V_VALUE(big, 5000),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                        RD_KAFKA_V_END),
      0);
  kt_producer_done(prod);
  member_t a;
  member_start(&a, c, reg);
  ck_assert(kt_wait_until(failed_11, &a, 60000));
  member_stop(&a);
  dlq_seen_t d = {0};
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), dlq_topic, 11, 30000, on_dlq,
                                 &d),
                   11);
  for (int i = 0; i < 11; i++)
    ck_assert_msg(d.offsets[i] == i,
                  "dead letter %d is offset %lld (%s): not in offset order", i,
                  (long long)d.offsets[i], d.reasons[i]);
  ck_assert_str_eq(d.reasons[10], "too_large");
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- 6: a long retry budget with a capped backoff ---- */

static bool failed_1(void *arg) {
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(((member_t *)arg)->rt, &mx);
  return mx.failed == 1;
}

static kmq_proc_result_t always_retry(const kmq_chat_msg_t *msg,
                                      kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  atomic_fetch_add((atomic_int *)opaque, 1);
  kmq_proc_ctx_set_reason(ctx, "attempt %d", kmq_proc_ctx_attempt(ctx));
  return KMQ_PROC_RETRY;
}

START_TEST(long_retry_budget_backoff_capped) {
  setup("kmq-inf-retry", 1);
  char errstr[256];
  atomic_int attempts = 0;
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, always_retry, &attempts),
                   KMQ_OK);
  kmq_conf_t *c = conf_new();
  set(c, "kmq.proc.retries", "100");
  set(c, "kmq.proc.backoff.ms", "1");
  set(c, "kmq.proc.backoff.max.ms", "4");
  rd_kafka_t *prod = kt_producer_new();
  send_env(prod, 0, 1, 0);
  kt_producer_done(prod);
  member_t a;
  member_start(&a, c, reg);
  /* 100 waits of at most 4 ms: well within the deadline; an uncapped
   * doubling would wait 2^99 ms. */
  ck_assert_msg(kt_wait_until(failed_1, &a, 30000),
                "not dead-lettered after %d attempts", atomic_load(&attempts));
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(a.rt, &mx);
  member_stop(&a);
  ck_assert_int_eq(mx.failed, 1);
  ck_assert_int_eq(atomic_load(&attempts), 101);
  ck_assert_int_eq(mx.retried, 101);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("inflight_broker");
  TCase *tc = tcase_create("inflight");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, paused_partition_comes_back_fetched);
  tcase_add_test(tc, user_dead_letters_in_offset_order);
  tcase_add_test(tc, long_retry_budget_backoff_capped);
  tcase_add_test(tc, revoked_messages_never_start);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
