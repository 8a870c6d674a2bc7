/* The migration drill (issue 13; README "Migration"), on a real broker, with
 * traffic flowing the whole time:
 *   phase 0  the existing path only (an in-memory log stands for it);
 *   phase 1  + dual-write (kmq_dual_write) + a shadow runtime
 *            (kmq.mode=shadow, its own group, a verifying processor);
 *   phase 2  + the live runtime (business processor, live group); the
 *            shadow stops;
 *   rollback the live runtime is stopped and destroyed (the switch back to
 *            the existing path) while dual-write goes on;
 *   phase 2  a new live runtime in the same group.
 * Asserted: every dual-written message was processed by the live group
 * exactly once and in each user's order (the rollback commits what it
 * finished and skips nothing: the second live runtime starts where the
 * first stopped); the shadow saw every message written while it ran, in
 * order, and its group left the live group's offsets alone (the live
 * group still processed everything from the start of dual-write); a bad
 * record written during phase 1 is counted by the shadow but
 * dead-lettered only by the live group (the DLQ holds exactly one letter);
 * every dual-write has its outcome: delivered, none lost; the existing
 * path got every message of every phase.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/admin.h"
#include "kmq/dual_write.h"
#include "kmq/runtime.h"
#include "brokerutil.h"
#include "testutil.h"
#include "traffic.h"

#define USERS 20
#define STEP 400 /* messages each phase waits for */

static char topic[96], dlq_topic[112], live_group[64], shadow_group[64];

/* ---- the existing path and the traffic ---- */

typedef struct {
  kmq_dual_writer_t *dw;
  atomic_int dual;        /* phase >= 1: also dual-write */
  atomic_int stop;
  atomic_int dual_from;   /* first seq dual-written (every user) */
  atomic_int seq;         /* rounds sent (every user has seq 0..seq-1) */
  atomic_long old_path;   /* messages the existing path handled */
  atomic_long dual_written;
} traffic_t;

static void *traffic_main(void *arg) {
  traffic_t *t = arg;
  char buf[1024], user[16], mid[48];
  for (int seq = 0; !atomic_load(&t->stop); seq++) {
    /* The flag is read once per round: every user's dual-written messages
     * start at the same seq and have no gap. */
    int dual = atomic_load(&t->dual);
    if (dual && atomic_load(&t->dual_from) < 0)
      atomic_store(&t->dual_from, seq);
    for (int u = 0; u < USERS; u++) {
      atomic_fetch_add(&t->old_path, 1); /* the existing path, always */
      if (!dual)
        continue;
      int n = kmq_traffic_envelope(u, seq, buf, sizeof(buf));
      kmq_traffic_user(u, user, sizeof(user));
      snprintf(mid, sizeof(mid), "m-%d-%d", u, seq);
      kmq_produce_msg_t m = {.key = user, .key_len = strlen(user),
                             .value = buf, .value_len = (size_t)n,
                             .msg_id = mid, .msg_type = "wecom"};
      ck_assert_int_eq(kmq_dual_write(t->dw, &m), KMQ_OK);
      atomic_fetch_add(&t->dual_written, 1);
    }
    atomic_store(&t->seq, seq + 1);
    /* Load shaping, not synchronisation: ~4000 messages/s. */
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

/* ---- processors ---- */

typedef struct {
  atomic_int first;      /* first seq expected per user (dual_from) */
  int last[USERS];       /* per user, touched by that user's actor only */
  atomic_long processed;
  atomic_int violations; /* a seq after a gap, or before the last */
  atomic_int duplicates; /* a seq again */
} seen_t;

static kmq_proc_result_t check_order(const kmq_chat_msg_t *msg,
                                     kmq_proc_ctx_t *ctx, void *opaque) {
  seen_t *s = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq) || u < 0 || u >= USERS)
    return KMQ_PROC_FAIL;
  int last = s->last[u] < 0 ? atomic_load(&s->first) - 1 : s->last[u];
  if (seq <= last)
    atomic_fetch_add(&s->duplicates, 1);
  else if (seq != last + 1)
    atomic_fetch_add(&s->violations, 1);
  if (seq > last)
    s->last[u] = seq;
  atomic_fetch_add(&s->processed, 1);
  return KMQ_PROC_OK;
}

/* The shadow starts late: it checks order from the first seq it sees. */
static kmq_proc_result_t shadow_verify(const kmq_chat_msg_t *msg,
                                       kmq_proc_ctx_t *ctx, void *opaque) {
  seen_t *s = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq) || u < 0 || u >= USERS)
    return KMQ_PROC_FAIL;
  if (s->last[u] >= 0 && seq != s->last[u] + 1)
    atomic_fetch_add(seq <= s->last[u] ? &s->duplicates : &s->violations, 1);
  s->last[u] = seq;
  atomic_fetch_add(&s->processed, 1);
  return KMQ_PROC_OK;
}

static void seen_init(seen_t *s, int first) {
  memset(s, 0, sizeof(*s));
  atomic_init(&s->first, first);
  for (int u = 0; u < USERS; u++)
    s->last[u] = -1;
}

/* ---- runtimes ---- */

typedef struct {
  kmq_runtime_t *rt;
  kmq_proc_registry_t *reg;
  pthread_t th;
} member_t;

static void set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[256];
  ck_assert_msg(!kmq_conf_set(c, k, v, errstr, sizeof(errstr)), "%s=%s: %s",
                k, v, errstr);
}

static void *member_main(void *arg) {
  member_t *m = arg;
  ck_assert_int_eq(kmq_runtime_run(m->rt), KMQ_OK);
  return NULL;
}

static kmq_conf_t *conf_new(const char *group) {
  kmq_conf_t *c = kmq_conf_new();
  set(c, "bootstrap.servers", kt_bootstrap());
  set(c, "kmq.topic", topic);
  set(c, "group.id", group);
  set(c, "kmq.commit.interval.ms", "100");
  set(c, "kmq.sched.workers", "2");
  return c;
}

static void member_start(member_t *m, kmq_conf_t *c, kmq_proc_cb cb,
                         void *opaque) {
  char errstr[512];
  m->reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(m->reg, cb, opaque), KMQ_OK);
  m->rt = kmq_runtime_new(c, m->reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(m->rt, "%s", errstr);
  kmq_conf_destroy(c);
  pthread_create(&m->th, NULL, member_main, m);
}

static void member_stop(member_t *m) {
  kmq_runtime_stop(m->rt);
  pthread_join(m->th, NULL);
  kmq_runtime_destroy(m->rt);
  kmq_proc_registry_destroy(m->reg);
}

static bool shadow_failed(void *arg) {
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(arg, &mx);
  return mx.failed >= 1;
}

/* Records in the DLQ topic (one partition). */
static int64_t dlq_records(void) {
  char errstr[512];
  kmq_partition_lag_t lag[4];
  int n = 4;
  kmq_conf_t *c = kmq_conf_new();
  set(c, "bootstrap.servers", kt_bootstrap());
  ck_assert_msg(kmq_admin_group_lag(c, live_group, dlq_topic, lag, &n, 10000,
                                    errstr, sizeof(errstr)) == KMQ_OK,
                "%s", errstr);
  kmq_conf_destroy(c);
  int64_t sum = 0;
  for (int i = 0; i < n; i++)
    sum += lag[i].high - lag[i].low;
  return sum;
}

typedef struct {
  atomic_long *v;
  long n;
} at_least_t;

static bool reached(void *arg) {
  at_least_t *a = arg;
  return atomic_load(a->v) >= a->n;
}

static void wait_at_least(atomic_long *v, long n, const char *what) {
  at_least_t a = {v, n};
  ck_assert_msg(kt_wait_until(reached, &a, 120000), "%s: %ld of %ld", what,
                atomic_load(v), n);
}

START_TEST(test_shadow_refuses_live_group) {
  kt_unique_name(topic, sizeof(topic), "kmq-migrate-conf");
  char errstr[512];
  kmq_conf_t *c = conf_new("g-live");
  set(c, "kmq.mode", "shadow");
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  /* No live group named: refused. */
  ck_assert_ptr_null(kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                     sizeof(errstr)));
  ck_assert_ptr_nonnull(strstr(errstr, "kmq.live.group.id"));
  /* The live group itself: refused. */
  set(c, "kmq.live.group.id", "g-live");
  ck_assert_ptr_null(kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                     sizeof(errstr)));
  set(c, "kmq.mode", "sideways");
  ck_assert_ptr_null(kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                     sizeof(errstr)));
  ck_assert_ptr_nonnull(strstr(errstr, "sideways"));
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(test_dual_write_refused_goes_to_dlq) {
  /* A message librdkafka refuses at once (above message.max.bytes): the
   * caller still gets KMQ_OK and the message ends in the DLQ. */
  kt_unique_name(topic, sizeof(topic), "kmq-dual-refused");
  kt_unique_name(live_group, sizeof(live_group), "kmq-dual-refused");
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kt_create_topics(topic, 1, dlq_topic);
  char errstr[512];
  kmq_conf_t *pc = kmq_conf_new();
  set(pc, "bootstrap.servers", kt_bootstrap());
  set(pc, "kmq.topic", topic);
  kmq_dual_writer_t *dw =
      kmq_dual_writer_new(pc, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(dw, "%s", errstr);
  kmq_conf_destroy(pc);
  size_t big = 1200 * 1000;
  char *v = malloc(big);
  memset(v, 'x', big);
  kmq_produce_msg_t m = {.key = "wm000001", .key_len = 8, .value = v,
                         .value_len = big, .msg_id = "m-big"};
  ck_assert_int_eq(kmq_dual_write(dw, &m), KMQ_OK);
  ck_assert_int_eq(kmq_dual_write(dw, &(kmq_produce_msg_t){.key = "wm000001",
                                                           .key_len = 8,
                                                           .value = "{}",
                                                           .value_len = 2}),
                   KMQ_OK);
  ck_assert_int_eq(kmq_dual_write(dw, &(kmq_produce_msg_t){.value = "x"}),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_dual_write_flush(dw, 30000), KMQ_OK);
  kmq_dual_write_stats_t ds;
  kmq_dual_write_stats(dw, &ds);
  ck_assert_int_eq(ds.written, 2);
  ck_assert_int_eq(ds.refused, 1);
  ck_assert_int_eq(ds.queued, 1);
  ck_assert_int_eq(ds.delivered, 1);
  ck_assert_int_eq(ds.dlq, 1);
  ck_assert_int_eq(ds.lost, 0);
  kmq_dual_writer_destroy(dw);
  free(v);
  ck_assert_int_eq(dlq_records(), 1);
}
END_TEST

START_TEST(test_drill) {
  kt_unique_name(topic, sizeof(topic), "kmq-migrate");
  kt_unique_name(live_group, sizeof(live_group), "kmq-live");
  kt_unique_name(shadow_group, sizeof(shadow_group), "kmq-shadow");
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kt_create_topics(topic, 4, dlq_topic);

  char errstr[512];
  traffic_t *t = calloc(1, sizeof(*t));
  ck_assert_ptr_nonnull(t);
  atomic_init(&t->dual_from, -1);
  kmq_conf_t *pc = kmq_conf_new();
  set(pc, "bootstrap.servers", kt_bootstrap());
  set(pc, "kmq.topic", topic);
  t->dw = kmq_dual_writer_new(pc, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(t->dw, "%s", errstr);
  kmq_conf_destroy(pc);
  pthread_t th;
  pthread_create(&th, NULL, traffic_main, t);

  /* Phase 0: the existing path alone. */
  wait_at_least(&t->old_path, STEP, "phase 0 traffic");

  /* Phase 1: dual-write and the shadow. */
  seen_t *shadow = calloc(1, sizeof(*shadow));
  seen_init(shadow, 0);
  atomic_store(&t->dual, 1);
  member_t sh;
  kmq_conf_t *sc = conf_new(shadow_group);
  set(sc, "kmq.mode", "shadow");
  set(sc, "kmq.live.group.id", live_group);
  member_start(&sh, sc, shadow_verify, shadow);
  wait_at_least(&shadow->processed, STEP, "phase 1 shadow");
  /* A bad record: the shadow counts it and writes nothing. */
  rd_kafka_t *raw = kt_producer_new();
  ck_assert_int_eq(rd_kafka_producev(raw, RD_KAFKA_V_TOPIC(topic),
                                     RD_KAFKA_V_KEY("wm999999", 8),
                                     RD_KAFKA_V_VALUE("not json", 8),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_END),
                   0);
  kt_producer_done(raw);
  ck_assert(kt_wait_until(shadow_failed, sh.rt, 60000));
  kmq_runtime_metrics_t smx;
  kmq_runtime_metrics(sh.rt, &smx);
  ck_assert_int_eq(smx.dlq, 0);

  /* Phase 2: live; the shadow stops. */
  bool dual_from_set = atomic_load(&t->dual_from) >= 0;
  ck_assert(dual_from_set);
  seen_t *live = calloc(1, sizeof(*live));
  seen_init(live, atomic_load(&t->dual_from));
  member_t lv;
  member_start(&lv, conf_new(live_group), check_order, live);
  wait_at_least(&live->processed, atomic_load(&t->dual_written) + STEP,
                "phase 2 live");
  member_stop(&sh);

  /* Rollback: live consumption stops cleanly; dual-write goes on. */
  member_stop(&lv);
  long at_rollback = atomic_load(&live->processed);
  wait_at_least(&t->dual_written, atomic_load(&t->dual_written) + STEP,
                "traffic during rollback");
  ck_assert_int_eq(atomic_load(&live->processed), at_rollback);

  /* Phase 2 again: a new live runtime in the same group. */
  member_t lv2;
  member_start(&lv2, conf_new(live_group), check_order, live);
  wait_at_least(&live->processed, atomic_load(&t->dual_written) + STEP,
                "phase 2 again");
  atomic_store(&t->stop, 1);
  pthread_join(th, NULL);
  ck_assert_int_eq(kmq_dual_write_flush(t->dw, 30000), KMQ_OK);
  long total = atomic_load(&t->dual_written);
  wait_at_least(&live->processed, total, "live after the traffic stopped");
  member_stop(&lv2);
  kt_assert_committed_at_end(kt_bootstrap(), live_group, topic);

  kmq_dual_write_stats_t ds;
  kmq_dual_write_stats(t->dw, &ds);
  fprintf(stderr,
          "drill: old path %ld, dual-written %ld (from seq %d), shadow %ld, "
          "live %ld (dup %d, violations %d), delivered %lld refused %lld "
          "lost %lld\n",
          atomic_load(&t->old_path), total, atomic_load(&t->dual_from),
          atomic_load(&shadow->processed), atomic_load(&live->processed),
          atomic_load(&live->duplicates), atomic_load(&live->violations),
          (long long)ds.delivered, (long long)ds.refused, (long long)ds.lost);
  ck_assert_int_eq(atomic_load(&live->processed), total);
  ck_assert_int_eq(atomic_load(&live->duplicates), 0);
  ck_assert_int_eq(atomic_load(&live->violations), 0);
  for (int u = 0; u < USERS; u++)
    ck_assert_int_eq(live->last[u], atomic_load(&t->seq) - 1);
  ck_assert_int_eq(atomic_load(&shadow->violations), 0);
  ck_assert_int_eq(atomic_load(&shadow->duplicates), 0);
  ck_assert_int_eq(ds.written, total);
  ck_assert_int_eq(ds.delivered, total);
  ck_assert_int_eq(ds.lost, 0);
  ck_assert_int_eq(atomic_load(&t->old_path),
                   (long)atomic_load(&t->seq) * USERS);
  /* The bad record: dead-lettered once, by the live group only. */
  ck_assert_int_eq(dlq_records(), 1);
  kmq_dual_writer_destroy(t->dw);
  free(shadow);
  free(live);
  free(t);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("migrate");
  TCase *tc = tcase_create("drill");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_shadow_refuses_live_group);
  tcase_add_test(tc, test_dual_write_refused_goes_to_dlq);
  tcase_add_test(tc, test_drill);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return kt_run(suite()); }
