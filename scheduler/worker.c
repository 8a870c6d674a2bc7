/*
 * kmq scheduler: where workers find work and how they sleep. The run queue
 * (a min-heap of actors on their head item's submit order, under
 * runq_lock; sched_int.h says why), the wake-up accounting for sleeping
 * workers, and the worker loop, which also takes due retry timers
 * (timer.c), and goes on with an actor whose item finished inside cbs->run
 * (kmq__step_finish) without a second trip through the run queue. The
 * ownership protocol is in sched_int.h.
 */
#include "scheduler/sched_ring.h"

/* ---- run queue (sched_int.h: a min-heap under a mutex) ---- */

/* Wakes sleepers for the queued actors no awake worker will take. Called
 * with runq_lock held. A woken worker counts as a sleeper until it runs,
 * so a burst of pushes may wake one worker more than needed: harmless.
 * The timer watcher (timer.c) is a sleeper too but waits on timer_cond:
 * it is woken last, when the others on wake_cond are not enough. */
void kmq__wake_locked(kmq_sched_t *s) {
  uint32_t len = atomic_load_explicit(&s->runq_len, memory_order_relaxed);
  uint32_t awake = atomic_load_explicit(&s->spinners, memory_order_relaxed);
  uint32_t sleepers = atomic_load_explicit(&s->sleepers, memory_order_relaxed);
  uint32_t need = len > awake ? len - awake : 0;
  if (need > sleepers)
    need = sleepers;
  uint32_t plain = sleepers - (s->timer_watched ? 1 : 0);
  if (need > plain) {
    pthread_cond_signal(&s->timer_cond);
    need = plain;
  }
  while (need-- > 0)
    pthread_cond_signal(&s->wake_cond);
}

/* See sched_int.h. The mutex orders everything this thread did to a
 * before the popping worker's first access. @locality any thread */
void kmq__runq_push(kmq_sched_t *s, kmq_sched_actor_t *a, uint32_t seq,
                    bool wake) {
  pthread_mutex_lock(&s->runq_lock);
  uint32_t len = atomic_load_explicit(&s->runq_len, memory_order_relaxed);
  if (len >= s->runq_cap)
    KMQ__SCHED_BUG("run queue overflow");
  uint32_t i = len;
  kmq__runq_ent_t *h = s->runq_heap;
  while (i > 0) { /* sift up */
    uint32_t parent = (i - 1) / 2;
    if (!kmq__seq_before(seq, h[parent].seq))
      break;
    h[i] = h[parent];
    i = parent;
  }
  h[i] = (kmq__runq_ent_t){seq, a};
  atomic_store_explicit(&s->runq_len, len + 1, memory_order_relaxed);
  if (wake)
    kmq__wake_locked(s);
  pthread_mutex_unlock(&s->runq_lock);
}

/* Puts e at the root of the heap h[0..len) (its old root gone) and sifts
 * it down. Called with runq_lock held. */
static void kmq__runq_sift_root(kmq__runq_ent_t *h, uint32_t len,
                                kmq__runq_ent_t e) {
  uint32_t i = 0;
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= len)
      break;
    if (c + 1 < len && kmq__seq_before(h[c + 1].seq, h[c].seq))
      c++;
    if (!kmq__seq_before(h[c].seq, e.seq))
      break;
    h[i] = h[c];
    i = c;
  }
  h[i] = e;
}

/* The actor with the oldest head item, or NULL. Called with runq_lock
 * held. */
static kmq_sched_actor_t *kmq__runq_take(kmq_sched_t *s) {
  uint32_t len = atomic_load_explicit(&s->runq_len, memory_order_relaxed);
  if (len == 0)
    return NULL;
  kmq__runq_ent_t *h = s->runq_heap;
  kmq_sched_actor_t *top = h[0].a;
  if (--len > 0)
    kmq__runq_sift_root(h, len, h[len]);
  atomic_store_explicit(&s->runq_len, len, memory_order_relaxed);
  return top;
}

/* Between two items of a worker's run: a, held with more items, and the
 * queued actors compete for the worker on their head items' submit order,
 * as if a were pushed and the oldest popped, in one lock: a itself when
 * its head is the oldest (the queue untouched), else the oldest queued
 * actor, a taking its place. The queue's length does not change, so no
 * sleeper needs waking. @locality a's runner */
static kmq_sched_actor_t *kmq__runq_swap(kmq_sched_t *s,
                                         kmq_sched_actor_t *a) {
  kmq__runq_ent_t e = {kmq__mbox_head_seq(a), a};
  pthread_mutex_lock(&s->runq_lock);
  uint32_t len = atomic_load_explicit(&s->runq_len, memory_order_relaxed);
  kmq__runq_ent_t *h = s->runq_heap;
  if (len > 0 && kmq__seq_before(h[0].seq, e.seq)) {
    a = h[0].a;
    kmq__runq_sift_root(h, len, e);
  }
  pthread_mutex_unlock(&s->runq_lock);
  return a;
}

/* Takes the head actor without sleeping; NULL when the queue looks empty.
 * The unlocked length check keeps spinning workers off the lock.
 * @locality any worker */
static kmq_sched_actor_t *kmq__runq_pop(kmq_sched_t *s) {
  if (atomic_load_explicit(&s->runq_len, memory_order_relaxed) == 0)
    return NULL;
  pthread_mutex_lock(&s->runq_lock);
  kmq_sched_actor_t *a = kmq__runq_take(s);
  pthread_mutex_unlock(&s->runq_lock);
  return a;
}

/* Sleeps until a retry timer is due (returned, its item in *itemp), an
 * actor is queued (returned, *itemp NULL) or the scheduler exits (NULL).
 * A push, a new timer and stop signal under runq_lock, which a sleeper
 * holds from its checks until it is inside its wait: no lost wake-up.
 * @locality any worker */
static kmq_sched_actor_t *kmq__worker_wait(kmq_sched_t *s, void **itemp) {
  kmq_sched_actor_t *a = NULL;
  *itemp = NULL;
  pthread_mutex_lock(&s->runq_lock);
  /* Under the lock: a push that still counts us as awake has queued its
   * actor before we look below. */
  atomic_fetch_sub_explicit(&s->spinners, 1, memory_order_relaxed);
  while ((a = kmq__timer_take_locked(s, itemp)) == NULL &&
         (a = kmq__runq_take(s)) == NULL && !s->exiting) {
    atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_relaxed);
    kmq__timer_sleep_locked(s);
    atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
  }
  if (a != NULL)
    kmq__timer_handover_locked(s);
  pthread_mutex_unlock(&s->runq_lock);
  return a;
}

/* The item a worker's cbs->run is running (kmq__step_finish). */
typedef struct {
  kmq_sched_t *s;
  kmq_sched_actor_t *a;
  uint32_t seq; /* the item's (a->run_seq while it runs) */
  bool done; /* kmq_sched_done came before run returned */
  bool more; /* ... and left the actor with this worker (items remain) */
} kmq__step_t;

/* The worker thread's step, NULL outside cbs->run. Thread-local scratch:
 * only its own thread reads or writes it, so nothing is shared. */
static _Thread_local kmq__step_t *kmq__step;

bool kmq__step_finish(kmq_sched_t *s, kmq_sched_actor_t *a) {
  kmq__step_t *st = kmq__step;
  /* The same actor's later item, finished on this thread while its run
   * goes on (a processor completing other contexts), is not ours to
   * keep: its runner was another worker. The seq tells them apart; the
   * item reached us after its runner wrote it. */
  if (st == NULL || st->s != s || st->a != a || st->done ||
      a->run_seq != st->seq)
    return false;
  st->done = true;
  st->more = kmq__actor_finish(s, a, true);
  return true;
}

/* Runs or cancels the head item(s) of an actor popped from the run queue,
 * then, while each item finishes before run returns and leaves more,
 * whatever is oldest (kmq__runq_swap): the same actor or another. Due
 * retry timers still come first between two items.
 * @locality any worker (the actor's runner) */
static void kmq__actor_step(kmq_sched_t *s, kmq_sched_actor_t *a) {
  for (int n = 1;; n++) {
    struct kmq__mbox_entry e;
    /* pending > 0 and we are the runner, and every counted item was
     * committed before its count: the mailbox cannot be empty. */
    if (!kmq__mbox_pop(a, &e))
      KMQ__SCHED_BUG("runnable actor with an empty mailbox");
    bool cancel = kmq__gen_should_cancel(s, &e);
    kmq__gen_dequeued(s, &e);
    if (!cancel) {
      /* Relaxed: the token reaches the completing thread through the
       * caller's own hand-off, which orders this store before its done. */
      atomic_store_explicit(&a->running, true, memory_order_relaxed);
      atomic_fetch_add_explicit(&s->st_run, 1, memory_order_relaxed);
      a->run_seq = e.seq;
      kmq__step_t step = {s, a, e.seq, false, false};
      kmq__step = &step;
      s->cbs.run(s->opaque, a, e.item);
      kmq__step = NULL;
      /* Unless its item finished in there and left it to us, a belongs to
       * the item's completer (or the dispatcher): not touched again. */
      if (!step.more)
        return;
      void *item;
      kmq_sched_actor_t *t = kmq__timer_poll(s, &item);
      if (t != NULL) {
        kmq__runq_push(s, a, kmq__mbox_head_seq(a), true);
        kmq__timer_fire(s, t, item);
        return;
      }
      a = kmq__runq_swap(s, a);
      n = 0; /* a new run of a (maybe another) actor */
      continue;
    }
    s->cbs.cancel(s->opaque, e.item);
    atomic_fetch_add_explicit(&s->st_cancelled, 1, memory_order_relaxed);
    /* Keep cancelling on this actor a bounded number of times, then
     * re-queue it so other actors get a turn. */
    if (!kmq__actor_finish(s, a, n < KMQ__SCHED_CANCEL_BATCH))
      return;
  }
}

void *kmq__worker_main(void *arg) {
  kmq_sched_t *s = arg;
  for (;;) {
    void *item;
    /* A due retry first, between every two items: its item is older than
     * anything still queued on its actor. */
    kmq_sched_actor_t *a = kmq__timer_poll(s, &item);
    if (a != NULL) {
      kmq__timer_fire(s, a, item);
      continue;
    }
    atomic_fetch_add_explicit(&s->spinners, 1, memory_order_relaxed);
    for (int spin = 0; spin < KMQ__SCHED_SPIN && a == NULL; spin++) {
      if ((a = kmq__runq_pop(s)) == NULL)
        ck_pr_stall();
    }
    if (a != NULL) {
      atomic_fetch_sub_explicit(&s->spinners, 1, memory_order_relaxed);
    } else if ((a = kmq__worker_wait(s, &item)) == NULL) {
      kmq__worker_exit(s);
      return NULL;
    } else if (item != NULL) {
      kmq__timer_fire(s, a, item);
      continue;
    }
    kmq__actor_step(s, a);
  }
}

