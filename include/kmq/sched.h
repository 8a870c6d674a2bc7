/*
 * kmq scheduler: per-key ordered, cross-key parallel execution of opaque
 * items on a fixed pool of worker threads (the actor model, no Kafka inside).
 *
 * Contract.
 *   - Items are opaque `void *` owned by the caller. The scheduler stores the
 *     pointer, never dereferences it and never allocates per item. An item
 *     accepted by kmq_sched_submit() ends exactly once: either acknowledged
 *     with kmq_sched_done() after cbs->run, or handed to cbs->cancel
 *     (kmq_sched_cancel_if(), kmq_sched_stop()/_destroy()). In between, the
 *     holder of a running item may put it back with kmq_sched_retry_after():
 *     it is handed to cbs->run again after a delay, or to cbs->cancel if
 *     the scheduler stops first, so one item may see cbs->run several
 *     times, cbs->cancel at most once, and never both cbs->cancel and
 *     kmq_sched_done(). A refused submit hands nothing back: the caller
 *     still owns the item.
 *   - Items with the same key (a user id) form one actor. An actor runs at
 *     most one item at a time, in submit order; the next item starts only
 *     after kmq_sched_done() for the previous one, which may come from any
 *     thread, long after cbs->run returned. An item waiting for its retry
 *     delay is still its actor's running item: the actor's next items wait
 *     for it, other actors run meanwhile, and no thread waits with it.
 *     Different actors run in parallel.
 *   - Threads. One "dispatcher" thread (the Kafka poll thread) owns the
 *     scheduler: it alone calls kmq_sched_new, _submit, _can_accept,
 *     _reclaim, _cancel_if, _stop and _destroy. cbs->run, cbs->cancel and
 *     cancellation predicates run on worker threads only, never on the
 *     dispatcher.
 *     kmq_sched_done, kmq_sched_retry_after, kmq_sched_actor_key and
 *     kmq_sched_stats are callable from any thread.
 *   - Bounds. Everything is bounded by configuration and a full bound is an
 *     explicit KMQ_ERR_BACKPRESSURE, never silent growth:
 *       kmq.sched.mailbox.size  items queued per actor (rounded up to a power
 *                               of two N; N - 1 queued plus 1 running);
 *       kmq.max.inflight        items submitted and not yet done/cancelled
 *                               (the runtime's items are its consumer's
 *                               records, bounded by the same key: it calls
 *                               kmq_sched_done before acking the record,
 *                               and items are cancelled only once the
 *                               scheduler stopped taking submits, so this
 *                               bound never refuses a record the consumer
 *                               admitted; runtime/job.c kmq__complete);
 *       kmq.sched.max.actors    live actors (keys with state);
 *       kmq.sched.workers       worker threads (0: online CPUs);
 *       kmq.sched.idle.ms       idle time after which kmq_sched_reclaim()
 *                               recycles an actor.
 *     Retry timers need no bound of their own: at most one per actor with
 *     a running item, stored in the actor, ordered in a heap allocated by
 *     kmq_sched_new for min(kmq.sched.max.actors, kmq.max.inflight).
 *     Memory grows only when a new key needs an actor and no recycled slot
 *     is free; slots are reused after reclaim and freed by destroy.
 *   - Failure. A function returning an error has done nothing (no item
 *     enqueued, no callback called, no ownership taken) beyond counting a
 *     backpressure refusal in the stats.
 */
#ifndef KMQ_SCHED_H
#define KMQ_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_sched_s kmq_sched_t;

/* The actor (key) an item runs under. Passed to cbs->run as the completion
 * token for that item: give it back to kmq_sched_done(). Valid from the run
 * callback until kmq_sched_done() returns; the actor may be recycled for
 * another key afterwards. */
typedef struct kmq_sched_actor_s kmq_sched_actor_t;

typedef struct kmq_sched_callbacks_s {
  /* Processes one item. @locality any worker thread.
   * Called for the oldest queued item of an actor that has no other item
   * running, and again for an item put back with kmq_sched_retry_after()
   * once its delay has passed (same item, same actor token; the scheduler
   * does not say which of the two it is: the item's own state does).
   * Ownership of item passes to the callee. The item counts as running
   * until kmq_sched_done(s, actor) is called, exactly once, from this
   * callback or later from any thread; the actor's next item waits until
   * then. Must not call kmq_sched_destroy(). Required. */
  void (*run)(void *opaque, kmq_sched_actor_t *actor, void *item);

  /* Hands back an item that will not run (matched a kmq_sched_cancel_if()
   * predicate, or kmq_sched_stop()/_destroy() began), including one that
   * ran before and was waiting for its retry delay when the scheduler
   * stopped. Ownership passes to the callee; kmq_sched_done() must NOT be
   * called for it. @locality any worker thread. Required. */
  void (*cancel)(void *opaque, void *item);
} kmq_sched_callbacks_t;

/* Counters, readable any time from any thread. Each field is read with a
 * relaxed atomic load: every field is exact on its own, but fields are not a
 * consistent snapshot of each other while the scheduler is busy. */
typedef struct kmq_sched_stats_s {
  uint64_t submitted;         /* items accepted by kmq_sched_submit */
  uint64_t run;               /* items handed to cbs->run (retries not
                                 counted again) */
  uint64_t completed;         /* items acknowledged by kmq_sched_done */
  uint64_t cancelled;         /* items handed to cbs->cancel (queued, or
                                 waiting for a retry at shutdown) */
  uint64_t retries;           /* kmq_sched_retry_after calls accepted */
  uint64_t timers;            /* items waiting for their retry delay now */
  uint64_t inflight;          /* submitted, not yet completed nor cancelled */
  uint64_t backpressure;      /* submits refused with KMQ_ERR_BACKPRESSURE */
  uint64_t actors_live;       /* actors with a key (busy or idle) */
  uint64_t actors_created;    /* actors ever bound to a key */
  uint64_t actors_reclaimed;  /* actors recycled by kmq_sched_reclaim */
  uint64_t actor_slots;       /* actor slots allocated (live + free): memory */
  uint64_t mailbox_depth_max; /* most items ever queued in one mailbox */
  uint32_t workers;           /* worker threads */
  uint32_t workers_sleeping;  /* of them, waiting for work */
  uint32_t mailbox_capacity;  /* items one mailbox can queue */
} kmq_sched_stats_t;

/* Creates a scheduler and starts its worker threads.
 * conf is read (kmq.sched.*, kmq.max.inflight) and not kept. cbs is copied;
 * both callbacks are required. opaque is passed to every callback and must
 * outlive the scheduler.
 * Returns NULL with the reason in errstr when an argument is invalid, memory
 * is short or a thread cannot be started. Destroy with kmq_sched_destroy().
 * @locality the thread that will be the dispatcher. */
kmq_sched_t *kmq_sched_new(const kmq_conf_t *conf,
                           const kmq_sched_callbacks_t *cbs, void *opaque,
                           char *errstr, size_t errstr_size);

/* Stops the scheduler (kmq_sched_stop) and frees it. Blocks until every
 * item already handed to cbs->run has been acknowledged with
 * kmq_sched_done() (from other threads); items still queued, and items
 * waiting for a retry delay, are handed to cbs->cancel on worker threads
 * instead of running; pending cancellation predicates are released (their
 * arg_free called here). Then workers are joined and all memory is freed;
 * no callback runs after it returns. NULL is a no-op. Must not be called
 * from a callback.
 * @locality dispatcher thread. */
void kmq_sched_destroy(kmq_sched_t *s);

/* kmq_sched_destroy() that gives up after timeout_ms (< 0: no limit).
 * Returns KMQ_OK when the scheduler was freed as kmq_sched_destroy() frees
 * it. Returns KMQ_ERR_TIMED_OUT when an item handed to cbs->run was still
 * not acknowledged at the deadline (a stuck processor): the scheduler is
 * then *abandoned* and the caller must not use it again. Its workers go on
 * cancelling what is still queued (cbs->cancel may run after this returns,
 * so opaque must stay valid until the outstanding items are done) and
 * accept the late kmq_sched_done() of the stuck items; after the last one
 * the workers return and the last of them frees the scheduler (pending
 * kmq_sched_cancel_if predicates' arg_free run then, on that worker). An
 * item that is never acknowledged keeps the scheduler's memory and its idle
 * workers for the life of the process; nothing else waits for it.
 * @locality dispatcher thread; not from a callback. */
kmq_err_t kmq_sched_destroy_within(kmq_sched_t *s, int timeout_ms);

/* Begins shutdown without blocking: from now on kmq_sched_submit() and
 * kmq_sched_retry_after() return KMQ_ERR_SHUTDOWN; items still queued and
 * items waiting for a retry delay (whether due or not) are handed to
 * cbs->cancel instead of running, at once by the workers; items already
 * running finish normally with kmq_sched_done().
 * The dispatcher may keep doing other work while the scheduler drains
 * (kmq_sched_stats().inflight reaches 0), then must call
 * kmq_sched_destroy(). Idempotent; NULL is a no-op. @locality dispatcher. */
void kmq_sched_stop(kmq_sched_t *s);

/* Queues item on the actor for key (key_len bytes, compared bytewise; the
 * key is copied when the actor is created and need not outlive the call).
 * On KMQ_OK the scheduler owns item until it hands it to cbs->run or
 * cbs->cancel.
 * Errors (item NOT queued; the caller keeps it; nothing else changed except
 * the backpressure counter):
 *   KMQ_ERR_BACKPRESSURE  the key's mailbox is full, kmq.max.inflight items
 *                         are in flight, or the key has no actor and
 *                         kmq.sched.max.actors actors are live. Retry after
 *                         completions (kmq_sched_can_accept() says when) or,
 *                         for the actor bound, after kmq_sched_reclaim().
 *   KMQ_ERR_NOMEM         a new key needed an actor and memory is short.
 *   KMQ_ERR_SHUTDOWN      kmq_sched_stop() was called.
 *   KMQ_ERR_INVALID_ARG   s or item is NULL, or key is NULL with key_len > 0.
 * Never blocks; allocates only when a new key finds no free actor slot.
 * @locality dispatcher thread. */
kmq_err_t kmq_sched_submit(kmq_sched_t *s, const void *key, size_t key_len,
                           void *item);

/* Brackets a burst of kmq_sched_submit() calls (e.g. one consumer poll):
 * in between, waking a sleeping worker for a newly runnable actor is
 * deferred until KMQ_SCHED_WAKE_BATCH actors became runnable or
 * kmq_sched_batch_end() is called, which wakes as many workers as there are
 * runnable actors that no awake worker is looking for. One futex wake per
 * burst instead of one per message; a worker that is awake picks the work
 * up meanwhile. Outside a batch, every submit wakes at once. Not nestable;
 * NULL is a no-op. @locality dispatcher thread.
 * 512: above the runtime's default burst (kmq.poll.batch, 500), so one
 * poll wakes sleeping workers once. Workers that empty the queue faster
 * than the dispatcher fills it fall asleep again between wakes: with 16,
 * a catch-up of 1 M messages cost about 300 k context switches, and the
 * no-op pipeline's CPU per message fell by about a quarter with 512
 * (bench/RESULTS.md). The price: when every worker sleeps, the first
 * items of a burst wait until the batch ends or 511 more are dispatched
 * (about 0.5 ms of dispatching); a dispatcher that may block mid-batch
 * hands them over first with kmq_sched_batch_flush (the runtime does
 * before a rebalance callback and a keyless record's dead letter). */
#define KMQ_SCHED_WAKE_BATCH 512
void kmq_sched_batch_begin(kmq_sched_t *s);
void kmq_sched_batch_end(kmq_sched_t *s);
/* Inside a batch: wakes the workers for what it deferred so far and goes
 * on batching. For a dispatcher about to block mid-burst (a rebalance
 * callback waiting for running messages, a dead-letter send waiting for
 * room), which would otherwise keep up to KMQ_SCHED_WAKE_BATCH - 1
 * runnable actors from sleeping workers for as long. No-op outside a
 * batch and on NULL. @locality dispatcher thread. */
void kmq_sched_batch_flush(kmq_sched_t *s);

/* True when kmq_sched_submit() for this key would not return
 * KMQ_ERR_BACKPRESSURE right now (it may still fail with KMQ_ERR_NOMEM).
 * Workers only ever free capacity, so a true answer stays true until the
 * dispatcher itself submits. Cheap: one hash lookup.
 * @locality dispatcher thread. */
bool kmq_sched_can_accept(const kmq_sched_t *s, const void *key,
                          size_t key_len);

/* Acknowledges the running item of actor: the item handed to cbs->run with
 * this actor token. Must be called exactly once per run item, from any
 * thread, with the s the item was submitted to. After it returns the actor's
 * next item may start and the token must not be used again.
 * Returns KMQ_ERR_STATE (and does nothing) when the actor has no running
 * item, i.e. a detected second acknowledgement (detection is best effort: a
 * late duplicate after the actor started its next item is not detected),
 * KMQ_ERR_INVALID_ARG for NULL arguments. Never blocks, never allocates.
 * Called from inside cbs->run for the item it is running (a synchronous
 * completion; a first run, not one after kmq_sched_retry_after's delay),
 * the actor's next item starts after run returns, on the
 * same worker when it is the oldest queued work (else the oldest queued
 * actor runs there and this one waits its turn in the run queue): the
 * order is the run queue's either way, at one lock per item instead of
 * two. @locality any thread. */
kmq_err_t kmq_sched_done(kmq_sched_t *s, kmq_sched_actor_t *actor);

/* Puts the running item of actor back to run again later: after delay_ms
 * (CLOCK_MONOTONIC; 0: as soon as a worker is free), on a worker, the
 * scheduler calls cbs->run(opaque, actor, item) again with the same actor
 * token. Meanwhile the actor keeps the item as its running one: its next
 * items wait (order), other actors run, and no thread waits for the delay
 * (the item is on a timer owned by the scheduler). Called by the holder of
 * the token instead of kmq_sched_done(), from any thread: inside cbs->run
 * on a worker, or on the thread that completes an asynchronous item. item
 * is normally the item cbs->run was given; the scheduler stores whatever
 * pointer it gets and hands that back.
 * On KMQ_OK the caller gives up the token and item: it must not use either
 * again (cbs->run may already be running the item on another worker when
 * this returns) until cbs->run hands them back. A due retry runs before
 * queued items; with every worker busy it waits for the first of them to
 * finish its item (no timer thread). Should the scheduler stop first, the
 * item is handed to cbs->cancel instead (it will not run again) and counts
 * as finished.
 * Errors (nothing done: whoever held the token still does):
 *   KMQ_ERR_SHUTDOWN     kmq_sched_stop() was called: finish the item with
 *                        kmq_sched_done() instead;
 *   KMQ_ERR_STATE        the actor has no running item (detection is best
 *                        effort, as for kmq_sched_done());
 *   KMQ_ERR_INVALID_ARG  s, actor or item NULL, or delay_ms < 0.
 * Never allocates: one timer per actor with a running item, in storage
 * sized at kmq_sched_new. Takes the run queue's lock briefly; never blocks
 * otherwise. A delay beyond the monotonic clock's range is cut to it.
 * @locality any thread (the token's holder). */
kmq_err_t kmq_sched_retry_after(kmq_sched_t *s, kmq_sched_actor_t *actor,
                                void *item, int64_t delay_ms);

/* The key of actor, its length in *key_lenp (if not NULL). The bytes are
 * valid while the actor has an item running (from cbs->run until
 * kmq_sched_done(), including retry delays). Not NUL-terminated.
 * @locality any thread. */
const void *kmq_sched_actor_key(const kmq_sched_actor_t *actor,
                                size_t *key_lenp);

/* Recycles idle actors: those with nothing queued or running whose last
 * submit is at least kmq.sched.idle.ms old. now_ms is the dispatcher's
 * monotonic clock (e.g. kt_now_ms / CLOCK_MONOTONIC in ms); the scheduler
 * stamps submissions with the now_ms of the latest reclaim call, so idle
 * time is measured with the resolution of the reclaim period. Busy actors
 * found on the way have their stamp refreshed. Also releases cancellation
 * predicates that no longer apply (their arg_free is called here).
 * Cost: proportional to the actors examined (only those old enough).
 * Returns the number of actors recycled. @locality dispatcher thread. */
size_t kmq_sched_reclaim(kmq_sched_t *s, int64_t now_ms);

/* Cancels items queued now whose pred(item, arg) is true: instead of
 * running they are handed to cbs->cancel and count as finished. Items
 * already running are not affected (they complete with kmq_sched_done());
 * items submitted after this call are never tested against pred. Per-actor
 * order of the remaining items is kept.
 * Cancellation happens lazily on workers, when each queued item reaches the
 * head of its actor's mailbox: an item queued behind a running item is
 * cancelled when that item is done. Every actor with queued items is
 * scheduled, so nothing waits for a new submit. To wait for a set of items
 * (e.g. a revoked partition) the caller counts its own items back through
 * cbs->run/kmq_sched_done and cbs->cancel.
 * pred is called on worker threads, concurrently with itself and with the
 * dispatcher; it must be thread-safe and must not call into the scheduler.
 * On KMQ_OK the scheduler owns arg: arg_free(arg) (if not NULL) is called
 * exactly once on the dispatcher thread, from this call, kmq_sched_reclaim()
 * or kmq_sched_destroy(), once pred can no longer be called.
 * Errors (nothing done, arg not taken): KMQ_ERR_INVALID_ARG (s or pred
 * NULL); KMQ_ERR_BACKPRESSURE when 63 earlier cancellations still have
 * items queued from before them (call kmq_sched_reclaim() and retry).
 * @locality dispatcher thread. */
kmq_err_t kmq_sched_cancel_if(kmq_sched_t *s,
                              bool (*pred)(void *item, void *arg), void *arg,
                              void (*arg_free)(void *arg));

/* One actor's mailbox for kmq_sched_top_mailboxes(). */
typedef struct kmq_sched_mailbox_s {
  char key[64];   /* the actor's key, cut to 63 bytes, NUL-terminated */
  size_t key_len; /* bytes copied into key (the real key may be longer) */
  uint64_t depth; /* items queued plus the one running (or retrying) */
} kmq_sched_mailbox_t;

/* Fills out with the (at most) k live actors holding the most items, the
 * deepest first; returns how many were written. A sample for diagnostics:
 * it walks every live actor (cost proportional to kmq_sched_stats()
 * .actors_live, no allocation), so call it at a sampling interval, not per
 * item. Depths are read with relaxed loads while workers run: each is a
 * value the actor had during the call. @locality dispatcher thread. */
size_t kmq_sched_top_mailboxes(const kmq_sched_t *s, kmq_sched_mailbox_t *out,
                               size_t k);

/* Fills *out with the current counters. @locality any thread. */
void kmq_sched_stats(const kmq_sched_t *s, kmq_sched_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_SCHED_H */
