/* Scheduler unit suite: per-key order and exclusion, asynchronous
 * completion, backpressure bounds, idle reclaim and slot reuse,
 * cancellation, shutdown, retry timers. Runs under TSan and ASan as well.
 *
 * check.h and ck_ring.h come first, together: libcheck's ck_* names and
 * Concurrency Kit's must not clash. */
#include <check.h>
#include <ck_ring.h>

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kmq/conf.h"
#include "kmq/sched.h"
#include "testutil.h"

#define T_WAIT_MS 120000 /* deadline for any condition (TSan is slow) */

/* ---- fixture ---- */

typedef enum {
  T_SYNC,  /* run: check, spin, done on the worker */
  T_ASYNC, /* run: check, hand to a completer thread that spins and dones */
  T_HOLD,  /* run: check, park; the test thread calls done (t_release) */
} t_mode_t;

typedef struct t_item_s {
  uint32_t key; /* index in c->keys */
  uint32_t seq; /* position among its key's items */
  int partition;
  bool blocker; /* blocks its worker until c->blocker_go */
  /* Retries planned: instead of its done, the item's first `retries`
   * completions (T_SYNC, T_ASYNC) call kmq_sched_retry_after(retry_ms). */
  int retries;
  int64_t retry_ms;
  _Atomic int retried;
  _Atomic int64_t armed_ns; /* clock at the latest retry_after */
  _Atomic int64_t early;    /* runs that came before armed + retry_ms */
  _Atomic int runs;
  _Atomic int cancels;
  _Atomic(kmq_sched_actor_t *) token; /* set by run (async/hold) */
  struct t_item_s *next;              /* completer queue */
} t_item_t;

typedef struct t_key_s {
  char name[128];
  size_t len;
  _Atomic int running; /* an item of this key is between run and done */
  /* Plain on purpose: only the key's current runner touches it, so TSan
   * checks that the scheduler orders one runner before the next. */
  uint32_t next_seq;
} t_key_t;

typedef struct t_ctx_s {
  kmq_sched_t *s;
  t_mode_t mode;
  bool strict; /* seq must be next_seq exactly (no cancellations) */
  t_key_t *keys;
  uint32_t nkeys;
  uint32_t per_key;
  t_item_t *items;
  size_t nitems;
  t_item_t blocker;
  _Atomic int blocker_running;
  _Atomic int blocker_go;

  /* Items in the order their run began (non-blockers), for the priority
   * test; nran counts them all, ran keeps the first ran_cap. */
  t_item_t **ran;
  size_t ran_cap;
  _Atomic size_t nran;

  _Atomic uint64_t run_cnt;
  _Atomic uint64_t done_cnt; /* kmq_sched_done returned OK */
  _Atomic uint64_t cancel_cnt;
  _Atomic uint64_t violations;
  uint64_t bp_seen; /* test (dispatcher) thread only */

  /* T_ASYNC completers */
  pthread_mutex_t qlock;
  pthread_cond_t qcond;
  t_item_t *qhead, *qtail;
  bool qstop;
  pthread_t completers[2];
  int ncompleters;
} t_ctx_t;

static void t_violation(t_ctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (atomic_fetch_add(&c->violations, 1) < 10) {
    fprintf(stderr, "violation: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
  }
  va_end(ap);
}

/* Cheap deterministic busy-work (0..~2000 iterations) instead of sleeps. */
static void t_spin(uint32_t h) {
  h = (h ^ 0x9e3779b9u) * 2654435761u;
  h ^= h >> 15;
  unsigned n = (h & 127u) * 16u;
  for (volatile unsigned i = 0; i < n; i++)
    ;
}

static t_key_t *t_key_of(t_ctx_t *c, const t_item_t *it) {
  return &c->keys[it->key];
}

/* Order and exclusion checks at the start of an item's run. */
static void t_enter(t_ctx_t *c, kmq_sched_actor_t *actor, t_item_t *it) {
  t_key_t *k = t_key_of(c, it);
  size_t klen;
  const void *kp = kmq_sched_actor_key(actor, &klen);
  if (klen != k->len || memcmp(kp, k->name, klen) != 0)
    t_violation(c, "key %s: actor has the wrong key", k->name);
  if (atomic_exchange(&k->running, 1) != 0)
    t_violation(c, "key %s: two items running at once", k->name);
  if (c->strict ? it->seq != k->next_seq : it->seq < k->next_seq)
    t_violation(c, "key %s: seq %u ran, expected %s%u", k->name, it->seq,
                c->strict ? "" : ">= ", k->next_seq);
  k->next_seq = it->seq + 1;
}

static int64_t t_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Puts a running item back for delay_ms, as its token holder. The key's
 * order checks expect the same item again: next_seq goes back to it
 * before the hand-off, which must order it before the re-run (TSan). */
static void t_retry(t_ctx_t *c, kmq_sched_actor_t *actor, t_item_t *it,
                    int64_t delay_ms) {
  t_key_t *k = t_key_of(c, it);
  k->next_seq = it->seq;
  atomic_store(&k->running, 0);
  atomic_store(&it->token, NULL);
  atomic_store(&it->armed_ns, t_now_ns());
  kmq_err_t err = kmq_sched_retry_after(c->s, actor, it, delay_ms);
  if (err != KMQ_OK)
    t_violation(c, "retry_after: %s", kmq_err_name(err));
}

/* End of an item's run: a planned retry, or clear the flag first (the next
 * item may start as soon as done is called), then acknowledge. */
static void t_leave(t_ctx_t *c, kmq_sched_actor_t *actor, t_item_t *it) {
  if (atomic_load(&it->retried) < it->retries) {
    atomic_fetch_add(&it->retried, 1);
    t_retry(c, actor, it, it->retry_ms);
    return;
  }
  atomic_store(&t_key_of(c, it)->running, 0);
  kmq_err_t err = kmq_sched_done(c->s, actor);
  if (err != KMQ_OK)
    t_violation(c, "done: %s", kmq_err_name(err));
  else
    atomic_fetch_add(&c->done_cnt, 1);
}

static void t_run(void *opaque, kmq_sched_actor_t *actor, void *vitem) {
  t_ctx_t *c = opaque;
  t_item_t *it = vitem;
  int runs = atomic_fetch_add(&it->runs, 1);
  if (runs != 0) {
    /* A retry: never before its delay (a lower bound the scheduler
     * guarantees; nothing is asserted on how late it comes). */
    int64_t armed = atomic_load(&it->armed_ns);
    if (armed == 0)
      t_violation(c, "item ran twice");
    else if (t_now_ns() - armed < it->retry_ms * 1000000)
      atomic_fetch_add(&it->early, 1);
  }
  atomic_fetch_add(&c->run_cnt, 1);
  if (it->blocker) {
    atomic_store(&c->blocker_running, 1);
    int64_t deadline = kt_now_ms() + T_WAIT_MS;
    while (!atomic_load(&c->blocker_go) && kt_now_ms() < deadline)
      sched_yield();
    if (kmq_sched_done(c->s, actor) != KMQ_OK)
      t_violation(c, "blocker done failed");
    atomic_fetch_add(&c->done_cnt, 1);
    return;
  }
  t_enter(c, actor, it);
  size_t at = atomic_fetch_add(&c->nran, 1);
  if (at < c->ran_cap)
    c->ran[at] = it;
  switch (c->mode) {
  case T_SYNC:
    t_spin(it->key * 131u + it->seq);
    t_leave(c, actor, it);
    break;
  case T_ASYNC:
    atomic_store(&it->token, actor);
    pthread_mutex_lock(&c->qlock);
    it->next = NULL;
    if (c->qtail)
      c->qtail->next = it;
    else
      c->qhead = it;
    c->qtail = it;
    pthread_cond_signal(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
    break;
  case T_HOLD:
    atomic_store(&it->token, actor);
    break;
  }
}

static void t_cancel(void *opaque, void *vitem) {
  t_ctx_t *c = opaque;
  t_item_t *it = vitem;
  if (atomic_fetch_add(&it->cancels, 1) != 0)
    t_violation(c, "item cancelled twice");
  atomic_fetch_add(&c->cancel_cnt, 1);
}

static void *t_completer(void *arg) {
  t_ctx_t *c = arg;
  pthread_mutex_lock(&c->qlock);
  for (;;) {
    while (c->qhead == NULL && !c->qstop)
      pthread_cond_wait(&c->qcond, &c->qlock);
    if (c->qhead == NULL)
      break;
    t_item_t *it = c->qhead;
    c->qhead = it->next;
    if (c->qhead == NULL)
      c->qtail = NULL;
    pthread_mutex_unlock(&c->qlock);
    t_spin(it->key * 7919u + it->seq);
    t_leave(c, atomic_load(&it->token), it);
    pthread_mutex_lock(&c->qlock);
  }
  pthread_mutex_unlock(&c->qlock);
  return NULL;
}

static const kmq_sched_callbacks_t t_cbs = {.run = t_run, .cancel = t_cancel};

/* nkeys keys "<prefix>-<i>" with per_key items each, items[key*per_key+seq].
 */
static t_ctx_t *t_ctx_new(t_mode_t mode, bool strict, const char *prefix,
                          uint32_t nkeys, uint32_t per_key) {
  t_ctx_t *c = calloc(1, sizeof(*c));
  ck_assert_ptr_nonnull(c);
  c->mode = mode;
  c->strict = strict;
  c->nkeys = nkeys;
  c->per_key = per_key;
  c->keys = calloc(nkeys, sizeof(*c->keys));
  c->nitems = (size_t)nkeys * per_key;
  c->items = calloc(c->nitems ? c->nitems : 1, sizeof(*c->items));
  ck_assert(c->keys && c->items);
  for (uint32_t k = 0; k < nkeys; k++) {
    t_key_t *key = &c->keys[k];
    key->len = (size_t)snprintf(key->name, sizeof(key->name), "%s-%u",
                                prefix, k);
    for (uint32_t q = 0; q < per_key; q++) {
      c->items[(size_t)k * per_key + q].key = k;
      c->items[(size_t)k * per_key + q].seq = q;
    }
  }
  c->blocker.blocker = true;
  pthread_mutex_init(&c->qlock, NULL);
  pthread_cond_init(&c->qcond, NULL);
  if (mode == T_ASYNC) {
    c->ncompleters = 2;
    for (int i = 0; i < c->ncompleters; i++)
      ck_assert_int_eq(
          pthread_create(&c->completers[i], NULL, t_completer, c), 0);
  }
  return c;
}

/* Creates the scheduler from NULL-terminated name/value pairs. */
static void t_ctx_start(t_ctx_t *c, const char *const *kv) {
  char errstr[256];
  kmq_conf_t *conf = kmq_conf_new();
  ck_assert_ptr_nonnull(conf);
  for (; kv[0] != NULL; kv += 2)
    ck_assert_msg(kmq_conf_set(conf, kv[0], kv[1], errstr, sizeof(errstr)) ==
                      KMQ_OK,
                  "%s=%s: %s", kv[0], kv[1], errstr);
  c->s = kmq_sched_new(conf, &t_cbs, c, errstr, sizeof(errstr));
  ck_assert_msg(c->s != NULL, "kmq_sched_new: %s", errstr);
  kmq_conf_destroy(conf); /* the scheduler keeps no reference */
}

static void t_completers_stop(t_ctx_t *c) {
  pthread_mutex_lock(&c->qlock);
  c->qstop = true;
  pthread_cond_broadcast(&c->qcond);
  pthread_mutex_unlock(&c->qlock);
  for (int i = 0; i < c->ncompleters; i++)
    pthread_join(c->completers[i], NULL);
  c->ncompleters = 0;
}

static void t_ctx_free(t_ctx_t *c) {
  kmq_sched_destroy(c->s);
  t_completers_stop(c);
  pthread_cond_destroy(&c->qcond);
  pthread_mutex_destroy(&c->qlock);
  free(c->ran);
  free(c->items);
  free(c->keys);
  free(c);
}

static t_item_t *t_item(t_ctx_t *c, uint32_t key, uint32_t seq) {
  return &c->items[(size_t)key * c->per_key + seq];
}

typedef struct {
  t_ctx_t *c;
  const t_key_t *k;
} t_accept_arg_t;

static bool t_can_accept(void *o) {
  t_accept_arg_t *a = o;
  return kmq_sched_can_accept(a->c->s, a->k->name, a->k->len);
}

/* Submits, waiting for capacity on backpressure. @locality test thread */
static void t_submit(t_ctx_t *c, t_item_t *it) {
  const t_key_t *k = it->blocker ? NULL : t_key_of(c, it);
  const char *name = k ? k->name : "blocker";
  size_t len = k ? k->len : strlen("blocker");
  for (;;) {
    kmq_err_t err = kmq_sched_submit(c->s, name, len, it);
    if (err == KMQ_OK)
      return;
    ck_assert_msg(err == KMQ_ERR_BACKPRESSURE, "submit: %s",
                  kmq_err_name(err));
    c->bp_seen++;
    if (k == NULL) {
      ck_assert_msg(0, "blocker refused");
    }
    t_accept_arg_t a = {c, k};
    ck_assert_msg(kt_wait_until(t_can_accept, &a, T_WAIT_MS),
                  "no capacity for %s", name);
  }
}

static kmq_err_t t_try_submit(t_ctx_t *c, t_item_t *it) {
  const t_key_t *k = t_key_of(c, it);
  return kmq_sched_submit(c->s, k->name, k->len, it);
}

static bool t_accepts(t_ctx_t *c, uint32_t key) {
  return kmq_sched_can_accept(c->s, c->keys[key].name, c->keys[key].len);
}

typedef struct {
  t_ctx_t *c;
  uint64_t n;
} t_count_arg_t;

static bool t_finished_ge(void *o) {
  t_count_arg_t *a = o;
  return atomic_load(&a->c->done_cnt) + atomic_load(&a->c->cancel_cnt) >=
         a->n;
}

static bool t_cancelled_ge(void *o) {
  t_count_arg_t *a = o;
  return atomic_load(&a->c->cancel_cnt) >= a->n;
}

static void t_wait_finished(t_ctx_t *c, uint64_t n) {
  t_count_arg_t a = {c, n};
  ck_assert_msg(kt_wait_until(t_finished_ge, &a, T_WAIT_MS),
                "only %llu of %llu items finished",
                (unsigned long long)(atomic_load(&c->done_cnt) +
                                     atomic_load(&c->cancel_cnt)),
                (unsigned long long)n);
}

static bool t_item_started(void *o) {
  return atomic_load(&((t_item_t *)o)->token) != NULL;
}

static bool t_blocker_running(void *o) {
  return atomic_load(&((t_ctx_t *)o)->blocker_running) != 0;
}

/* T_HOLD: waits until it runs, then acknowledges it from this thread. */
static void t_release(t_ctx_t *c, t_item_t *it) {
  ck_assert_msg(kt_wait_until(t_item_started, it, T_WAIT_MS),
                "item %u/%u never ran", it->key, it->seq);
  t_leave(c, atomic_load(&it->token), it);
}

static kmq_sched_stats_t t_stats(t_ctx_t *c) {
  kmq_sched_stats_t st;
  kmq_sched_stats(c->s, &st);
  return st;
}

/* ---- per-key order ---- */

/* 1000 keys x 100 items, submitted round-robin across keys from this
 * thread (the dispatcher); 4 workers; mode decides who calls done. With
 * retries, every 7th item is put back twice for 0-2 ms (by the worker in
 * T_SYNC, by a completer thread in T_ASYNC) and must still run in its
 * key's order, exactly when its turn comes. */
static void t_order_case(t_mode_t mode, bool retries) {
  const uint32_t nkeys = 1000, per_key = 100;
  t_ctx_t *c = t_ctx_new(mode, true, "user", nkeys, per_key);
  uint64_t nretries = 0;
  for (size_t i = 0; retries && i < c->nitems; i += 7) {
    c->items[i].retries = 2;
    c->items[i].retry_ms = (int64_t)(i % 3);
    nretries += 2;
  }
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "4",
                                       "kmq.sched.mailbox.size", "16",
                                       "kmq.max.inflight", "2000", NULL});
  for (uint32_t q = 0; q < per_key; q++)
    for (uint32_t k = 0; k < nkeys; k++)
      t_submit(c, t_item(c, k, q));
  t_wait_finished(c, c->nitems);

  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  for (uint32_t k = 0; k < nkeys; k++)
    ck_assert_uint_eq(c->keys[k].next_seq, per_key);
  for (size_t i = 0; i < c->nitems; i++) {
    ck_assert_int_eq(atomic_load(&c->items[i].runs),
                     1 + c->items[i].retries);
    ck_assert_int_eq(atomic_load(&c->items[i].early), 0);
    ck_assert_int_eq(atomic_load(&c->items[i].cancels), 0);
  }
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.retries, nretries);
  ck_assert_uint_eq(st.timers, 0);
  ck_assert_uint_eq(st.submitted, c->nitems);
  ck_assert_uint_eq(st.run, c->nitems);
  ck_assert_uint_eq(st.completed, c->nitems);
  ck_assert_uint_eq(st.cancelled, 0);
  ck_assert_uint_eq(st.inflight, 0);
  ck_assert_uint_eq(st.actors_live, nkeys);
  ck_assert_uint_eq(st.actors_created, nkeys);
  ck_assert_uint_eq(st.backpressure, c->bp_seen);
  ck_assert_uint_le(st.mailbox_depth_max, 15);
  ck_assert_uint_eq(st.workers, 4);
  t_ctx_free(c);
}

START_TEST(test_order_sync) { t_order_case(T_SYNC, false); }
END_TEST

START_TEST(test_order_async) { t_order_case(T_ASYNC, false); }
END_TEST

START_TEST(test_retry_order_sync) { t_order_case(T_SYNC, true); }
END_TEST

START_TEST(test_retry_order_async) { t_order_case(T_ASYNC, true); }
END_TEST

/* ---- backpressure ---- */

START_TEST(test_bp_mailbox) {
  /* keys: 0 = "a" (5 items), 1 = "b" (1 item used) */
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "bp", 2, 5);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1",
                                       "kmq.sched.mailbox.size", "4", NULL});
  ck_assert_uint_eq(t_stats(c).mailbox_capacity, 3);

  t_submit(c, t_item(c, 0, 0));
  ck_assert(kt_wait_until(t_item_started, t_item(c, 0, 0), T_WAIT_MS));
  /* a0 runs (held); a1..a3 fill the mailbox (capacity 3). */
  for (uint32_t q = 1; q <= 3; q++)
    ck_assert_int_eq(t_try_submit(c, t_item(c, 0, q)), KMQ_OK);
  ck_assert(!t_accepts(c, 0));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 0, 4)), KMQ_ERR_BACKPRESSURE);
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.backpressure, 1);
  ck_assert_uint_eq(st.mailbox_depth_max, 3);
  ck_assert_uint_eq(st.submitted, 4);
  ck_assert_uint_eq(st.inflight, 4);
  /* Another key is not affected. */
  ck_assert(t_accepts(c, 1));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 1, 0)), KMQ_OK);

  t_release(c, t_item(c, 0, 0)); /* a1 starts, a mailbox slot frees */
  ck_assert(kt_wait_until(t_item_started, t_item(c, 0, 1), T_WAIT_MS));
  ck_assert(t_accepts(c, 0));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 0, 4)), KMQ_OK);
  t_release(c, t_item(c, 1, 0));
  for (uint32_t q = 1; q <= 4; q++)
    t_release(c, t_item(c, 0, q));
  t_wait_finished(c, 6);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  ck_assert_uint_eq(c->keys[0].next_seq, 5);
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 4)->runs), 1);
  t_ctx_free(c);
}
END_TEST

START_TEST(test_bp_inflight) {
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "inf", 17, 1);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2",
                                       "kmq.max.inflight", "16", NULL});
  for (uint32_t k = 0; k < 16; k++)
    ck_assert_int_eq(t_try_submit(c, t_item(c, k, 0)), KMQ_OK);
  ck_assert(!t_accepts(c, 16));
  ck_assert(!t_accepts(c, 0)); /* the bound is global */
  ck_assert_int_eq(t_try_submit(c, t_item(c, 16, 0)), KMQ_ERR_BACKPRESSURE);
  ck_assert_uint_eq(t_stats(c).inflight, 16);
  ck_assert_uint_eq(t_stats(c).actors_live, 16); /* no actor for a refusal */

  t_release(c, t_item(c, 3, 0));
  ck_assert(t_accepts(c, 16));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 16, 0)), KMQ_OK);
  for (uint32_t k = 0; k < 17; k++)
    if (k != 3)
      t_release(c, t_item(c, k, 0));
  t_wait_finished(c, 17);
  ck_assert_uint_eq(t_stats(c).inflight, 0);
  ck_assert_uint_eq(t_stats(c).backpressure, 1);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

START_TEST(test_bp_actors) {
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "act", 17, 2);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2",
                                       "kmq.sched.max.actors", "16",
                                       "kmq.sched.idle.ms", "0", NULL});
  for (uint32_t k = 0; k < 16; k++)
    ck_assert_int_eq(t_try_submit(c, t_item(c, k, 0)), KMQ_OK);
  ck_assert(!t_accepts(c, 16));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 16, 0)), KMQ_ERR_BACKPRESSURE);
  /* A key that has an actor still gets in. */
  ck_assert(t_accepts(c, 0));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 0, 1)), KMQ_OK);
  for (uint32_t k = 0; k < 16; k++)
    t_release(c, t_item(c, k, 0));
  t_release(c, t_item(c, 0, 1));
  t_wait_finished(c, 17);
  /* Completion alone frees nothing: the bound is on live actors. */
  ck_assert(!t_accepts(c, 16));
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, kt_now_ms()), 16);
  ck_assert_uint_eq(t_stats(c).actors_live, 0);
  ck_assert(t_accepts(c, 16));
  ck_assert_int_eq(t_try_submit(c, t_item(c, 16, 0)), KMQ_OK);
  t_release(c, t_item(c, 16, 0));
  t_wait_finished(c, 18);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

/* ---- idle reclaim ---- */

START_TEST(test_reclaim_100k) {
  const uint32_t wave = 100000;
  /* keys [0, wave) first wave, [wave, 2*wave) second wave */
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "u", 2 * wave, 1);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2",
                                       "kmq.sched.mailbox.size", "2",
                                       "kmq.sched.idle.ms", "0",
                                       "kmq.max.inflight", "1048576", NULL});
  for (uint32_t k = 0; k < wave; k++)
    t_submit(c, t_item(c, k, 0));
  t_wait_finished(c, wave);
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.actors_live, wave);
  ck_assert_uint_eq(st.actors_created, wave);
  uint64_t slots = st.actor_slots;
  ck_assert_uint_ge(slots, wave);
  ck_assert_uint_lt(slots, wave + 64); /* one slab chunk of slack at most */

  ck_assert_uint_eq(kmq_sched_reclaim(c->s, kt_now_ms()), wave);
  st = t_stats(c);
  ck_assert_uint_eq(st.actors_live, 0);
  ck_assert_uint_eq(st.actors_reclaimed, wave);
  ck_assert_uint_eq(st.actor_slots, slots);

  for (uint32_t k = wave; k < 2 * wave; k++)
    t_submit(c, t_item(c, k, 0));
  t_wait_finished(c, 2 * wave);
  st = t_stats(c);
  ck_assert_uint_eq(st.actors_live, wave);
  ck_assert_uint_eq(st.actors_created, 2 * wave);
  ck_assert_uint_eq(st.actor_slots, slots); /* reused, not grown */
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, kt_now_ms()), wave);
  st = t_stats(c);
  ck_assert_uint_eq(st.actors_live, 0);
  ck_assert_uint_eq(st.actor_slots, slots);
  ck_assert_uint_eq(st.completed, 2 * wave);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

START_TEST(test_reclaim_idle_ms) {
  /* Synthetic dispatcher clock: no waiting on real time. */
  const int64_t T = 1000000;
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "idle", 2, 2);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2",
                                       "kmq.sched.idle.ms", "1000", NULL});
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, T), 0);
  t_submit(c, t_item(c, 0, 0));
  t_submit(c, t_item(c, 1, 0));
  t_release(c, t_item(c, 1, 0)); /* key 1 idle, key 0 busy */
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, T + 999), 0);
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, T + 1000), 1);
  ck_assert_uint_eq(t_stats(c).actors_live, 1);
  /* Key 0 was busy at T + 1000: its idle time restarts there. */
  t_release(c, t_item(c, 0, 0));
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, T + 1999), 0);
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, T + 2000), 1);
  ck_assert_uint_eq(t_stats(c).actors_live, 0);
  /* A reclaimed key comes back as a fresh actor, in order. */
  t_submit(c, t_item(c, 1, 1));
  t_release(c, t_item(c, 1, 1));
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.actors_created, 3);
  ck_assert_uint_eq(st.actors_reclaimed, 2);
  ck_assert_uint_eq(c->keys[1].next_seq, 2);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

/* ---- cancellation ---- */

typedef struct {
  t_ctx_t *c;
  int partition;
  _Atomic int freed;
  _Atomic int calls;
} t_filter_t;

static bool t_pred_partition(void *vitem, void *arg) {
  t_filter_t *f = arg;
  if (atomic_load(&f->freed))
    t_violation(f->c, "predicate called after arg_free");
  atomic_fetch_add(&f->calls, 1);
  return ((t_item_t *)vitem)->partition == f->partition;
}

static void t_filter_free(void *arg) {
  t_filter_t *f = arg;
  atomic_fetch_add(&f->freed, 1);
}

START_TEST(test_cancel_partition) {
  /* key 0 = "u": u0(p2) u1(p1) u2(p2) u3(p1) u4(p2) u5(p1, after cancel)
   * key 1 = "w": w0(p1) w1(p1) */
  t_ctx_t *c = t_ctx_new(T_HOLD, false, "cx", 2, 6);
  static const int parts[2][6] = {{2, 1, 2, 1, 2, 1}, {1, 1, 0, 0, 0, 0}};
  for (uint32_t k = 0; k < 2; k++)
    for (uint32_t q = 0; q < 6; q++)
      t_item(c, k, q)->partition = parts[k][q];
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1", NULL});

  /* u0 running (held: u is blocked); then the only worker is blocked so
   * that w's items stay queued on an actor that is not running. */
  t_submit(c, t_item(c, 0, 0));
  ck_assert(kt_wait_until(t_item_started, t_item(c, 0, 0), T_WAIT_MS));
  t_submit(c, &c->blocker);
  ck_assert(kt_wait_until(t_blocker_running, c, T_WAIT_MS));
  for (uint32_t q = 1; q <= 4; q++)
    t_submit(c, t_item(c, 0, q));
  t_submit(c, t_item(c, 1, 0));
  t_submit(c, t_item(c, 1, 1));

  t_filter_t f = {.c = c, .partition = 1};
  ck_assert_int_eq(kmq_sched_cancel_if(c->s, t_pred_partition, &f,
                                       t_filter_free),
                   KMQ_OK);
  /* Submitted after the cancellation: never tested, runs. */
  t_submit(c, t_item(c, 0, 5));
  atomic_store(&c->blocker_go, 1);

  /* w's items are cancelled promptly although u is still blocked. */
  t_count_arg_t two = {c, 2};
  ck_assert(kt_wait_until(t_cancelled_ge, &two, T_WAIT_MS));
  ck_assert_int_eq(atomic_load(&t_item(c, 1, 0)->cancels), 1);
  ck_assert_int_eq(atomic_load(&t_item(c, 1, 1)->cancels), 1);
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 1)->cancels), 0);
  ck_assert_int_eq(atomic_load(&f.freed), 0); /* u1..u4 still queued */

  /* Unblock u: p1 items go to cancel, p2 ones run in order, then u5. */
  t_release(c, t_item(c, 0, 0));
  t_release(c, t_item(c, 0, 2));
  t_release(c, t_item(c, 0, 4));
  t_release(c, t_item(c, 0, 5));
  t_wait_finished(c, 9); /* 6 of u, 2 of w, the blocker */

  static const int ran[2][6] = {{1, 0, 1, 0, 1, 1}, {0, 0, 0, 0, 0, 0}};
  for (uint32_t k = 0; k < 2; k++)
    for (uint32_t q = 0; q < (k == 0 ? 6u : 2u); q++) {
      ck_assert_int_eq(atomic_load(&t_item(c, k, q)->runs), ran[k][q]);
      ck_assert_int_eq(atomic_load(&t_item(c, k, q)->cancels), !ran[k][q]);
    }
  ck_assert_uint_eq(c->keys[0].next_seq, 6);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  ck_assert_uint_eq(t_stats(c).cancelled, 4);
  ck_assert_uint_eq(t_stats(c).inflight, 0);
  ck_assert_int_gt(atomic_load(&f.calls), 0);

  /* Nothing queued from before the cancellation: released on the next
   * dispatcher call, exactly once. */
  kmq_sched_reclaim(c->s, kt_now_ms());
  ck_assert_int_eq(atomic_load(&f.freed), 1);

  /* With nothing queued, a cancellation is released at once. */
  t_filter_t g = {.c = c, .partition = 2};
  ck_assert_int_eq(kmq_sched_cancel_if(c->s, t_pred_partition, &g,
                                       t_filter_free),
                   KMQ_OK);
  ck_assert_int_eq(atomic_load(&g.freed), 1);
  ck_assert_int_eq(atomic_load(&g.calls), 0);
  ck_assert_int_eq(kmq_sched_cancel_if(c->s, NULL, &g, NULL),
                   KMQ_ERR_INVALID_ARG);
  t_ctx_free(c);
  ck_assert_int_eq(atomic_load(&f.freed), 1);
}
END_TEST

static bool t_pred_all(void *vitem, void *arg) {
  (void)vitem;
  (void)arg;
  return true;
}

START_TEST(test_cancel_concurrent) {
  /* Cancellations racing with running workers: every item is run xor
   * cancelled, order holds for what runs, all filters get released. */
  const uint32_t nkeys = 200, per_key = 50;
  t_ctx_t *c = t_ctx_new(T_ASYNC, false, "cc", nkeys, per_key);
  for (size_t i = 0; i < c->nitems; i++)
    c->items[i].partition = (int)(i % 3);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "4",
                                       "kmq.sched.mailbox.size", "64",
                                       "kmq.max.inflight", "4000", NULL});
  t_filter_t f[3];
  int nf = 0;
  for (uint32_t q = 0; q < per_key; q++) {
    for (uint32_t k = 0; k < nkeys; k++)
      t_submit(c, t_item(c, k, q));
    if (q % 10 == 9 && nf < 3) {
      f[nf] = (t_filter_t){.c = c, .partition = nf};
      ck_assert_int_eq(kmq_sched_cancel_if(c->s, t_pred_partition, &f[nf],
                                           t_filter_free),
                       KMQ_OK);
      nf++;
    }
  }
  ck_assert_int_eq(kmq_sched_cancel_if(c->s, t_pred_all, NULL, NULL),
                   KMQ_OK);
  t_wait_finished(c, c->nitems);
  for (size_t i = 0; i < c->nitems; i++)
    ck_assert_int_eq(atomic_load(&c->items[i].runs) +
                         atomic_load(&c->items[i].cancels),
                     1);
  kmq_sched_reclaim(c->s, kt_now_ms());
  for (int i = 0; i < nf; i++)
    ck_assert_int_eq(atomic_load(&f[i].freed), 1);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.run + st.cancelled, c->nitems);
  ck_assert_uint_eq(st.completed, st.run);
  t_ctx_free(c);
}
END_TEST

/* ---- shutdown ---- */

START_TEST(test_destroy_queued) {
  /* The only worker is blocked; stop; every queued item is cancelled. */
  const uint32_t nkeys = 20, per_key = 10;
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "dq", nkeys, per_key);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1", NULL});
  t_submit(c, &c->blocker);
  ck_assert(kt_wait_until(t_blocker_running, c, T_WAIT_MS));
  for (uint32_t q = 0; q < per_key; q++)
    for (uint32_t k = 0; k < nkeys; k++)
      t_submit(c, t_item(c, k, q));
  kmq_sched_stop(c->s);
  ck_assert_int_eq(t_try_submit(c, t_item(c, 0, 0)), KMQ_ERR_SHUTDOWN);
  ck_assert(!t_accepts(c, 0));
  atomic_store(&c->blocker_go, 1);
  kmq_sched_destroy(c->s); /* waits for the blocker, cancels the rest */
  c->s = NULL;
  ck_assert_int_eq(atomic_load(&c->blocker.runs), 1);
  for (size_t i = 0; i < c->nitems; i++) {
    ck_assert_int_eq(atomic_load(&c->items[i].runs), 0);
    ck_assert_int_eq(atomic_load(&c->items[i].cancels), 1);
  }
  ck_assert_uint_eq(atomic_load(&c->cancel_cnt), c->nitems);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

START_TEST(test_destroy_busy) {
  /* Destroy while items run asynchronously and many are queued: it
   * returns only when each item was run (and done) or cancelled, once. */
  const uint32_t nkeys = 100, per_key = 50;
  t_ctx_t *c = t_ctx_new(T_ASYNC, true, "db", nkeys, per_key);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "4",
                                       "kmq.sched.mailbox.size", "64",
                                       "kmq.max.inflight", "100000", NULL});
  for (uint32_t q = 0; q < per_key; q++)
    for (uint32_t k = 0; k < nkeys; k++)
      t_submit(c, t_item(c, k, q));
  kmq_sched_destroy(c->s);
  c->s = NULL;
  for (size_t i = 0; i < c->nitems; i++)
    ck_assert_int_eq(atomic_load(&c->items[i].runs) +
                         atomic_load(&c->items[i].cancels),
                     1);
  ck_assert_uint_eq(atomic_load(&c->run_cnt), atomic_load(&c->done_cnt));
  ck_assert_uint_eq(atomic_load(&c->run_cnt) + atomic_load(&c->cancel_cnt),
                    c->nitems);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

static bool t_no_workers(void *o) {
  (void)o;
  return kt_threads_named("kmq-sched-") == 0;
}

START_TEST(test_destroy_within_stuck) {
  /* A stuck item (the blocker, on one of two workers) and items queued
   * on other keys. destroy_within returns TIMED_OUT near its
   * bound instead of waiting; the scheduler is abandoned but still
   * accepts the blocker's late done and cancels everything queued, then
   * frees itself on its last worker (ASan/LSan: no leak, no use after
   * free). */
  const uint32_t nkeys = 8, per_key = 20;
  t_ctx_t *c = t_ctx_new(T_SYNC, false, "dw", nkeys, per_key);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2", NULL});
  ck_assert_int_eq(kt_threads_named("kmq-sched-"), 2);
  t_submit(c, &c->blocker);
  ck_assert(kt_wait_until(t_blocker_running, c, T_WAIT_MS));
  for (uint32_t q = 0; q < per_key; q++)
    for (uint32_t k = 0; k < nkeys; k++)
      t_submit(c, t_item(c, k, q));
  int64_t t0 = kt_now_ms();
  ck_assert_int_eq(kmq_sched_destroy_within(c->s, 200), KMQ_ERR_TIMED_OUT);
  int64_t took = kt_now_ms() - t0;
  ck_assert_msg(took >= 150 && took < 5000, "destroy_within took %lld ms",
                (long long)took);
  /* Abandoned, not freed: its workers (the blocker's among them) live. */
  ck_assert_int_gt(kt_threads_named("kmq-sched-"), 0);
  /* Everything but the blocker ended (run or cancelled) meanwhile. */
  t_wait_finished(c, c->nitems);
  ck_assert_int_eq(atomic_load(&c->blocker.runs), 1);
  /* The late done: the blocker's kmq_sched_done(c->s) must succeed on
   * the abandoned scheduler. */
  atomic_store(&c->blocker_go, 1);
  t_count_arg_t all = {c, c->nitems + 1};
  ck_assert(kt_wait_until(t_finished_ge, &all, T_WAIT_MS));
  /* ... and then its workers return, the last one freeing it. */
  ck_assert_msg(kt_wait_until(t_no_workers, NULL, T_WAIT_MS),
                "%d workers of the abandoned scheduler still alive",
                kt_threads_named("kmq-sched-"));
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  for (size_t i = 0; i < c->nitems; i++)
    ck_assert_int_eq(atomic_load(&c->items[i].runs) +
                         atomic_load(&c->items[i].cancels),
                     1);
  c->s = NULL; /* it frees itself */
  t_ctx_free(c);
}
END_TEST

START_TEST(test_destroy_within_in_time) {
  /* Nothing stuck: destroy_within frees like destroy and says OK. */
  t_ctx_t *c = t_ctx_new(T_ASYNC, true, "di", 50, 20);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2",
                                       "kmq.max.inflight", "100000", NULL});
  for (uint32_t q = 0; q < c->per_key; q++)
    for (uint32_t k = 0; k < c->nkeys; k++)
      t_submit(c, t_item(c, k, q));
  ck_assert_int_eq(kmq_sched_destroy_within(c->s, 60000), KMQ_OK);
  c->s = NULL;
  ck_assert_uint_eq(atomic_load(&c->run_cnt) + atomic_load(&c->cancel_cnt),
                    c->nitems);
  ck_assert_uint_eq(atomic_load(&c->run_cnt), atomic_load(&c->done_cnt));
  t_ctx_free(c);
}
END_TEST

/* ---- API edges ---- */

/* ---- priority: the oldest queued item runs first ---- */

/* One worker, held by a blocker while items of four keys are queued in an
 * interleaving where keys come back before the others had their turn
 * (a0 b0 a1 c0 a2 b1 d0 a3 c1 b2 ...). Released, the worker must run them
 * in exactly the submit order: the run queue takes the actor whose next
 * item is oldest, not the actor that became runnable first (a FIFO of
 * actors would run a0 b0 c0 d0 a1 ...: old items of a busy user wait
 * behind every other user, and the commit gate backs up behind them). */
START_TEST(test_oldest_item_first) {
  const uint32_t nkeys = 4, per_key = 40;
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "p", nkeys, per_key);
  c->ran_cap = c->nitems;
  c->ran = calloc(c->ran_cap, sizeof(*c->ran));
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1",
                                       "kmq.sched.mailbox.size", "64", NULL});
  t_submit(c, &c->blocker);
  ck_assert(kt_wait_until(t_blocker_running, c, T_WAIT_MS));
  /* Key k gets every (k+1)-th slot while it has items left. */
  t_item_t **order = calloc(c->nitems, sizeof(*order));
  uint32_t next[4] = {0, 0, 0, 0};
  size_t n = 0;
  for (uint32_t slot = 0; n < c->nitems; slot++)
    for (uint32_t k = 0; k < nkeys; k++)
      if (slot % (k + 1) == 0 && next[k] < per_key)
        t_submit(c, order[n++] = t_item(c, k, next[k]++));
  atomic_store(&c->blocker_go, 1);
  t_wait_finished(c, c->nitems + 1);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  ck_assert_uint_eq(atomic_load(&c->nran), c->nitems);
  for (size_t i = 0; i < c->nitems; i++)
    ck_assert_msg(c->ran[i] == order[i],
                  "run %zu: key %u seq %u, submitted: key %u seq %u", i,
                  c->ran[i]->key, c->ran[i]->seq, order[i]->key,
                  order[i]->seq);
  free(order);
  t_ctx_free(c);
}
END_TEST

/* ---- deferred wake-ups (kmq_sched_batch_begin/end) ---- */

static bool t_all_asleep(void *o) {
  t_ctx_t *c = o;
  kmq_sched_stats_t st = t_stats(c);
  return st.workers_sleeping == st.workers;
}

/* With every worker asleep, items submitted in a batch run: the first
 * KMQ_SCHED_WAKE_BATCH-multiple of them without kmq_sched_batch_end (the
 * threshold wakes), the rest once the batch ends. A lost wake-up leaves
 * items queued with all workers asleep and fails at the deadline. */
START_TEST(test_batch_wakes) {
  /* One threshold's worth and a part: both paths are taken. */
  const uint32_t nkeys = KMQ_SCHED_WAKE_BATCH + KMQ_SCHED_WAKE_BATCH / 2;
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "b", nkeys, 2);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2", NULL});
  for (int round = 0; round < 2; round++) {
    ck_assert_msg(kt_wait_until(t_all_asleep, c, T_WAIT_MS),
                  "workers did not go to sleep");
    uint64_t base = (uint64_t)round * nkeys;
    kmq_sched_batch_begin(c->s);
    for (uint32_t k = 0; k < nkeys; k++)
      t_submit(c, t_item(c, k, (uint32_t)round));
    t_wait_finished(c, base + (nkeys / KMQ_SCHED_WAKE_BATCH) *
                                  KMQ_SCHED_WAKE_BATCH);
    kmq_sched_batch_end(c->s);
    t_wait_finished(c, base + nkeys);
  }
  kmq_sched_batch_end(c->s); /* not in a batch: no-op */
  kmq_sched_batch_begin(NULL);
  kmq_sched_batch_end(NULL);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  ck_assert_uint_eq(t_stats(c).completed, 2 * nkeys);
  t_ctx_free(c);
}
END_TEST

/* kmq_sched_batch_flush hands what a batch deferred to the sleeping
 * workers without ending it: fewer items than the threshold, all workers
 * asleep, they run before the batch ends (without the flush they would
 * wait for kmq_sched_batch_end, and t_wait_finished fails). */
START_TEST(test_batch_flush_wakes) {
  const uint32_t nkeys = 40;
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "f", nkeys, 2);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "2", NULL});
  ck_assert_msg(kt_wait_until(t_all_asleep, c, T_WAIT_MS),
                "workers did not go to sleep");
  kmq_sched_batch_begin(c->s);
  for (uint32_t k = 0; k < nkeys; k++)
    t_submit(c, t_item(c, k, 0));
  kmq_sched_batch_flush(c->s);
  t_wait_finished(c, nkeys); /* still inside the batch */
  kmq_sched_batch_end(c->s);
  kmq_sched_batch_flush(c->s); /* outside a batch: no-op */
  kmq_sched_batch_flush(NULL);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  ck_assert_uint_eq(t_stats(c).completed, nkeys);
  t_ctx_free(c);
}
END_TEST

START_TEST(test_api_edges) {
  char errstr[256] = "";
  kmq_conf_t *conf = kmq_conf_new();
  kmq_sched_callbacks_t no_cancel = {.run = t_run};
  ck_assert_ptr_null(
      kmq_sched_new(conf, &no_cancel, NULL, errstr, sizeof(errstr)));
  ck_assert_int_gt(strlen(errstr), 0);
  errstr[0] = '\0';
  ck_assert_ptr_null(kmq_sched_new(NULL, &t_cbs, NULL, errstr, sizeof(errstr)));
  ck_assert_int_gt(strlen(errstr), 0);
  kmq_conf_destroy(conf);
  kmq_sched_destroy(NULL);
  kmq_sched_stop(NULL);

  /* key 0 = "e-0", key 1 = "" (the empty key is a key like any other),
   * key 2 = 100 bytes (longer than the actor's inline key buffer) */
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "e", 3, 2);
  c->keys[1].name[0] = '\0';
  c->keys[1].len = 0;
  memset(c->keys[2].name, 'L', 100);
  c->keys[2].name[99] = '2';
  c->keys[2].len = 100;
  /* workers unset (0): one per CPU */
  t_ctx_start(c, (const char *const[]){"kmq.sched.idle.ms", "0", NULL});
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  ck_assert_uint_eq(t_stats(c).workers, (uint32_t)(cpus > 0 ? cpus : 1));
  ck_assert_int_eq(kmq_sched_submit(c->s, "k", 1, NULL), KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_sched_submit(c->s, NULL, 3, t_item(c, 0, 0)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_sched_submit(NULL, "k", 1, t_item(c, 0, 0)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_sched_done(c->s, NULL), KMQ_ERR_INVALID_ARG);
  ck_assert_uint_eq(t_stats(c).submitted, 0);

  /* A second done for the same item is refused and changes nothing. */
  t_submit(c, t_item(c, 0, 0));
  t_release(c, t_item(c, 0, 0));
  ck_assert_int_eq(kmq_sched_done(c->s, atomic_load(&t_item(c, 0, 0)->token)),
                   KMQ_ERR_STATE);
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.completed, 1);
  ck_assert_uint_eq(st.inflight, 0);
  t_submit(c, t_item(c, 0, 1));
  t_release(c, t_item(c, 0, 1));
  ck_assert_uint_eq(c->keys[0].next_seq, 2);

  ck_assert_int_eq(kmq_sched_submit(c->s, NULL, 0, t_item(c, 1, 0)), KMQ_OK);
  t_release(c, t_item(c, 1, 0)); /* t_enter checked the key: "" */
  ck_assert_uint_eq(t_stats(c).actors_live, 2);

  /* A long key: t_enter compares all 100 bytes; reclaim frees its copy
   * (ASan's leak check runs at exit) and the key comes back later. */
  t_submit(c, t_item(c, 2, 0));
  t_release(c, t_item(c, 2, 0));
  ck_assert_uint_eq(kmq_sched_reclaim(c->s, kt_now_ms()), 3);
  t_submit(c, t_item(c, 2, 1));
  t_release(c, t_item(c, 2, 1));
  ck_assert_uint_eq(c->keys[2].next_seq, 2);
  ck_assert_uint_eq(t_stats(c).actors_live, 1); /* freed by destroy */
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

/* ---- retry timers (kmq_sched_retry_after) ---- */

static bool t_timers_eq1(void *o) {
  return t_stats(o).timers == 1;
}

/* One worker; key 0's first item is put back by its worker for ten
 * minutes. Meanwhile key 0's second item waits, keys 1..50 run all their
 * items on the only worker, and the timer stays pending; destroy then
 * cancels both of key 0's items at once (the wait would exceed the test's
 * timeout). Everything asserted is an event or a count, not a duration. */
START_TEST(test_retry_holds_actor_not_worker) {
  const uint32_t nkeys = 51;
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "r", nkeys, 2);
  t_item(c, 0, 0)->retries = 1;
  t_item(c, 0, 0)->retry_ms = 600000;
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1", NULL});
  t_submit(c, t_item(c, 0, 0));
  ck_assert_msg(kt_wait_until(t_timers_eq1, c, T_WAIT_MS),
                "the retry was not armed");
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 0)->runs), 1);
  t_submit(c, t_item(c, 0, 1)); /* behind the retrying item */
  for (uint32_t q = 0; q < 2; q++)
    for (uint32_t k = 1; k < nkeys; k++)
      t_submit(c, t_item(c, k, q));
  t_wait_finished(c, 2 * (nkeys - 1));
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.timers, 1);
  ck_assert_uint_eq(st.retries, 1);
  ck_assert_uint_eq(st.inflight, 2); /* key 0: one on its timer, one queued */
  ck_assert_uint_eq(st.completed, 2 * (nkeys - 1));
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 0)->runs), 1);
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 1)->runs), 0);

  kmq_sched_destroy(c->s); /* cancels the pending timer, then item 1 */
  c->s = NULL;
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 0)->cancels), 1);
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 1)->cancels), 1);
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 0)->runs), 1);
  ck_assert_int_eq(atomic_load(&t_item(c, 0, 1)->runs), 0);
  ck_assert_uint_eq(atomic_load(&c->cancel_cnt), 2);
  for (uint32_t k = 1; k < nkeys; k++)
    ck_assert_uint_eq(c->keys[k].next_seq, 2);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

/* Five held items put back by the test thread (not a worker: the "any
 * thread" case of an asynchronous completion) with delays out of order,
 * three workers asleep meanwhile. Each runs again, not before its delay,
 * in due order, and the key's next item only after its retry is done. */
START_TEST(test_retry_due_order) {
  static const int64_t delay[5] = {250, 50, 200, 100, 150};
  static const uint32_t due_order[5] = {1, 3, 4, 2, 0};
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "d", 5, 2);
  c->ran_cap = 16;
  c->ran = calloc(c->ran_cap, sizeof(*c->ran));
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "3", NULL});
  for (uint32_t k = 0; k < 5; k++)
    t_submit(c, t_item(c, k, 0));
  for (uint32_t k = 0; k < 5; k++)
    ck_assert(kt_wait_until(t_item_started, t_item(c, k, 0), T_WAIT_MS));
  t_submit(c, t_item(c, 1, 1)); /* waits behind d-1's retry */
  for (uint32_t k = 0; k < 5; k++) {
    t_item_t *it = t_item(c, k, 0);
    it->retry_ms = delay[k];
    t_retry(c, atomic_load(&it->token), it, delay[k]);
  }
  ck_assert_uint_eq(t_stats(c).retries, 5);
  for (uint32_t k = 0; k < 5; k++) {
    t_item_t *it = t_item(c, k, 0);
    ck_assert_msg(kt_wait_until(t_item_started, it, T_WAIT_MS),
                  "retry of d-%u never ran", k);
  }
  ck_assert_uint_eq(t_stats(c).timers, 0);
  ck_assert_int_eq(atomic_load(&t_item(c, 1, 1)->runs), 0);
  ck_assert_uint_eq(atomic_load(&c->nran), 10);
  for (uint32_t i = 0; i < 5; i++) {
    t_item_t *it = c->ran[5 + i];
    ck_assert_msg(it == t_item(c, due_order[i], 0),
                  "retry %u to run was d-%u, expected d-%u", i, it->key,
                  due_order[i]);
    ck_assert_int_eq(atomic_load(&it->runs), 2);
    ck_assert_int_eq(atomic_load(&it->early), 0);
  }
  for (uint32_t k = 0; k < 5; k++)
    t_release(c, t_item(c, k, 0));
  t_release(c, t_item(c, 1, 1));
  t_wait_finished(c, 6);
  ck_assert(c->ran[10] == t_item(c, 1, 1));
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.run, 6);
  ck_assert_uint_eq(st.completed, 6);
  ck_assert_uint_eq(st.inflight, 0);
  t_ctx_free(c);
}
END_TEST

static bool t_retry_due(void *o) {
  t_item_t *it = o;
  return t_now_ns() >= atomic_load(&it->armed_ns) + it->retry_ms * 1000000;
}

/* The only worker never sleeps while key 0's retry becomes due: it is
 * held by a blocker until then, with 100 items of other keys queued
 * behind. Freed, it must take the due retry first (the busy worker's check
 * between two items), before any of the queued items. */
START_TEST(test_retry_busy_worker) {
  const uint32_t nkeys = 101;
  t_ctx_t *c = t_ctx_new(T_SYNC, true, "b", nkeys, 1);
  c->ran_cap = nkeys + 1;
  c->ran = calloc(c->ran_cap, sizeof(*c->ran));
  t_item_t *r = t_item(c, 0, 0);
  r->retries = 1;
  r->retry_ms = 50;
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1", NULL});
  t_submit(c, r);
  ck_assert(kt_wait_until(t_timers_eq1, c, T_WAIT_MS));
  t_submit(c, &c->blocker);
  ck_assert(kt_wait_until(t_blocker_running, c, T_WAIT_MS));
  for (uint32_t k = 1; k < nkeys; k++)
    t_submit(c, t_item(c, k, 0));
  /* Waiting on the clock is the point here: the retry must be due. */
  ck_assert(kt_wait_until(t_retry_due, r, T_WAIT_MS));
  atomic_store(&c->blocker_go, 1);
  t_wait_finished(c, nkeys + 1);
  ck_assert_uint_eq(atomic_load(&c->nran), nkeys + 1);
  ck_assert(c->ran[0] == r);
  ck_assert_msg(c->ran[1] == r, "queued key %u ran before the due retry",
                c->ran[1]->key);
  ck_assert_int_eq(atomic_load(&r->early), 0);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

/* Refusals change nothing; after stop a retry is refused and the holder
 * finishes the item itself. */
START_TEST(test_retry_edges) {
  t_ctx_t *c = t_ctx_new(T_HOLD, true, "x", 1, 2);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1", NULL});
  t_item_t *it = t_item(c, 0, 0);
  t_submit(c, it);
  ck_assert(kt_wait_until(t_item_started, it, T_WAIT_MS));
  kmq_sched_actor_t *tok = atomic_load(&it->token);
  ck_assert_int_eq(kmq_sched_retry_after(NULL, tok, it, 0),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_sched_retry_after(c->s, NULL, it, 0),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_sched_retry_after(c->s, tok, NULL, 0),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_sched_retry_after(c->s, tok, it, -1),
                   KMQ_ERR_INVALID_ARG);
  /* Delay 0 runs it again as soon as the worker is free. */
  t_retry(c, tok, it, 0);
  ck_assert(kt_wait_until(t_item_started, it, T_WAIT_MS));
  tok = atomic_load(&it->token);
  ck_assert_int_eq(atomic_load(&it->runs), 2);
  /* A huge delay saturates instead of overflowing; the token is given up
   * and a second retry or done with it is refused. */
  t_retry(c, tok, it, INT64_MAX);
  ck_assert_int_eq(kmq_sched_retry_after(c->s, tok, it, 0), KMQ_ERR_STATE);
  ck_assert_int_eq(kmq_sched_done(c->s, tok), KMQ_ERR_STATE);
  kmq_sched_stats_t st = t_stats(c);
  ck_assert_uint_eq(st.timers, 1);
  ck_assert_uint_eq(st.retries, 2);

  /* Stop: the pending timer is cancelled by a worker, at once. */
  t_item_t *next = t_item(c, 0, 1);
  t_submit(c, next);
  kmq_sched_stop(c->s);
  t_count_arg_t two = {c, 2};
  ck_assert(kt_wait_until(t_cancelled_ge, &two, T_WAIT_MS));
  ck_assert_int_eq(atomic_load(&it->cancels), 1);
  ck_assert_int_eq(atomic_load(&next->cancels), 1);
  ck_assert_uint_eq(t_stats(c).timers, 0);
  ck_assert_uint_eq(t_stats(c).inflight, 0);
  t_ctx_free(c);

  /* A running item after stop: retry refused, the holder keeps it. */
  c = t_ctx_new(T_HOLD, true, "y", 1, 1);
  t_ctx_start(c, (const char *const[]){"kmq.sched.workers", "1", NULL});
  it = t_item(c, 0, 0);
  t_submit(c, it);
  ck_assert(kt_wait_until(t_item_started, it, T_WAIT_MS));
  kmq_sched_stop(c->s);
  ck_assert_int_eq(kmq_sched_retry_after(c->s, atomic_load(&it->token), it, 5),
                   KMQ_ERR_SHUTDOWN);
  ck_assert_uint_eq(t_stats(c).retries, 0);
  t_release(c, it); /* done still works: the token was not taken */
  ck_assert_uint_eq(t_stats(c).completed, 1);
  ck_assert_uint_eq(atomic_load(&c->violations), 0);
  t_ctx_free(c);
}
END_TEST

static Suite *sched_suite(void) {
  Suite *s = suite_create("sched");
  TCase *tc = tcase_create("order");
  tcase_add_test(tc, test_order_sync);
  tcase_add_test(tc, test_order_async);
  suite_add_tcase(s, tc);
  tc = tcase_create("backpressure");
  tcase_add_test(tc, test_bp_mailbox);
  tcase_add_test(tc, test_bp_inflight);
  tcase_add_test(tc, test_bp_actors);
  suite_add_tcase(s, tc);
  tc = tcase_create("reclaim");
  tcase_add_test(tc, test_reclaim_100k);
  tcase_add_test(tc, test_reclaim_idle_ms);
  suite_add_tcase(s, tc);
  tc = tcase_create("cancel");
  tcase_add_test(tc, test_cancel_partition);
  tcase_add_test(tc, test_cancel_concurrent);
  suite_add_tcase(s, tc);
  tc = tcase_create("shutdown");
  tcase_add_test(tc, test_destroy_queued);
  tcase_add_test(tc, test_destroy_busy);
  tcase_add_test(tc, test_destroy_within_stuck);
  tcase_add_test(tc, test_destroy_within_in_time);
  tcase_add_test(tc, test_api_edges);
  tcase_add_test(tc, test_batch_wakes);
  tcase_add_test(tc, test_batch_flush_wakes);
  tcase_add_test(tc, test_oldest_item_first);
  suite_add_tcase(s, tc);
  tc = tcase_create("retry");
  tcase_add_test(tc, test_retry_order_sync);
  tcase_add_test(tc, test_retry_order_async);
  tcase_add_test(tc, test_retry_holds_actor_not_worker);
  tcase_add_test(tc, test_retry_due_order);
  tcase_add_test(tc, test_retry_busy_worker);
  tcase_add_test(tc, test_retry_edges);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return kt_run(sched_suite());
}
