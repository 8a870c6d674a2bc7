/* Finished work survives a rebalance (issue 10, item 2), on a real broker.
 *
 * Member A finishes every record but one user's: that user's first record
 * never returns while A runs, so the partition's committed offset stays at
 * it. A leaves; the records it finished beyond that offset travel in the
 * commit's metadata, and member B, the next owner, processes only the
 * records A did not finish: nothing twice. Before this, B processed all of
 * them again. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/runtime.h"
#include "brokerutil.h"
#include "testutil.h"
#include "traffic.h"

#define USERS 20
#define PER 10
#define STUCK 0 /* user whose first record does not return on member A */

static char topic[96], group[64];

typedef struct {
  atomic_int member; /* 0: A, 1: B */
  atomic_int release;
  atomic_int processed[2];
  /* seen[member][user * PER + seq] */
  atomic_int seen[2][USERS * PER];
} app_t;

static kmq_proc_result_t proc(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                              void *opaque) {
  app_t *a = opaque;
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq) || u >= USERS || seq >= PER)
    return KMQ_PROC_FAIL;
  int m = atomic_load(&a->member);
  if (m == 0 && u == STUCK && seq == 0)
    while (!atomic_load(&a->release)) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL); /* A's processing that does not return */
    }
  atomic_fetch_add(&a->seen[m][u * PER + seq], 1);
  atomic_fetch_add(&a->processed[m], 1);
  return KMQ_PROC_OK;
}

typedef struct {
  kmq_runtime_t *rt;
  app_t *app;
} releaser_t;

static bool abandoned(void *arg) {
  kmq_consumer_stats_t st;
  kmq_consumer_stats(kmq_runtime_consumer(((releaser_t *)arg)->rt), &st);
  return st.abandoned > 0;
}

/* Lets A's stuck processing return once A's close gave up on it, so that
 * A's destroy (which waits for running processors) can finish. */
static void *releaser(void *arg) {
  releaser_t *r = arg;
  ck_assert(kt_wait_until(abandoned, r, 60000));
  atomic_store(&r->app->release, 1);
  return NULL;
}

static kmq_conf_t *conf_new(void) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", kt_bootstrap()},
      {"kmq.topic", topic},
      {"group.id", group},
      {"kmq.sched.workers", "2"},
      {"kmq.commit.interval.ms", "100"},
      /* A gives up on the stuck record after 500 ms and leaves. */
      {"kmq.close.timeout.ms", "500"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                  "%s", errstr);
  return c;
}

static bool all_done(void *arg) {
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(arg, &mx);
  return mx.processed == mx.dispatched;
}

/* One poll; in lockstep, then waits until every record dispatched so far
 * is processed, so that the next poll applies its ack before it reads. */
static void poll_once(kmq_runtime_t *rt, bool lockstep) {
  ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
  if (lockstep)
    ck_assert(kt_wait_until(all_done, rt, 10000));
}

static void poll_until(kmq_runtime_t *rt, atomic_int *n, int want,
                       bool lockstep) {
  int64_t deadline = kt_now_ms() + 60000;
  while (atomic_load(n) < want && kt_now_ms() < deadline)
    poll_once(rt, lockstep);
  ck_assert_int_eq(atomic_load(n), want);
}

/* lockstep: B reads one record per poll (kmq.poll.batch=1) and each poll
 * waits for what it dispatched. Then every finished record of the stuck
 * user moves B's committable offset over the next run of records restored
 * as finished before B has read them: those must still be skipped as
 * restored, not dropped as re-fetches (before the fix, CI saw 154 of 190
 * skipped when B's fetch came in pieces). */
static void run_case(bool lockstep) {
  char errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-meta");
  kt_unique_name(group, sizeof(group), "kmq-meta");
  kmq_conf_t *c = conf_new();
  kt_create_topics(topic, 1, NULL);
  kt_produce_traffic(topic, USERS, PER);

  app_t *app = calloc(1, sizeof(*app));
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, proc, app), KMQ_OK);

  /* A: everything but the stuck user (whose later records wait behind its
   * first one). */
  kmq_runtime_t *a = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                     sizeof(errstr));
  ck_assert_msg(a, "%s", errstr);
  poll_until(a, &app->processed[0], (USERS - 1) * PER, false);
  releaser_t r = {a, app};
  pthread_t th;
  pthread_create(&th, NULL, releaser, &r);
  kmq_runtime_destroy(a);
  pthread_join(th, NULL);
  ck_assert_int_eq(atomic_load(&app->processed[0]), (USERS - 1) * PER + 1);

  /* B, the next owner: only the stuck user's records (the first of them
   * was abandoned by A, so B runs it again: that one is A's at-least-once
   * redelivery, not finished work). */
  atomic_store(&app->member, 1);
  if (lockstep)
    ck_assert(!kmq_conf_set(c, "kmq.poll.batch", "1", errstr,
                            sizeof(errstr)));
  kmq_runtime_t *b = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                     sizeof(errstr));
  ck_assert_msg(b, "%s", errstr);
  poll_until(b, &app->processed[1], PER, lockstep);
  /* The stuck user's last record is not the partition's last: the records
   * after it may still be on their way (fetched in batches), so B polls
   * until it has seen every restored one too, or the deadline. */
  kmq_consumer_stats_t st;
  int64_t deadline = kt_now_ms() + 30000;
  for (;;) {
    kmq_consumer_stats(kmq_runtime_consumer(b), &st);
    if (st.skipped_done >= (USERS - 1) * PER || kt_now_ms() >= deadline)
      break;
    poll_once(b, lockstep);
  }
  kmq_runtime_destroy(b);
  fprintf(stderr,
          "[meta%s] B processed %d, restored %lld, skipped %lld, "
          "re-fetched %lld\n",
          lockstep ? " lockstep" : "", atomic_load(&app->processed[1]),
          (long long)st.restored, (long long)st.skipped_done,
          (long long)st.refetched);
  for (int u = 0; u < USERS; u++)
    for (int s = 0; s < PER; s++)
      ck_assert_msg(atomic_load(&app->seen[1][u * PER + s]) ==
                        (u == STUCK ? 1 : 0),
                    "user %d seq %d processed %d times by the next owner", u,
                    s, atomic_load(&app->seen[1][u * PER + s]));
  ck_assert_int_eq(st.restored, (USERS - 1) * PER);
  ck_assert_int_eq(st.skipped_done, (USERS - 1) * PER);
  ck_assert_int_eq(st.refetched, 0);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  free(app);
}

START_TEST(finished_work_is_not_processed_again) { run_case(false); }
END_TEST

START_TEST(restored_records_read_after_the_prefix_moved_are_skipped) {
  run_case(true);
}
END_TEST

int main(void) {
  Suite *s = suite_create("commit_meta_broker");
  TCase *tc = tcase_create("meta");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, finished_work_is_not_processed_again);
  tcase_add_test(tc, restored_records_read_after_the_prefix_moved_are_skipped);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
