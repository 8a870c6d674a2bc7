/*
 * sched: the scheduler alone (kmq_sched_t, no Kafka).
 *
 * Throughput: for each worker count W (--workers-list, default 1,2,4) and
 * user count U (--users-list, default 1,100,10000,100000), this thread is
 * the dispatcher: it submits M items (--messages) round-robin over U keys,
 * retrying on KMQ_ERR_BACKPRESSURE, and the run callback acknowledges at
 * once (kmq_sched_done). One untimed pass over the U keys first binds their
 * actors. ns/msg = (last completion - first submit) / M: submit + mailbox +
 * run queue + worker hand-off + run + done.
 *
 * Memory: VmRSS (/proc/self/status) before the scheduler, with --rss-users
 * (default 100000) idle actors, after kmq_sched_reclaim() recycled them,
 * after as many NEW users (the recycled slots should be reused), and after
 * kmq_sched_destroy(). It runs first, before the throughput runs touch the
 * heap.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "kmq/sched.h"

typedef struct {
  kmq_sched_t *s;
  atomic_llong done;
} bench__sched_t;

/* @locality any worker */
static void bench__run(void *opaque, kmq_sched_actor_t *actor, void *item) {
  (void)item;
  bench__sched_t *b = opaque;
  kmq_sched_done(b->s, actor);
  atomic_fetch_add_explicit(&b->done, 1, memory_order_relaxed);
}

static void bench__cancel(void *opaque, void *item) {
  (void)opaque;
  (void)item;
}

static kmq_sched_t *bench__new(bench__sched_t *b, int workers, int idle_ms) {
  char errstr[256], v[32];
  kmq_conf_t *conf = kmq_conf_new();
  snprintf(v, sizeof(v), "%d", workers);
  bench_conf_set(conf, "kmq.sched.workers", v);
  snprintf(v, sizeof(v), "%d", idle_ms);
  bench_conf_set(conf, "kmq.sched.idle.ms", v);
  kmq_sched_callbacks_t cbs = {bench__run, bench__cancel};
  b->s = kmq_sched_new(conf, &cbs, b, errstr, sizeof(errstr));
  kmq_conf_destroy(conf);
  if (!b->s)
    bench_die("kmq_sched_new: %s", errstr);
  return b->s;
}

/* Submits n items over the first `users` keys starting at key `base`;
 * returns the number of BACKPRESSURE refusals. */
static int64_t bench__submit(bench__sched_t *b, char (*keys)[16], int base,
                             int users, int64_t n) {
  int64_t refused = 0;
  for (int64_t i = 0; i < n; i++) {
    const char *k = keys[base + (int)(i % users)];
    for (;;) {
      kmq_err_t err = kmq_sched_submit(b->s, k, 8, (void *)(intptr_t)(i + 1));
      if (err == KMQ_OK)
        break;
      if (err != KMQ_ERR_BACKPRESSURE)
        bench_die("kmq_sched_submit: %s", kmq_err2str(err));
      refused++;
      sched_yield(); /* 2 cores: let the workers drain */
    }
  }
  return refused;
}

static void bench__wait(bench__sched_t *b, int64_t n) {
  while (atomic_load_explicit(&b->done, memory_order_relaxed) < n)
    bench_sleep_us(20); /* leave both cores to the workers */
}

static void bench__rss(const bench_opts_t *o, char (*keys)[16],
                       bench_run_t *run) {
  bench__sched_t b = {0};
  int users = o->rss_users;
  long rss0 = bench_rss_kb();
  kmq_sched_t *s = bench__new(&b, 2, 1000);
  kmq_sched_reclaim(s, 1); /* the clock submissions are stamped with */
  long rss_new = bench_rss_kb();
  bench__submit(&b, keys, 0, users, users);
  bench__wait(&b, users);
  long rss_idle = bench_rss_kb();
  kmq_sched_stats_t st;
  kmq_sched_stats(s, &st);
  int64_t t0 = bench_now_us();
  size_t freed = kmq_sched_reclaim(s, 1 + 1000 + 1);
  int64_t t_reclaim = bench_now_us() - t0;
  long rss_reclaim = bench_rss_kb();
  kmq_sched_stats_t st2;
  kmq_sched_stats(s, &st2);
  bench__submit(&b, keys, users, users, users); /* users never seen */
  bench__wait(&b, 2 * (int64_t)users);
  long rss_again = bench_rss_kb();
  kmq_sched_stats_t st3;
  kmq_sched_stats(s, &st3);
  kmq_sched_destroy(s);
  long rss_destroy = bench_rss_kb();

  char phase[40];
  snprintf(phase, sizeof(phase), "rss u=%d", users);
  bench_row_t *r = bench_row_add(run, "sched", phase);
  r->n = users;
  bench_row_extra(r, "rss_before_kb", (double)rss0);
  bench_row_extra(r, "rss_new_kb", (double)rss_new);
  bench_row_extra(r, "rss_idle_kb", (double)rss_idle);
  bench_row_extra(r, "rss_reclaimed_kb", (double)rss_reclaim);
  bench_row_extra(r, "rss_new_users_kb", (double)rss_again);
  bench_row_extra(r, "rss_destroyed_kb", (double)rss_destroy);
  bench_row_extra(r, "bytes_per_idle_actor",
                  (double)(rss_idle - rss_new) * 1024.0 / users);
  bench_row_extra(r, "actor_slots_idle", (double)st.actor_slots);
  bench_row_extra(r, "actors_reclaimed", (double)freed);
  bench_row_extra(r, "actors_live_reclaimed", (double)st2.actors_live);
  bench_row_extra(r, "actor_slots_new_users", (double)st3.actor_slots);
  bench_row_extra(r, "reclaim_ms", (double)t_reclaim / 1000.0);
}

static void bench__tput(const bench_opts_t *o, char (*keys)[16], int workers,
                        int users, bench_run_t *run) {
  bench__sched_t b = {0};
  kmq_sched_t *s = bench__new(&b, workers, 30000);
  bench__submit(&b, keys, 0, users, users); /* bind the actors, untimed */
  bench__wait(&b, users);
  atomic_store(&b.done, 0);
  int64_t n = o->messages;
  int64_t t0 = bench_now_ns();
  int64_t refused = bench__submit(&b, keys, 0, users, n);
  int64_t t_sub = bench_now_ns();
  bench__wait(&b, n);
  int64_t t1 = bench_now_ns();
  kmq_sched_stats_t st;
  kmq_sched_stats(s, &st);
  kmq_sched_destroy(s);

  char phase[40];
  snprintf(phase, sizeof(phase), "w=%d u=%d", workers, users);
  bench_row_t *r = bench_row_add(run, "sched", phase);
  r->n = (double)n;
  r->secs = (double)(t1 - t0) / 1e9;
  r->msg_s = (double)n / r->secs;
  bench_row_extra(r, "ns_per_msg", (double)(t1 - t0) / (double)n);
  bench_row_extra(r, "submit_ns_per_msg", (double)(t_sub - t0) / (double)n);
  bench_row_extra(r, "backpressure", (double)refused);
  bench_row_extra(r, "mailbox_depth_max", (double)st.mailbox_depth_max);
  bench_row_extra(r, "workers", workers);
  bench_row_extra(r, "users", users);
}

int bench_sched(const bench_opts_t *o, int rep, bench_run_t *run) {
  (void)rep;
  int maxu = 2 * o->rss_users;
  for (int i = 0; i < o->n_users_list; i++)
    if (o->users_list[i] > maxu)
      maxu = o->users_list[i];
  char(*keys)[16] = calloc((size_t)maxu, sizeof(*keys));
  if (!keys)
    bench_die("out of memory");
  for (int u = 0; u < maxu; u++)
    snprintf(keys[u], sizeof(keys[u]), "wm%06d", u); /* 8 bytes */
  bench__rss(o, keys, run);
  for (int w = 0; w < o->n_workers_list; w++)
    for (int u = 0; u < o->n_users_list; u++)
      bench__tput(o, keys, o->workers_list[w], o->users_list[u], run);
  free(keys);
  return 0;
}
