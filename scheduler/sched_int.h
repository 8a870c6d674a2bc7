/*
 * kmq scheduler internals: shared by the .c files of scheduler/ only.
 *
 * Who touches what.
 *   - Dispatcher-only state (actor table, LRU list, free list, slabs, the
 *     dispatcher clock, filter slots) is plain memory: a single thread reads
 *     and writes it, no locks. Workers read the few fields of an actor that
 *     are immutable while it is live (key, s, mailbox storage); the
 *     happens-before edge is the run-queue publication (runq_lock).
 *   - An actor's `pending` counter is the ownership token. It counts items
 *     pushed into the mailbox and not yet finished (done or cancelled). The
 *     transition 0 -> 1 (dispatcher) and every finish that leaves it > 0
 *     (any thread) put the actor on the run queue (a worker cancelling a
 *     run of items may instead keep it, a bounded number of times; a done
 *     inside cbs->run, on the runner's own thread, leaves it to the runner,
 *     which puts it on the queue and takes the oldest in one lock,
 *     kmq__runq_swap, often taking it straight back); so an actor is, at
 *     any time, exactly one of:
 *       idle      pending == 0: owned by the dispatcher, which may recycle
 *                 it;
 *       queued    on the run queue (pending > 0, nothing running);
 *       held      by one runner: the worker that popped it, then whoever
 *                 holds the running item's token until kmq_sched_done or
 *                 kmq_sched_retry_after;
 *       on timer  its running item waits for a retry (timer.c): the token
 *                 holder gave it to the timer heap with
 *                 kmq_sched_retry_after, under runq_lock; pending still
 *                 counts the item, so the dispatcher neither queues nor
 *                 recycles it and its next items wait. The worker that
 *                 takes it off the heap (under runq_lock) becomes its
 *                 runner again: it hands the item to cbs->run (back to
 *                 "held") or, once stopping, to cbs->cancel and finishes
 *                 it like a done.
 *     The runner is the mailbox's single consumer, the dispatcher its
 *     single producer: SPSC (an actor on a timer pops nothing).
 *   - Rule: whoever performs the finish that takes `pending` to 0 must not
 *     touch the actor afterwards (the dispatcher may recycle it at once).
 *   - kmq_sched_retry_after gives the token up inside its runq_lock section:
 *     from the unlock on, a worker may already run, or cancel and finish,
 *     the item, so the caller touches neither the actor nor the item after
 *     the call. The item stays counted in `pending` and `inflight`
 *     throughout, so destroy cannot free s before a worker took it off the
 *     heap, which needs the lock the caller released.
 *   - `inflight` counts items not yet finished over the whole scheduler. A
 *     thread finishing an item from outside the worker pool must not touch
 *     the scheduler after its decrement of `inflight` (destroy waits for 0,
 *     then frees); the 1 -> 0 step is done under `lock` for that reason.
 */
#ifndef KMQ_SCHED_INT_H
#define KMQ_SCHED_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <ck_ring.h>

#include "kmq/sched.h"
#include "lib/util.h" /* KMQ__CACHELINE */

/* Keys up to this length live inside the actor (in its first line: a
 * WeCom external_userid is 32 bytes); longer keys get one heap block when
 * the actor is bound (a new user, never per item). */
#define KMQ__SCHED_KEY_INLINE 32
/* Actor slots allocated per slab chunk. */
#define KMQ__SCHED_SLAB_ACTORS 64
/* Outstanding cancellation generations (power of two). */
#define KMQ__SCHED_FILTERS 64
/* Empty run-queue polls before a worker goes to sleep. */
#define KMQ__SCHED_SPIN 64
/* Items a worker may cancel in a row on one actor before re-queueing it. */
#define KMQ__SCHED_CANCEL_BATCH 64
/* Initial actor-table size (power of two). */
#define KMQ__SCHED_TABLE_MIN 1024

/* Aborts with a message: for broken internal invariants only. */
#define KMQ__SCHED_BUG(msg) kmq__sched_bug(__FILE__, __LINE__, msg)
_Noreturn void kmq__sched_bug(const char *file, int line, const char *msg);

/* One mailbox slot: the caller's item, the low 32 bits of the cancellation
 * generation that was current when it was submitted (cancel.c: a queued
 * item is never more than KMQ__SCHED_FILTERS generations old, so 32 bits
 * identify it) and its submit sequence number (the run queue's priority;
 * queued items are never 2^31 submits apart: kmq.max.inflight bounds
 * them). 16 bytes: 100 000 idle users keep their mailboxes. */
struct kmq__mbox_entry {
  void *item;
  uint32_t gen;
  uint32_t seq;
};

/* a was submitted before b (sequence numbers wrap). */
static inline bool kmq__seq_before(uint32_t a, uint32_t b) {
  return (int32_t)(a - b) < 0;
}
CK_RING_PROTOTYPE(kmq__mbox, kmq__mbox_entry)

struct kmq_sched_actor_s {
  /* -- The first cache line: all that the dispatcher reads to route an item
   *    to a live actor (kmq__actor_find's key compare, kmq__actor_touch's
   *    stamp check, the mailbox push's buffer), so that a submit to an actor
   *    gone cold costs one line here, not two. The key and mbox_buf are
   *    immutable while live (written by the dispatcher before the actor is
   *    first published on the run queue; read by runners); stamp_ms is
   *    dispatcher-only. -- */
  char *key;                        /* key_inline or a heap block */
  size_t key_len;
  struct kmq__mbox_entry *mbox_buf; /* inside the slab, after this struct */
  int64_t stamp_ms; /* dispatcher clock at the last submit/busy check */
  char key_inline[KMQ__SCHED_KEY_INLINE];
  /* -- Dispatcher-only (@locality dispatcher) -- */
  kmq_sched_actor_t *lru_prev; /* LRU order = stamp order; free-list link */
  kmq_sched_actor_t *lru_next;
  uint64_t hash;
  /* -- Immutable while live, as above -- */
  kmq_sched_t *s;

  /* -- Shared -- */
  /* Items pushed and not finished; see the ownership rule above. */
  _Alignas(KMQ__CACHELINE) _Atomic uint32_t pending;
  /* An item of this actor is in cbs->run/awaiting kmq_sched_done. Only a
   * double-done detector; ordering comes from `pending`. */
  _Atomic bool running;
  /* The seq of the item in cbs->run, written by its runner before the
   * call: kmq__step_finish keeps the actor only for that item's done. */
  uint32_t run_seq;

  /* Retry timer (timer.c), under s->runq_lock only: the running item put
   * back by kmq_sched_retry_after, when it is due (CLOCK_MONOTONIC ns) and
   * its arming order (ties run first armed, first run). Meaningful only
   * while the actor is on the timer heap. */
  void *timer_item;
  int64_t timer_due_ns;
  uint64_t timer_seq;

  /* SPSC mailbox: producer = dispatcher, consumer = current runner. Its own
   * cache lines (ck_ring pads c_head and p_tail apart). */
  _Alignas(KMQ__CACHELINE) ck_ring_t mbox;
};

_Static_assert(offsetof(struct kmq_sched_actor_s, lru_prev) == KMQ__CACHELINE,
               "the dispatcher's lookup fields fill the actor's first line");

/* Open-addressing (linear probing) table key -> actor. Dispatcher only. */
typedef struct kmq__table_slot_s {
  uint64_t hash;
  kmq_sched_actor_t *actor; /* NULL: empty */
} kmq__table_slot_t;

typedef struct kmq__table_s {
  kmq__table_slot_t *slots;
  size_t mask; /* size - 1 */
  size_t used;
} kmq__table_t;

/* A slab chunk: this header, then KMQ__SCHED_SLAB_ACTORS actor slots of
 * s->actor_stride bytes each (actor struct + its mailbox storage). */
typedef struct kmq__slab_s {
  struct kmq__slab_s *next;
  char pad[KMQ__CACHELINE - sizeof(void *)];
} kmq__slab_t;

/* A cancellation predicate (cancel.c). Written by the dispatcher before it
 * publishes the generation with a release store of cancel_gen; read by
 * workers after an acquire load of it. */
typedef struct kmq__filter_s {
  bool (*pred)(void *item, void *arg);
  void *arg;
  void (*arg_free)(void *arg);
} kmq__filter_t;

/* Counters written by the dispatcher only: updated with a relaxed load and
 * a relaxed store (no RMW needed with a single writer), read from anywhere
 * with relaxed loads. Nothing is ordered by them. */
typedef struct kmq__dstats_s {
  _Atomic uint64_t submitted;
  _Atomic uint64_t backpressure;
  _Atomic uint64_t actors_live;
  _Atomic uint64_t actors_created;
  _Atomic uint64_t actors_reclaimed;
  _Atomic uint64_t actor_slots;
  _Atomic uint64_t mailbox_depth_max;
} kmq__dstats_t;

/* A run-queue entry: a queued actor and its priority, the seq of its
 * mailbox head when it was queued (the head cannot change while it is
 * queued: only its runner pops). The seq lives in the heap itself, so that
 * a sift compares within one array instead of reading an actor (a likely
 * cache miss with many users) at every level. */
typedef struct {
  uint32_t seq;
  kmq_sched_actor_t *a;
} kmq__runq_ent_t;

struct kmq_sched_s {
  /* -- Immutable after kmq_sched_new -- */
  kmq_sched_callbacks_t cbs;
  void *opaque;
  uint32_t mbox_size;    /* ring slots, power of two; holds mbox_size - 1 */
  uint64_t max_inflight;
  uint64_t max_actors;
  int64_t idle_ms;
  size_t actor_stride;   /* bytes per actor slot in a slab chunk */
  uint64_t hash_seed;
  int nworkers;
  int nstarted;          /* threads actually started */
  pthread_t *threads;

  /* -- Dispatcher-only (@locality dispatcher) -- */
  kmq__table_t table;
  kmq_sched_actor_t *lru_head; /* oldest stamp */
  kmq_sched_actor_t *lru_tail;
  kmq_sched_actor_t *free_list;
  kmq__slab_t *slabs;
  uint64_t live;               /* mirror of dstats.actors_live */
  int64_t clock_ms;            /* now_ms of the latest reclaim */
  uint32_t submit_seq;         /* seq of the next submitted item */
  bool batching;               /* inside kmq_sched_batch_begin/end */
  uint32_t deferred;           /* actors queued without a wake-up */
  uint64_t gen_lo;             /* oldest generation that may have items */
  kmq__filter_t filters[KMQ__SCHED_FILTERS]; /* slot g & (N-1): filter g */

  /* -- Run queue: actors with work, oldest head item first, under
   * runq_lock (sched.c) --
   * A binary min-heap on the entries' seq: workers take the actor whose
   * next item was submitted first, so items run close to submit (offset)
   * order and the commit gate's backlog of finished-but-uncommittable
   * offsets stays near the number of workers; a FIFO of actors let an old
   * item wait behind every other runnable actor's turn (bench/RESULTS.md).
   * A mutex, not a lock-free ring: with more workers than CPUs a producer
   * preempted inside ck_ring's multi-producer enqueue made every other
   * producer spin behind it (finding 1); a waiter on a mutex sleeps
   * instead, and the critical section is short. */
  _Alignas(KMQ__CACHELINE) pthread_mutex_t runq_lock;
  kmq__runq_ent_t *runq_heap;    /* runq_cap slots */
  uint32_t runq_cap;             /* > the most actors queued at once */
  pthread_cond_t wake_cond;    /* idle workers wait here, on runq_lock */
  /* Workers in wake_cond: written under runq_lock; atomic only so that
   * kmq_sched_stats can read it without the lock. */
  _Atomic uint32_t sleepers;
  /* Workers awake and looking for an actor: incremented before a worker
   * starts looking, decremented when it found one or (under runq_lock)
   * before it sleeps. A push wakes a sleeper only when more actors are
   * queued than this: each spinner takes one, or rechecks under the lock
   * before it sleeps, so no actor is left behind. */
  _Atomic uint32_t spinners;
  bool exiting;                /* workers must return; under runq_lock */
  /* Length, written under runq_lock; read without it only as a hint by
   * spinning workers (relaxed: the lock orders the real pop). */
  _Atomic uint32_t runq_len;

  /* -- Retry timers (timer.c): a min-heap of actors on (timer_due_ns,
   * timer_seq), also under runq_lock, so that a worker decides to sleep
   * looking at both queues at once. -- */
  kmq_sched_actor_t **timer_heap; /* runq_cap slots: one per actor that
                                     can have an item running */
  uint64_t timer_seq;             /* next arming order */
  /* The one sleeping worker that waits with a deadline (the earliest due
   * timer), on timer_cond; the other sleepers wait on wake_cond without
   * one. Under runq_lock. */
  bool timer_watched;
  pthread_cond_t timer_cond; /* CLOCK_MONOTONIC, on runq_lock */
  /* Heap length and the earliest due time (INT64_MAX when empty): written
   * under runq_lock; read without it only as hints by busy workers between
   * items and by kmq_sched_stats (relaxed: the lock orders the real take).
   */
  _Atomic uint32_t ntimers;
  _Atomic int64_t timer_next_ns;

  /* -- Drain / shutdown -- */
  _Alignas(KMQ__CACHELINE) pthread_mutex_t lock;
  pthread_cond_t drained_cond; /* destroy waits here for inflight == 0
                                  (CLOCK_MONOTONIC, for destroy_within) */
  _Atomic bool stopping;       /* destroy began: cancel, don't run */
  /* kmq_sched_destroy_within gave up waiting: the threads are detached and
   * the last one to return frees s (kmq__worker_exit); the final inflight
   * release tells them to return. Both under `lock`. */
  bool abandoned;
  int workers_live; /* started and not yet returned */

  /* -- Cancellation generations (cancel.c) -- */
  _Alignas(KMQ__CACHELINE) _Atomic uint64_t cancel_gen;
  /* Items submitted under generation g and not yet dequeued, at g & (N-1). */
  _Atomic uint64_t gen_queued[KMQ__SCHED_FILTERS];

  _Alignas(KMQ__CACHELINE) _Atomic uint64_t inflight;

  _Alignas(KMQ__CACHELINE) kmq__dstats_t dstats;
  /* Worker/any-thread counters: relaxed RMW, order nothing. */
  _Alignas(KMQ__CACHELINE) _Atomic uint64_t st_run;
  _Atomic uint64_t st_cancelled;
  _Alignas(KMQ__CACHELINE) _Atomic uint64_t st_completed;
  _Atomic uint64_t st_retries; /* accepted kmq_sched_retry_after calls */
};

/* Dispatcher-only counter update (single writer, see kmq__dstats_t). */
static inline void kmq__dstat_add(_Atomic uint64_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* CLOCK_MONOTONIC in ns: retry due times and timer_cond's deadlines. */
static inline int64_t kmq__mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- worker.c ---- */

/* Queues a (not queued, pending > 0) with the seq of its mailbox head;
 * wakes a sleeping worker if wake and no awake worker will take it. The
 * mutex orders everything this thread did to a before the popping worker's
 * first access. @locality any thread */
void kmq__runq_push(kmq_sched_t *s, kmq_sched_actor_t *a, uint32_t seq,
                    bool wake);

/* Wakes sleepers for the queued actors no awake worker will take.
 * @locks_required runq_lock */
void kmq__wake_locked(kmq_sched_t *s);

/* kmq_sched_done's shortcut: when called on a worker thread for the item
 * that worker's cbs->run is running (a synchronous completion, before run
 * returns; a run started from the run queue, not a retry timer's),
 * finishes it like kmq__actor_finish but leaves an actor with
 * more items to that worker, which goes on with it after run returns
 * (kmq__actor_step) instead of a push on the run queue and a pop by some
 * worker: one run-queue lock per item instead of two. Returns false (did
 * nothing) anywhere else. @locality any thread */
bool kmq__step_finish(kmq_sched_t *s, kmq_sched_actor_t *a);

/* A worker thread's body (arg: the scheduler); returns once `exiting`. */
void *kmq__worker_main(void *arg);
/* A worker returns: the last one out of an abandoned scheduler frees it.
 * @locality the returning worker, its last access to s */
void kmq__worker_exit(kmq_sched_t *s);

/* ---- sched.c ---- */

/* Finishes the actor's current item (run then done, retried then
 * cancelled, or cancelled). Returns true when the actor has more items and
 * the caller keeps running it (only if keep); otherwise the actor was
 * re-queued or went idle and the caller must not touch it again.
 * @locality the actor's runner */
bool kmq__actor_finish(kmq_sched_t *s, kmq_sched_actor_t *a, bool keep);

/* ---- timer.c (sleeping and waking: see its header comment) ---- */

/* Takes the actor of the earliest timer if it is due, or of any timer once
 * stopping; its item in *itemp. NULL when none. @locks_required runq_lock
 */
kmq_sched_actor_t *kmq__timer_take_locked(kmq_sched_t *s, void **itemp);

/* The busy worker's check between two items: as kmq__timer_take_locked,
 * but costs one relaxed load while no timer is pending and takes the lock
 * only when one looks due. @locality any worker */
kmq_sched_actor_t *kmq__timer_poll(kmq_sched_t *s, void **itemp);

/* Hands a taken timer's item to cbs->run (the actor's running item again)
 * or, once stopping, to cbs->cancel. @locality any worker (the taker) */
void kmq__timer_fire(kmq_sched_t *s, kmq_sched_actor_t *a, void *item);

/* Sleeps once (the caller loops and counts itself in `sleepers`): as the
 * watcher until the earliest timer is due when timers are pending and
 * nobody watches them, else on wake_cond. @locks_required runq_lock */
void kmq__timer_sleep_locked(kmq_sched_t *s);

/* Called by a worker leaving its sleep with work: when timers are pending
 * and no sleeper watches them any more (it was the watcher), wakes one to
 * take over. @locks_required runq_lock */
void kmq__timer_handover_locked(kmq_sched_t *s);

/* ---- actor.c: table, slab, LRU (@locality dispatcher for all) ---- */

uint64_t kmq__key_hash(const kmq_sched_t *s, const void *key, size_t len);

kmq_err_t kmq__table_init(kmq__table_t *t, size_t size);
void kmq__table_free(kmq__table_t *t);

/* The live actor bound to key, or NULL. */
kmq_sched_actor_t *kmq__actor_find(const kmq_sched_t *s, uint64_t hash,
                                   const void *key, size_t len);

/* Binds a free (or newly allocated) slot to key: table, LRU tail, counters.
 * The caller has checked kmq.sched.max.actors. Returns KMQ_ERR_NOMEM with
 * nothing changed when a slab chunk, a long key or a bigger table cannot be
 * allocated. */
kmq_err_t kmq__actor_bind(kmq_sched_t *s, uint64_t hash, const void *key,
                          size_t len, kmq_sched_actor_t **ap);

/* Marks a as used at the dispatcher clock (moves it to the LRU tail when
 * its stamp changes, or always when force). */
void kmq__actor_touch(kmq_sched_t *s, kmq_sched_actor_t *a, bool force);

/* Unbinds idle actor a (pending == 0 observed with acquire) and returns its
 * slot to the free list. */
void kmq__actor_unbind(kmq_sched_t *s, kmq_sched_actor_t *a);

/* Frees every slab chunk and long key. Only when no thread runs. */
void kmq__actors_free_all(kmq_sched_t *s);

/* ---- cancel.c ---- */

/* Counts one more queued item tagged gen (the current cancel_gen), before
 * the item becomes runnable. @locality dispatcher. */
void kmq__gen_count(kmq_sched_t *s, uint64_t gen);

/* True when a dequeued item must be cancelled instead of run. Must be
 * followed by kmq__gen_dequeued for the same entry. @locality runner. */
bool kmq__gen_should_cancel(kmq_sched_t *s, const struct kmq__mbox_entry *e);

/* Ends the entry's accounting: after it, filters newer than the entry's
 * generation may be released by the dispatcher. @locality runner. */
void kmq__gen_dequeued(kmq_sched_t *s, const struct kmq__mbox_entry *e);

/* Releases filters no queued item can need any more (all of them when
 * all is true: destroy, after the workers are joined). @locality dispatcher.
 */
void kmq__gen_retire(kmq_sched_t *s, bool all);

#endif /* KMQ_SCHED_INT_H */
