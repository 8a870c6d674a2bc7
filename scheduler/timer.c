/*
 * Retry timers: an item whose processing must be tried again later waits
 * here for its delay, not on a thread (kmq_sched_retry_after).
 *
 * Where. A binary min-heap of actors on (timer_due_ns, timer_seq) under
 * runq_lock, next to the run queue: a worker decides to sleep looking at
 * both under one lock, so neither a newly runnable actor nor a new earliest
 * timer can slip in between its checks and its wait. The heap holds
 * actors, not items: an actor has at most one item running, hence at most
 * one timer, and the item and its due time live in the actor (timer_*).
 * Capacity: the actors that can have an item running at once,
 * min(kmq.sched.max.actors, kmq.max.inflight) (runq_cap), allocated by
 * kmq_sched_new; nothing is allocated per retry.
 *
 * Ownership (sched_int.h, "on timer"). kmq_sched_retry_after moves the
 * actor from its token holder to the heap; `pending` still counts the
 * item, so the dispatcher neither queues nor recycles the actor and its
 * next items wait. The worker that takes the actor off the heap is its
 * runner and hands the item to cbs->run again, or to cbs->cancel once the
 * scheduler is stopping (then finishes it as kmq_sched_done would).
 *
 * Who wakes. No timer thread: the workers themselves.
 *   - A busy worker looks between two items (kmq__timer_poll): one relaxed
 *     load while no timer is pending; otherwise a clock read and a relaxed
 *     load of the earliest due time, and the lock only when one is due.
 *   - Of the sleeping workers one, the watcher (timer_watched), waits on
 *     timer_cond with the earliest due time as its deadline; the others
 *     wait on wake_cond without one, so a due timer wakes one thread, not
 *     all of them. A timer that becomes the earliest signals the watcher
 *     (it re-arms); with no watcher, a sleeper on wake_cond (which becomes
 *     the watcher). A watcher that leaves with work while timers remain
 *     wakes a sleeper to take its place (kmq__timer_handover_locked).
 *   - With every worker busy, a due timer waits for the first of them to
 *     finish its item. That is the cost of having no thread of its own; a
 *     processor that waits on I/O returns ASYNC and keeps its worker's
 *     turns short (README "Known limits").
 */
#include <stdint.h>

#include "scheduler/sched_int.h"

/* a is due before b; equal due times in arming order (timer_seq is 64-bit
 * and only grows: no wrap). */
static bool kmq__timer_before(const kmq_sched_actor_t *a,
                              const kmq_sched_actor_t *b) {
  if (a->timer_due_ns != b->timer_due_ns)
    return a->timer_due_ns < b->timer_due_ns;
  return a->timer_seq < b->timer_seq;
}

/* Publishes the heap's length and earliest due time for the unlocked
 * hints. Relaxed: readers only decide whether to take the lock, where the
 * real take happens. @locks_required runq_lock */
static void kmq__timer_publish_locked(kmq_sched_t *s, uint32_t len) {
  atomic_store_explicit(&s->ntimers, len, memory_order_relaxed);
  atomic_store_explicit(&s->timer_next_ns,
                        len > 0 ? s->timer_heap[0]->timer_due_ns : INT64_MAX,
                        memory_order_relaxed);
}

/* @locks_required runq_lock */
static void kmq__timer_push_locked(kmq_sched_t *s, kmq_sched_actor_t *a) {
  uint32_t len = atomic_load_explicit(&s->ntimers, memory_order_relaxed);
  if (len >= s->runq_cap)
    KMQ__SCHED_BUG("timer heap overflow");
  kmq_sched_actor_t **h = s->timer_heap;
  uint32_t i = len;
  while (i > 0) { /* sift up */
    uint32_t parent = (i - 1) / 2;
    if (!kmq__timer_before(a, h[parent]))
      break;
    h[i] = h[parent];
    i = parent;
  }
  h[i] = a;
  kmq__timer_publish_locked(s, len + 1);
}

/* Removes and returns the earliest timer's actor (the heap is not empty).
 * @locks_required runq_lock */
static kmq_sched_actor_t *kmq__timer_pop_locked(kmq_sched_t *s) {
  uint32_t len = atomic_load_explicit(&s->ntimers, memory_order_relaxed);
  kmq_sched_actor_t **h = s->timer_heap;
  kmq_sched_actor_t *top = h[0];
  kmq_sched_actor_t *last = h[--len];
  uint32_t i = 0;
  for (;;) { /* sift last down from the root */
    uint32_t c = 2 * i + 1;
    if (c >= len)
      break;
    if (c + 1 < len && kmq__timer_before(h[c + 1], h[c]))
      c++;
    if (!kmq__timer_before(h[c], last))
      break;
    h[i] = h[c];
    i = c;
  }
  if (len > 0)
    h[i] = last;
  kmq__timer_publish_locked(s, len);
  return top;
}

kmq_sched_actor_t *kmq__timer_take_locked(kmq_sched_t *s, void **itemp) {
  /* Relaxed: written under runq_lock only, which we hold: exact. */
  if (atomic_load_explicit(&s->ntimers, memory_order_relaxed) == 0)
    return NULL;
  /* Relaxed: stop stores `stopping` before its broadcast under this lock,
   * which we hold, so a woken worker sees it. */
  if (!atomic_load_explicit(&s->stopping, memory_order_relaxed) &&
      kmq__mono_ns() < s->timer_heap[0]->timer_due_ns)
    return NULL;
  kmq_sched_actor_t *a = kmq__timer_pop_locked(s);
  *itemp = a->timer_item;
  a->timer_item = NULL;
  return a;
}

kmq_sched_actor_t *kmq__timer_poll(kmq_sched_t *s, void **itemp) {
  /* Relaxed hints (see kmq__timer_publish_locked): a stale value delays a
   * due timer to the next check or sends us to a lock that finds nothing;
   * it never takes a timer early, the lock decides. */
  if (atomic_load_explicit(&s->ntimers, memory_order_relaxed) == 0)
    return NULL;
  if (!atomic_load_explicit(&s->stopping, memory_order_relaxed) &&
      kmq__mono_ns() <
          atomic_load_explicit(&s->timer_next_ns, memory_order_relaxed))
    return NULL;
  pthread_mutex_lock(&s->runq_lock);
  kmq_sched_actor_t *a = kmq__timer_take_locked(s, itemp);
  pthread_mutex_unlock(&s->runq_lock);
  return a;
}

void kmq__timer_fire(kmq_sched_t *s, kmq_sched_actor_t *a, void *item) {
  /* Relaxed: as for queued items (kmq__gen_should_cancel), a retry racing
   * with stop either runs or is cancelled, exactly once either way. */
  if (atomic_load_explicit(&s->stopping, memory_order_relaxed)) {
    s->cbs.cancel(s->opaque, item);
    atomic_fetch_add_explicit(&s->st_cancelled, 1, memory_order_relaxed);
    kmq__actor_finish(s, a, false); /* a is not touched after this */
    return;
  }
  /* Relaxed: the double-done detector, as in kmq__actor_step; the lock
   * that took a off the heap orders the previous holder's work before
   * this run. */
  atomic_store_explicit(&a->running, true, memory_order_relaxed);
  s->cbs.run(s->opaque, a, item);
  /* a now belongs to the item's completer again. */
}

void kmq__timer_sleep_locked(kmq_sched_t *s) {
  /* Relaxed: written under runq_lock only, which we hold: exact. */
  if (atomic_load_explicit(&s->ntimers, memory_order_relaxed) == 0 ||
      s->timer_watched) {
    pthread_cond_wait(&s->wake_cond, &s->runq_lock);
    return;
  }
  s->timer_watched = true;
  int64_t due = s->timer_heap[0]->timer_due_ns;
  struct timespec ts = {.tv_sec = due / 1000000000,
                        .tv_nsec = due % 1000000000};
  /* ETIMEDOUT and spurious returns alike: the caller looks again. */
  pthread_cond_timedwait(&s->timer_cond, &s->runq_lock, &ts);
  s->timer_watched = false;
}

void kmq__timer_handover_locked(kmq_sched_t *s) {
  /* Relaxed: both counts are written under runq_lock, which we hold. */
  if (!s->timer_watched &&
      atomic_load_explicit(&s->ntimers, memory_order_relaxed) > 0 &&
      atomic_load_explicit(&s->sleepers, memory_order_relaxed) > 0)
    pthread_cond_signal(&s->wake_cond);
}

/* ---- public API ---- */

kmq_err_t kmq_sched_retry_after(kmq_sched_t *s, kmq_sched_actor_t *actor,
                                void *item, int64_t delay_ms) {
  if (s == NULL || actor == NULL || item == NULL || delay_ms < 0)
    return KMQ_ERR_INVALID_ARG;
  int64_t now = kmq__mono_ns();
  /* Saturates instead of overflowing: a due time past INT64_MAX ns (292
   * years of uptime) is never reached anyway. */
  int64_t room_ms = (INT64_MAX - now) / 1000000;
  int64_t due = now + (delay_ms < room_ms ? delay_ms : room_ms) * 1000000;

  pthread_mutex_lock(&s->runq_lock);
  /* Relaxed: kmq_sched_stop stores it before its own runq_lock section;
   * see the comment there. */
  if (atomic_load_explicit(&s->stopping, memory_order_relaxed)) {
    pthread_mutex_unlock(&s->runq_lock);
    return KMQ_ERR_SHUTDOWN;
  }
  /* Relaxed: the double-done detector only (kmq_sched_done). Under the
   * lock so that a refusal leaves the flag as it was. */
  if (!atomic_exchange_explicit(&actor->running, false,
                                memory_order_relaxed)) {
    pthread_mutex_unlock(&s->runq_lock);
    return KMQ_ERR_STATE;
  }
  actor->timer_item = item;
  actor->timer_due_ns = due;
  actor->timer_seq = s->timer_seq++;
  kmq__timer_push_locked(s, actor);
  atomic_fetch_add_explicit(&s->st_retries, 1, memory_order_relaxed);
  if (s->timer_heap[0] == actor && s->timer_watched)
    pthread_cond_signal(&s->timer_cond); /* an earlier deadline: re-arm */
  else if (!s->timer_watched && /* relaxed: written under our lock */
           atomic_load_explicit(&s->sleepers, memory_order_relaxed) > 0)
    pthread_cond_signal(&s->wake_cond); /* nobody watches: one must */
  /* From the unlock on a worker may run or cancel the item: neither actor
   * nor item is touched after it, nor s (sched_int.h). */
  pthread_mutex_unlock(&s->runq_lock);
  return KMQ_OK;
}
