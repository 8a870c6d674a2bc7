/* Bounded shutdown with a stuck processor (issue 10, item 3), on a real
 * broker.
 *
 * One partition, user 0's messages at offsets 0-9, user 1's at 10-19. The
 * processor never returns for user 0's message at offset 3 (SYNC: it blocks
 * its worker; ASYNC: it returns ASYNC and nobody completes it) until the
 * test releases it, after destroy. With kmq.close.timeout.ms = 1000 and
 * kmq.flush.timeout.ms = 1000, asserted:
 *   - kmq_runtime_destroy returns within the documented bound (close +
 *     flush + librdkafka's own close; 8 s here), not when the processor
 *     returns; before this change it waited for the processor forever;
 *   - the group's committed offset is exactly 3: the stuck message and
 *     what follows it are not committed;
 *   - the late outcome (released after destroy) is ignored and harms
 *     nothing (ASan: no use after free), and the runtime's remains go with
 *     it: until the release, the abandoned scheduler's workers and the
 *     closed consumer's librdkafka threads are alive; after it, none of
 *     them is (threads counted by name in /proc/self/task);
 *   - a new member of the group processes offsets 3-9 of user 0 in order
 *     and does not process user 1's finished messages again (commit
 *     metadata), and commits the end offset.
 * And a thread still inside the runtime at destroy's deadline (a fallback
 * hook that blocks, called from a worker for a record too large for its
 * dead letter): destroy returns within its bound, the runtime's remains
 * stay until the thread leaves and go then (the last one out drops the
 * owner's reference), nothing is committed.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmq/runtime.h"
#include "brokerutil.h"
#include "testutil.h"
#include "traffic.h"

#define PER_USER 10
#define STUCK_SEQ 3

static char topic[96], dlq_topic[112], group[64];

typedef struct {
  bool async;
  bool stuck_enabled;       /* the first member only */
  atomic_int processed[2];  /* per user */
  atomic_int last[2];       /* last seq per user */
  atomic_int violations;    /* order */
  atomic_int stuck_entered; /* the stuck message began */
  atomic_int released;      /* the test let it go */
  atomic_int late_returned; /* the SYNC processor returned after release */
  kmq_proc_ctx_t *_Atomic stuck_ctx;
  pthread_mutex_t lock;
  pthread_cond_t cond;
} app_t;

static kmq_proc_result_t proc(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                              void *opaque) {
  app_t *a = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq) || u < 0 || u > 1)
    return KMQ_PROC_FAIL;
  if (a->stuck_enabled && u == 0 && seq == STUCK_SEQ) {
    atomic_store(&a->stuck_entered, 1);
    if (a->async) {
      atomic_store(&a->stuck_ctx, ctx);
      return KMQ_PROC_ASYNC;
    }
    pthread_mutex_lock(&a->lock);
    while (!atomic_load(&a->released))
      pthread_cond_wait(&a->cond, &a->lock);
    pthread_mutex_unlock(&a->lock);
    atomic_store(&a->late_returned, 1);
    return KMQ_PROC_OK;
  }
  if (seq != atomic_load(&a->last[u]) + 1)
    atomic_fetch_add(&a->violations, 1);
  atomic_store(&a->last[u], seq);
  atomic_fetch_add(&a->processed[u], 1);
  return KMQ_PROC_OK;
}

static void set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[256];
  ck_assert_msg(!kmq_conf_set(c, k, v, errstr, sizeof(errstr)), "%s", errstr);
}

typedef struct {
  kmq_runtime_t *rt;
  kmq_proc_registry_t *reg;
  pthread_t th;
} member_t;

static void *member_main(void *arg) {
  member_t *m = arg;
  ck_assert_int_eq(kmq_runtime_run(m->rt), KMQ_OK);
  return NULL;
}

/* A member's conf: close bound 1 s, flush bound flush_ms. */
static kmq_conf_t *member_conf(const char *workers, const char *flush_ms) {
  kmq_conf_t *c = kmq_conf_new();
  set(c, "bootstrap.servers", kt_bootstrap());
  set(c, "kmq.topic", topic);
  set(c, "group.id", group);
  set(c, "kmq.commit.interval.ms", "50");
  set(c, "kmq.sched.workers", workers);
  set(c, "kmq.close.timeout.ms", "1000");
  set(c, "kmq.flush.timeout.ms", flush_ms);
  return c;
}

static void member_start(member_t *m, app_t *a) {
  char errstr[512];
  kmq_conf_t *c = member_conf("2", "1000");
  m->reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(m->reg, proc, a), KMQ_OK);
  m->rt = kmq_runtime_new(c, m->reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(m->rt, "%s", errstr);
  kmq_conf_destroy(c);
  pthread_create(&m->th, NULL, member_main, m);
}

static int64_t member_stop(member_t *m) {
  kmq_runtime_stop(m->rt);
  pthread_join(m->th, NULL);
  int64_t t0 = kt_now_ms();
  kmq_runtime_destroy(m->rt);
  return kt_now_ms() - t0;
}

static bool first_member_ready(void *arg) {
  app_t *a = arg;
  return atomic_load(&a->stuck_entered) &&
         atomic_load(&a->processed[0]) == STUCK_SEQ &&
         atomic_load(&a->processed[1]) == PER_USER &&
         (!a->async || atomic_load(&a->stuck_ctx) != NULL);
}

static bool second_member_done(void *arg) {
  app_t *a = arg;
  return atomic_load(&a->processed[0]) == PER_USER - STUCK_SEQ;
}

static bool late_returned(void *arg) {
  return atomic_load(&((app_t *)arg)->late_returned) != 0;
}

static bool remains_gone(void *arg) {
  (void)arg;
  return kt_threads_named("kmq-sched-") == 0 && kt_threads_named("rdk:") == 0;
}

/* The runtime's remains (its abandoned scheduler's workers, its clients'
 * librdkafka threads) go within 30 s of what they waited for. */
static void assert_remains_gone(const char *after) {
  ck_assert_msg(kt_wait_until(remains_gone, NULL, 30000),
                "after %s: %d scheduler workers, %d librdkafka threads", after,
                kt_threads_named("kmq-sched-"), kt_threads_named("rdk:"));
}

static int64_t committed_p0(void) {
  char errstr[512];
  kmq_partition_lag_t lag[4];
  int n = 4;
  kmq_conf_t *c = kmq_conf_new();
  set(c, "bootstrap.servers", kt_bootstrap());
  ck_assert_msg(kmq_admin_group_lag(c, group, topic, lag, &n, 10000, errstr,
                                    sizeof(errstr)) == KMQ_OK,
                "%s", errstr);
  kmq_conf_destroy(c);
  ck_assert_int_eq(n, 1);
  return lag[0].committed;
}

static void app_init(app_t *a, bool async) {
  memset(a, 0, sizeof(*a));
  a->async = async;
  for (int u = 0; u < 2; u++)
    atomic_init(&a->last[u], -1);
  pthread_mutex_init(&a->lock, NULL);
  pthread_cond_init(&a->cond, NULL);
}

static void stuck_case(bool async) {
  kt_unique_name(topic, sizeof(topic), async ? "kmq-shut-async" : "kmq-shut");
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kt_unique_name(group, sizeof(group), "kmq-shut");
  kt_create_topics(topic, 1, dlq_topic);
  rd_kafka_t *prod = kt_producer_new();
  for (int u = 0; u < 2; u++)
    for (int seq = 0; seq < PER_USER; seq++)
      kt_send_env(prod, topic, 0, u, seq);
  kt_producer_done(prod);

  app_t *a = calloc(1, sizeof(*a)); /* outlives the first runtime's husk */
  ck_assert_ptr_nonnull(a);
  app_init(a, async);
  a->stuck_enabled = true;
  member_t m1;
  member_start(&m1, a);
  ck_assert_msg(kt_wait_until(first_member_ready, a, 60000),
                "stuck %d, user 0 %d, user 1 %d",
                atomic_load(&a->stuck_entered),
                atomic_load(&a->processed[0]),
                atomic_load(&a->processed[1]));
  int64_t took = member_stop(&m1);
  ck_assert_msg(took < 8000, "destroy took %lld ms with a stuck processor",
                (long long)took);
  ck_assert_msg(took >= 900, "destroy took only %lld ms: it did not wait "
                "for the stuck processor", (long long)took);
  ck_assert_int_eq(committed_p0(), STUCK_SEQ);
  ck_assert_int_gt(kt_threads_named("kmq-sched-"), 0);
  ck_assert_int_gt(kt_threads_named("rdk:"), 0);

  /* The late outcome: OK, after the runtime is gone. */
  atomic_store(&a->released, 1);
  if (async) {
    ck_assert_int_eq(kmq_proc_ctx_complete(atomic_load(&a->stuck_ctx),
                                           KMQ_PROC_OK),
                     KMQ_OK);
  } else {
    pthread_mutex_lock(&a->lock);
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    ck_assert(kt_wait_until(late_returned, a, 10000));
  }
  assert_remains_gone("the late outcome");
  ck_assert_int_eq(committed_p0(), STUCK_SEQ);
  ck_assert_int_eq(atomic_load(&a->violations), 0);

  /* The next member redoes 3-9 of user 0 in order, not user 1. */
  app_t *b = calloc(1, sizeof(*b));
  ck_assert_ptr_nonnull(b);
  app_init(b, async);
  atomic_store(&b->last[0], STUCK_SEQ - 1);
  member_t m2;
  member_start(&m2, b);
  ck_assert_msg(kt_wait_until(second_member_done, b, 60000),
                "second member: user 0 %d of %d",
                atomic_load(&b->processed[0]), PER_USER - STUCK_SEQ);
  member_stop(&m2); /* commits what it finished */
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  ck_assert_int_eq(atomic_load(&b->violations), 0);
  ck_assert_int_eq(atomic_load(&b->processed[1]), 0);
  kmq_proc_registry_destroy(m2.reg);
  kmq_proc_registry_destroy(m1.reg);
  /* The first runtime's late job no longer reads a or its registry. */
  free(a);
  free(b);
}

START_TEST(test_stuck_sync_processor) { stuck_case(false); }
END_TEST

START_TEST(test_stuck_async_processor) { stuck_case(true); }
END_TEST

/* ---- a thread still inside the runtime at destroy's deadline ---- */

/* A record too large for its dead letter (escaped twofold) goes to the
 * fallback hook from inside the runtime (kmq_dlq_send, on the worker). */
#define BIG 990000 /* over kmq.msg.max.bytes, under message.max.bytes */

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  atomic_int in_hook, released, returned;
} hook_t;

/* Blocks until released. @locality the worker, inside the runtime */
static kmq_err_t stuck_hook(const kmq_fallback_record_t *rec, void *opaque) {
  (void)rec;
  hook_t *h = opaque;
  atomic_store(&h->in_hook, 1);
  pthread_mutex_lock(&h->lock);
  while (!atomic_load(&h->released))
    pthread_cond_wait(&h->cond, &h->lock);
  pthread_mutex_unlock(&h->lock);
  atomic_store(&h->returned, 1);
  return KMQ_OK; /* stored: too late, the runtime is gone */
}

static kmq_proc_result_t never_called(const kmq_chat_msg_t *msg,
                                      kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)ctx;
  atomic_store((atomic_int *)opaque, 1);
  return KMQ_PROC_OK;
}

static bool in_hook(void *arg) { return atomic_load(&((hook_t *)arg)->in_hook); }

static bool hook_returned(void *arg) {
  return atomic_load(&((hook_t *)arg)->returned) != 0;
}

/* The fallback hook blocks while destroy runs: destroy returns within its
 * bound (close + flush) with the worker still inside; the runtime, its
 * consumer and its DLQ stay until that thread leaves, then go (the last
 * thread out drops the owner's reference: ASan sees no leak and no use
 * after free); nothing is committed for the record. */
START_TEST(test_thread_inside_at_deadline) {
  kt_unique_name(topic, sizeof(topic), "kmq-shut-hook");
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kt_unique_name(group, sizeof(group), "kmq-shut-hook");
  kt_create_topics(topic, 1, dlq_topic);
  kt_produce_quotes(topic, "big-user", BIG);

  hook_t *h = calloc(1, sizeof(*h)); /* outlives the runtime's husk */
  ck_assert_ptr_nonnull(h);
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->cond, NULL);
  atomic_int called = 0;
  char errstr[512];
  kmq_conf_t *c = member_conf("1", "500");
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, never_called, &called), KMQ_OK);
  member_t m = {0};
  m.reg = reg;
  m.rt = kmq_runtime_new(c, reg, stuck_hook, h, errstr, sizeof(errstr));
  ck_assert_msg(m.rt, "%s", errstr);
  kmq_conf_destroy(c);
  pthread_create(&m.th, NULL, member_main, &m);
  ck_assert_msg(kt_wait_until(in_hook, h, 60000), "the hook was not called");

  int64_t took = member_stop(&m);
  ck_assert_msg(took < 8000, "destroy took %lld ms with a thread inside",
                (long long)took);
  ck_assert_msg(took >= 1400, "destroy took only %lld ms: it did not wait "
                "for the thread inside", (long long)took);
  ck_assert(!atomic_load(&h->returned));
  /* Kept for the thread inside: its DLQ and consumer (librdkafka threads),
   * its abandoned scheduler's worker. */
  ck_assert_int_gt(kt_threads_named("rdk:"), 0);
  ck_assert_int_gt(kt_threads_named("kmq-sched-"), 0);
  ck_assert_int_lt(committed_p0(), 1);

  pthread_mutex_lock(&h->lock);
  atomic_store(&h->released, 1);
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
  ck_assert(kt_wait_until(hook_returned, h, 10000));
  assert_remains_gone("the thread left");
  ck_assert_int_lt(committed_p0(), 1);
  ck_assert_int_eq(atomic_load(&called), 0);
  kmq_proc_registry_destroy(reg);
  pthread_mutex_destroy(&h->lock);
  pthread_cond_destroy(&h->cond);
  free(h);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("shutdown");
  TCase *tc = tcase_create("stuck");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, test_stuck_sync_processor);
  tcase_add_test(tc, test_stuck_async_processor);
  tcase_add_test(tc, test_thread_inside_at_deadline);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return kt_run(suite()); }
