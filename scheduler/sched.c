/*
 * kmq scheduler: lifecycle, submit (dispatcher), completion, stats.
 * The ownership protocol is described in sched_int.h, the rings'
 * ordering in sched_ring.h, the run queue and the worker loop in worker.c,
 * retry timers and how sleeping workers watch them in timer.c,
 * cancellation in cancel.c, the actor table and slab in actor.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scheduler/sched_ring.h"
#include "lib/util.h"

_Noreturn void kmq__sched_bug(const char *file, int line, const char *msg) {
  fprintf(stderr, "kmq scheduler: BUG at %s:%d: %s\n", file, line, msg);
  abort();
}

static uint32_t kmq__pow2_u32(uint64_t v) {
  uint32_t p = 2;
  while (p < v)
    p <<= 1;
  return p;
}

/* Tells the workers to return once they find no work. Lock order: `lock`
 * (when held) before runq_lock. */
static void kmq__workers_signal_exit(kmq_sched_t *s) {
  pthread_mutex_lock(&s->runq_lock);
  s->exiting = true;
  pthread_cond_broadcast(&s->wake_cond);
  pthread_cond_broadcast(&s->timer_cond);
  pthread_mutex_unlock(&s->runq_lock);
}

/* ---- finishing an item ---- */

/* Drops one in-flight item. The last access to s by a thread outside the
 * pool: destroy frees s once it sees 0 under `lock`, so the 1 -> 0 step
 * (and the signal) happen under `lock`, and other steps touch nothing after
 * their CAS. Release on every decrement: what this thread did before
 * happens before destroy's acquire load of 0 (decrements and the
 * dispatcher's increments are RMWs, so they continue release sequences).
 * @locality any thread */
static void kmq__inflight_release(kmq_sched_t *s) {
  uint64_t v = atomic_load_explicit(&s->inflight, memory_order_relaxed);
  for (;;) {
    if (v == 1) {
      pthread_mutex_lock(&s->lock);
      if (atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_release) ==
              1 &&
          atomic_load_explicit(&s->stopping, memory_order_relaxed)) {
        pthread_cond_broadcast(&s->drained_cond);
        /* Abandoned by destroy_within: nothing is left to run or cancel,
         * so the workers may return; the last one frees s, which it cannot
         * do before we unlock `lock` (kmq__worker_exit takes it). */
        if (s->abandoned)
          kmq__workers_signal_exit(s);
      }
      pthread_mutex_unlock(&s->lock);
      return;
    }
    if (atomic_compare_exchange_weak_explicit(&s->inflight, &v, v - 1,
                                              memory_order_release,
                                              memory_order_relaxed))
      return;
  }
}

bool kmq__actor_finish(kmq_sched_t *s, kmq_sched_actor_t *a, bool keep) {
  /* acq_rel. Release: our mailbox pop (c_head) and everything the item's
   * processing did happen before the next runner's work (it is reached
   * through this RMW: directly, or via the dispatcher's fetch_add that
   * reads it) and before the dispatcher recycles the actor (acquire load
   * of 0 in reclaim). Acquire: if items remain, their mailbox entries,
   * committed before the dispatcher's release fetch_add, are visible to us
   * and to whoever pops the actor from the run queue after our push. */
  uint32_t prev =
      atomic_fetch_sub_explicit(&a->pending, 1, memory_order_acq_rel);
  bool kept = false;
  if (prev > 1) {
    if (keep) {
      kept = true;
    } else {
      kmq__runq_push(s, a, kmq__mbox_head_seq(a), true);
    }
  }
  /* From here on a may be recycled unless kept. */
  kmq__inflight_release(s);
  return kept;
}

/* ---- public API ---- */

kmq_err_t kmq_sched_done(kmq_sched_t *s, kmq_sched_actor_t *actor) {
  if (s == NULL || actor == NULL)
    return KMQ_ERR_INVALID_ARG;
  /* Relaxed: a detector only (see the store in kmq__actor_step). */
  if (!atomic_exchange_explicit(&actor->running, false, memory_order_relaxed))
    return KMQ_ERR_STATE;
  atomic_fetch_add_explicit(&s->st_completed, 1, memory_order_relaxed);
  if (!kmq__step_finish(s, actor))
    kmq__actor_finish(s, actor, false);
  return KMQ_OK;
}

const void *kmq_sched_actor_key(const kmq_sched_actor_t *actor,
                                size_t *key_lenp) {
  if (key_lenp != NULL)
    *key_lenp = actor->key_len;
  return actor->key;
}

static bool kmq__inflight_full(const kmq_sched_t *s) {
  /* Relaxed: only the dispatcher (us) increments; a stale value is larger
   * than the truth, so the check errs on the side of refusing. */
  return atomic_load_explicit(&s->inflight, memory_order_relaxed) >=
         s->max_inflight;
}

kmq_err_t kmq_sched_submit(kmq_sched_t *s, const void *key, size_t key_len,
                           void *item) {
  if (s == NULL || item == NULL || (key == NULL && key_len > 0))
    return KMQ_ERR_INVALID_ARG;
  /* Relaxed: only the dispatcher (us) writes stopping. */
  if (atomic_load_explicit(&s->stopping, memory_order_relaxed))
    return KMQ_ERR_SHUTDOWN;
  if (kmq__inflight_full(s))
    goto backpressure;

  uint64_t hash = kmq__key_hash(s, key, key_len);
  kmq_sched_actor_t *a = kmq__actor_find(s, hash, key, key_len);
  if (a == NULL) {
    if (s->live >= s->max_actors)
      goto backpressure;
    kmq_err_t err = kmq__actor_bind(s, hash, key, key_len, &a);
    if (err != KMQ_OK)
      return err;
  }

  /* Relaxed: only the dispatcher (us) writes cancel_gen. */
  uint64_t gen = atomic_load_explicit(&s->cancel_gen, memory_order_relaxed);
  uint32_t seq = s->submit_seq;
  unsigned int depth;
  if (!kmq__mbox_push(a, item, gen, seq, &depth))
    goto backpressure; /* a new actor is never full; an old one stays */
  s->submit_seq++;
  kmq__gen_count(s, gen);
  /* The entry is committed but not runnable: a runner pops only counted
   * entries, and this one is counted by the pending increment below. So
   * both counts above/below are raised before the item can finish.
   * Relaxed: ordering for destroy comes from the decrements' release
   * sequence. */
  atomic_fetch_add_explicit(&s->inflight, 1, memory_order_relaxed);
  kmq__dstat_add(&s->dstats.submitted, 1);
  if (depth + 1 >
      atomic_load_explicit(&s->dstats.mailbox_depth_max, memory_order_relaxed))
    atomic_store_explicit(&s->dstats.mailbox_depth_max, depth + 1,
                          memory_order_relaxed);
  kmq__actor_touch(s, a, false);

  /* acq_rel. Release: the committed entry (and the actor's key when new)
   * happen before whatever finishes the running item and reads this count.
   * Acquire: on 0, the last runner's accesses (release fetch_sub) happen
   * before the next runner, which we publish on the run queue. */
  if (atomic_fetch_add_explicit(&a->pending, 1, memory_order_acq_rel) == 0) {
    bool wake = !s->batching || ++s->deferred >= KMQ_SCHED_WAKE_BATCH;
    if (wake)
      s->deferred = 0;
    kmq__runq_push(s, a, seq, wake);
  }
  return KMQ_OK;

backpressure:
  kmq__dstat_add(&s->dstats.backpressure, 1);
  return KMQ_ERR_BACKPRESSURE;
}

void kmq_sched_batch_begin(kmq_sched_t *s) {
  if (s == NULL)
    return;
  s->batching = true;
  s->deferred = 0;
}

void kmq_sched_batch_end(kmq_sched_t *s) {
  if (s == NULL || !s->batching)
    return;
  s->batching = false;
  if (s->deferred == 0)
    return;
  s->deferred = 0;
  pthread_mutex_lock(&s->runq_lock);
  kmq__wake_locked(s);
  pthread_mutex_unlock(&s->runq_lock);
}

void kmq_sched_batch_flush(kmq_sched_t *s) {
  if (s == NULL || !s->batching || s->deferred == 0)
    return;
  s->deferred = 0;
  pthread_mutex_lock(&s->runq_lock);
  kmq__wake_locked(s);
  pthread_mutex_unlock(&s->runq_lock);
}

bool kmq_sched_can_accept(const kmq_sched_t *s, const void *key,
                          size_t key_len) {
  if (s == NULL || (key == NULL && key_len > 0) || kmq__inflight_full(s) ||
      atomic_load_explicit(&s->stopping, memory_order_relaxed))
    return false;
  const kmq_sched_actor_t *a =
      kmq__actor_find(s, kmq__key_hash(s, key, key_len), key, key_len);
  if (a == NULL)
    return s->live < s->max_actors;
  return kmq__mbox_depth(a) < s->mbox_size - 1;
}

size_t kmq_sched_reclaim(kmq_sched_t *s, int64_t now_ms) {
  if (s == NULL)
    return 0;
  if (now_ms > s->clock_ms)
    s->clock_ms = now_ms;
  size_t freed = 0;
  /* Each actor is looked at once: busy ones move behind the others. */
  for (uint64_t n = s->live; n > 0; n--) {
    kmq_sched_actor_t *a = s->lru_head;
    if (a == NULL || s->clock_ms - a->stamp_ms < s->idle_ms)
      break; /* sorted by stamp: the rest is younger */
    /* Acquire: pairs with the release fetch_sub that took pending to 0,
     * so the last runner's accesses to a (mailbox, key) happen before we
     * rebind it. pending only grows through us, so 0 stays 0. */
    if (atomic_load_explicit(&a->pending, memory_order_acquire) == 0) {
      kmq__actor_unbind(s, a);
      freed++;
    } else {
      kmq__actor_touch(s, a, true); /* busy: active now, move behind */
    }
  }
  kmq__gen_retire(s, false);
  return freed;
}

void kmq_sched_stats(const kmq_sched_t *s, kmq_sched_stats_t *out) {
  memset(out, 0, sizeof(*out));
  if (s == NULL)
    return;
  /* All relaxed: counters order nothing (see the header). */
  const kmq__dstats_t *d = &s->dstats;
  out->submitted = atomic_load_explicit(&d->submitted, memory_order_relaxed);
  out->backpressure =
      atomic_load_explicit(&d->backpressure, memory_order_relaxed);
  out->actors_live =
      atomic_load_explicit(&d->actors_live, memory_order_relaxed);
  out->actors_created =
      atomic_load_explicit(&d->actors_created, memory_order_relaxed);
  out->actors_reclaimed =
      atomic_load_explicit(&d->actors_reclaimed, memory_order_relaxed);
  out->actor_slots =
      atomic_load_explicit(&d->actor_slots, memory_order_relaxed);
  out->mailbox_depth_max =
      atomic_load_explicit(&d->mailbox_depth_max, memory_order_relaxed);
  out->run = atomic_load_explicit(&s->st_run, memory_order_relaxed);
  out->cancelled = atomic_load_explicit(&s->st_cancelled, memory_order_relaxed);
  out->completed = atomic_load_explicit(&s->st_completed, memory_order_relaxed);
  out->retries = atomic_load_explicit(&s->st_retries, memory_order_relaxed);
  out->timers = atomic_load_explicit(&s->ntimers, memory_order_relaxed);
  out->inflight = atomic_load_explicit(&s->inflight, memory_order_relaxed);
  out->workers = (uint32_t)s->nworkers;
  out->workers_sleeping =
      atomic_load_explicit(&s->sleepers, memory_order_relaxed);
  out->mailbox_capacity = s->mbox_size - 1;
}

/* ---- lifecycle ---- */

/* Tells started workers to return and joins them. Only once nothing is in
 * flight (the run queue is then empty). @locality dispatcher */
static void kmq__workers_stop(kmq_sched_t *s) {
  kmq__workers_signal_exit(s);
  for (int i = 0; i < s->nstarted; i++)
    pthread_join(s->threads[i], NULL);
  s->nstarted = 0;
}

static kmq_err_t kmq__conf_read(kmq_sched_t *s, const kmq_conf_t *conf,
                                char *errstr, size_t errstr_size) {
  int64_t workers = kmq_conf_get_int(conf, "kmq.sched.workers");
  int64_t mbox = kmq_conf_get_int(conf, "kmq.sched.mailbox.size");
  int64_t idle = kmq_conf_get_int(conf, "kmq.sched.idle.ms");
  int64_t actors = kmq_conf_get_int(conf, "kmq.sched.max.actors");
  int64_t inflight = kmq_conf_get_int(conf, "kmq.max.inflight");
  if (workers == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    workers = n > 0 ? n : 1;
  }
  if (workers < 1 || workers > 1024 || mbox < 2 || mbox > (1 << 20) ||
      idle < 0 || actors < 1 || actors > (1 << 26) || inflight < 1 ||
      inflight > (1 << 22)) {
    snprintf(errstr, errstr_size,
             "scheduler: kmq.sched.* / kmq.max.inflight out of range");
    return KMQ_ERR_CONF_INVALID;
  }
  s->nworkers = (int)workers;
  s->mbox_size = kmq__pow2_u32((uint64_t)mbox);
  s->idle_ms = idle;
  s->max_actors = (uint64_t)actors;
  s->max_inflight = (uint64_t)inflight;
  /* One slot more than the most actors that can be queued at once: an
   * actor is queued only with an item in flight, at most once. */
  s->runq_cap = (uint32_t)((s->max_actors < s->max_inflight ? s->max_actors
                                                            : s->max_inflight) +
                           1);
  size_t stride =
      sizeof(kmq_sched_actor_t) +
      (size_t)s->mbox_size * sizeof(struct kmq__mbox_entry);
  s->actor_stride =
      (stride + KMQ__CACHELINE - 1) & ~(size_t)(KMQ__CACHELINE - 1);
  return KMQ_OK;
}

kmq_sched_t *kmq_sched_new(const kmq_conf_t *conf,
                           const kmq_sched_callbacks_t *cbs, void *opaque,
                           char *errstr, size_t errstr_size) {
  static const char nomem[] = "scheduler: out of memory";
  if (conf == NULL || cbs == NULL || cbs->run == NULL || cbs->cancel == NULL) {
    snprintf(errstr, errstr_size,
             "scheduler: conf and both callbacks (run, cancel) are required");
    return NULL;
  }
  kmq_sched_t *s = aligned_alloc(KMQ__CACHELINE, sizeof(*s));
  if (s == NULL) {
    snprintf(errstr, errstr_size, nomem);
    return NULL;
  }
  memset(s, 0, sizeof(*s));
  s->cbs = *cbs;
  s->opaque = opaque;
  if (kmq__conf_read(s, conf, errstr, errstr_size) != KMQ_OK)
    goto fail_conf;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  s->hash_seed = (uint64_t)(uintptr_t)s ^ ((uint64_t)ts.tv_nsec << 20) ^
                 (uint64_t)ts.tv_sec;

  if (kmq__table_init(&s->table, KMQ__SCHED_TABLE_MIN) != KMQ_OK) {
    snprintf(errstr, errstr_size, nomem);
    goto fail_table;
  }
  s->runq_heap = calloc(s->runq_cap, sizeof(*s->runq_heap));
  if (s->runq_heap == NULL) {
    snprintf(errstr, errstr_size, nomem);
    goto fail_runq;
  }
  /* An actor is on the timer heap only with an item running: the same
   * bound as the run queue. */
  s->timer_heap = calloc(s->runq_cap, sizeof(*s->timer_heap));
  if (s->timer_heap == NULL) {
    snprintf(errstr, errstr_size, nomem);
    goto fail_timer_heap;
  }
  atomic_init(&s->timer_next_ns, INT64_MAX);
  s->threads = calloc((size_t)s->nworkers, sizeof(*s->threads));
  if (s->threads == NULL) {
    snprintf(errstr, errstr_size, nomem);
    goto fail_threads_array;
  }
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    snprintf(errstr, errstr_size, "scheduler: cannot initialise a mutex");
    goto fail_mutex;
  }
  if (pthread_mutex_init(&s->runq_lock, NULL) != 0) {
    snprintf(errstr, errstr_size, "scheduler: cannot initialise a mutex");
    goto fail_runq_lock;
  }
  if (pthread_cond_init(&s->wake_cond, NULL) != 0) {
    snprintf(errstr, errstr_size, "scheduler: cannot initialise a condvar");
    goto fail_wake_cond;
  }
  /* The watcher's deadline and destroy_within's are CLOCK_MONOTONIC. */
  pthread_condattr_t attr;
  int r = pthread_condattr_init(&attr);
  if (r == 0) {
    r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (r == 0)
      r = pthread_cond_init(&s->drained_cond, &attr);
    pthread_condattr_destroy(&attr);
  }
  if (r != 0) {
    snprintf(errstr, errstr_size, "scheduler: cannot initialise a condvar");
    goto fail_drained_cond;
  }
  r = pthread_condattr_init(&attr);
  if (r == 0) {
    r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (r == 0)
      r = pthread_cond_init(&s->timer_cond, &attr);
    pthread_condattr_destroy(&attr);
  }
  if (r != 0) {
    snprintf(errstr, errstr_size, "scheduler: cannot initialise a condvar");
    goto fail_timer_cond;
  }
  for (; s->nstarted < s->nworkers; s->nstarted++) {
    /* Counted before it runs: no worker returns before `exiting`, but the
     * count must never look smaller than the threads alive. */
    s->workers_live++;
    r = pthread_create(&s->threads[s->nstarted], NULL, kmq__worker_main, s);
    if (r != 0) {
      s->workers_live--;
      snprintf(errstr, errstr_size, "scheduler: cannot start worker %d: %s",
               s->nstarted, strerror(r));
      goto fail_workers;
    }
    char name[16];
    snprintf(name, sizeof(name), "kmq-sched-%d", s->nstarted % 1000);
    pthread_setname_np(s->threads[s->nstarted], name); /* cosmetic */
  }
  return s;

fail_workers:
  kmq__workers_stop(s); /* nothing was submitted: they just return */
  pthread_cond_destroy(&s->timer_cond);
fail_timer_cond:
  pthread_cond_destroy(&s->drained_cond);
fail_drained_cond:
  pthread_cond_destroy(&s->wake_cond);
fail_wake_cond:
  pthread_mutex_destroy(&s->runq_lock);
fail_runq_lock:
  pthread_mutex_destroy(&s->lock);
fail_mutex:
  free(s->threads);
fail_threads_array:
  free(s->timer_heap);
fail_timer_heap:
  free(s->runq_heap);
fail_runq:
  kmq__table_free(&s->table);
fail_table:
fail_conf:
  free(s);
  return NULL;
}

void kmq_sched_stop(kmq_sched_t *s) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->lock);
  /* Relaxed: under lock because the final inflight decrement reads it
   * under lock to decide whether destroy needs a signal; workers read it
   * with no ordering needs (kmq__gen_should_cancel). */
  atomic_store_explicit(&s->stopping, true, memory_order_relaxed);
  pthread_mutex_unlock(&s->lock);
  /* Pending timers are cancelled now, not when due: wake every sleeper
   * (stop happens once). The store above precedes this lock section, so a
   * kmq_sched_retry_after that takes runq_lock after it refuses, and a
   * timer armed before it is seen by the woken workers. */
  pthread_mutex_lock(&s->runq_lock);
  pthread_cond_broadcast(&s->wake_cond);
  pthread_cond_broadcast(&s->timer_cond);
  pthread_mutex_unlock(&s->runq_lock);
}

/* Frees what destroy and an abandoned scheduler's last worker free. */
static void kmq__sched_free(kmq_sched_t *s) {
  kmq__gen_retire(s, true);
  kmq__actors_free_all(s);
  kmq__table_free(&s->table);
  pthread_cond_destroy(&s->timer_cond);
  pthread_cond_destroy(&s->drained_cond);
  pthread_cond_destroy(&s->wake_cond);
  pthread_mutex_destroy(&s->runq_lock);
  pthread_mutex_destroy(&s->lock);
  free(s->threads);
  free(s->timer_heap);
  free(s->runq_heap);
  free(s);
}

void kmq__worker_exit(kmq_sched_t *s) {
  pthread_mutex_lock(&s->lock);
  bool last = --s->workers_live == 0 && s->abandoned;
  pthread_mutex_unlock(&s->lock);
  /* abandoned is only set while inflight > 0, and `exiting` only after
   * inflight reached 0 under `lock`: nothing else touches s any more. */
  if (last)
    kmq__sched_free(s);
}

kmq_err_t kmq_sched_destroy_within(kmq_sched_t *s, int timeout_ms) {
  if (s == NULL)
    return KMQ_OK;
  /* Queued items get cancelled from now on; wait for everything handed to
   * run to be done and everything queued to be cancelled. */
  kmq_sched_stop(s);
  struct timespec dl;
  kmq__mono_deadline(&dl, timeout_ms >= 0 ? timeout_ms : 0);
  pthread_mutex_lock(&s->lock);
  /* Acquire: pairs with the release decrements (kmq__inflight_release), so
   * no finishing thread's access to s or an actor is left after this. */
  while (atomic_load_explicit(&s->inflight, memory_order_acquire) != 0) {
    if (timeout_ms < 0) {
      pthread_cond_wait(&s->drained_cond, &s->lock);
    } else if (pthread_cond_timedwait(&s->drained_cond, &s->lock, &dl) ==
               ETIMEDOUT) {
      if (atomic_load_explicit(&s->inflight, memory_order_acquire) == 0)
        break;
      /* Some item's owner (a stuck processor) has not called
       * kmq_sched_done. Its worker (if it is on one) cannot be joined, and
       * its late done must find s: the workers are detached and the last
       * one to return frees s, after the final release tells them to. */
      for (int i = 0; i < s->nstarted; i++)
        pthread_detach(s->threads[i]);
      s->abandoned = true;
      pthread_mutex_unlock(&s->lock);
      return KMQ_ERR_TIMED_OUT;
    }
  }
  pthread_mutex_unlock(&s->lock);

  kmq__workers_stop(s);
  kmq__sched_free(s);
  return KMQ_OK;
}

void kmq_sched_destroy(kmq_sched_t *s) { kmq_sched_destroy_within(s, -1); }
