/* kmq_sched_top_mailboxes (the /stuck endpoint's deepest mailboxes): the
 * dispatcher samples while workers run, block and finish. Two users' first
 * items block their workers, so their later items stay queued: the sample
 * names both with exact depths, deepest first; once released and drained,
 * no mailbox is left. Also run under ThreadSanitizer (label tsan). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "kmq/sched.h"
#include "testutil.h"

typedef struct {
  kmq_sched_t *s;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int released;
  atomic_int blocked;
} ctx_t;

static int items[16];

static void run(void *opaque, kmq_sched_actor_t *actor, void *item) {
  ctx_t *c = opaque;
  /* Item 0 of "a" and item 0 of "b" hold their workers until released. */
  if (*(int *)item == 0) {
    pthread_mutex_lock(&c->lock);
    atomic_fetch_add(&c->blocked, 1);
    while (!c->released)
      pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
  }
  kmq_sched_done(c->s, actor);
}

static void cancel(void *opaque, void *item) {
  (void)opaque;
  (void)item;
}

static bool two_blocked(void *o) {
  return atomic_load(&((ctx_t *)o)->blocked) == 2;
}

static bool drained(void *o) {
  kmq_sched_stats_t st;
  kmq_sched_stats(((ctx_t *)o)->s, &st);
  return st.inflight == 0;
}

START_TEST(deepest_mailboxes_first) {
  char errstr[256];
  kmq_conf_t *conf = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(conf, "kmq.sched.workers", "2", errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ctx_t c = {.lock = PTHREAD_MUTEX_INITIALIZER,
             .cond = PTHREAD_COND_INITIALIZER};
  kmq_sched_callbacks_t cbs = {run, cancel};
  c.s = kmq_sched_new(conf, &cbs, &c, errstr, sizeof(errstr));
  ck_assert_msg(c.s, "%s", errstr);
  for (int i = 0; i < 16; i++)
    items[i] = i;
  /* "a": 5 items, "b": 3, "c": 1 (never starts: both workers are held). */
  ck_assert_int_eq(kmq_sched_submit(c.s, "a", 1, &items[0]), KMQ_OK);
  ck_assert_int_eq(kmq_sched_submit(c.s, "b", 1, &items[0]), KMQ_OK);
  ck_assert(kt_wait_until(two_blocked, &c, 10000));
  for (int i = 1; i < 5; i++)
    ck_assert_int_eq(kmq_sched_submit(c.s, "a", 1, &items[i]), KMQ_OK);
  for (int i = 1; i < 3; i++)
    ck_assert_int_eq(kmq_sched_submit(c.s, "b", 1, &items[i]), KMQ_OK);
  ck_assert_int_eq(kmq_sched_submit(c.s, "c", 1, &items[1]), KMQ_OK);

  kmq_sched_mailbox_t top[2];
  ck_assert_uint_eq(kmq_sched_top_mailboxes(c.s, top, 2), 2);
  ck_assert_str_eq(top[0].key, "a");
  ck_assert_uint_eq(top[0].depth, 5);
  ck_assert_str_eq(top[1].key, "b");
  ck_assert_uint_eq(top[1].depth, 3);
  kmq_sched_mailbox_t all[8];
  ck_assert_uint_eq(kmq_sched_top_mailboxes(c.s, all, 8), 3);
  ck_assert_str_eq(all[2].key, "c");
  ck_assert_uint_eq(all[2].depth, 1);

  pthread_mutex_lock(&c.lock);
  c.released = 1;
  pthread_cond_broadcast(&c.cond);
  pthread_mutex_unlock(&c.lock);
  ck_assert(kt_wait_until(drained, &c, 10000));
  ck_assert_uint_eq(kmq_sched_top_mailboxes(c.s, all, 8), 0);
  kmq_sched_destroy(c.s);
  kmq_conf_destroy(conf);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sched_top");
  TCase *tc = tcase_create("top");
  tcase_add_test(tc, deepest_mailboxes_first);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
