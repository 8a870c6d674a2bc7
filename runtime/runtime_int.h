/*
 * The runtime's inside, shared by its files (kmq__ prefix, not installed):
 *   runtime.c   the object: new, poll, run, stop, destroy (which detaches
 *               the runtime when a job is still out), metrics, the
 *               consumer's hooks, and kmq__rt_free (the last reference);
 *   job.c       one message's path from dispatch to ack: routing, decode,
 *               processor attempts, retries on the scheduler's timer,
 *               cancel, completion, and the late path (a job back after
 *               destroy detached the runtime);
 *   job_dlq.c   a job's dead letter: the DLQ, its outcome, the retry when
 *               neither the DLQ nor the fallback store took it.
 * Threads: the poll thread dispatches (kmq__job_on_message); workers run
 * jobs (kmq__job_run, kmq__job_cancel); an ASYNC processor's completing
 * thread and the DLQ's delivery thread bring outcomes back. Every way back
 * into the runtime for a job brackets its own work with kmq__rt_enter /
 * kmq__rt_leave (never the processor call), so that destroy can bound its
 * wait (see `detached` below); "inside kmq__rt_enter" below also covers
 * the poll thread at dispatch (a keyless record's dead letter), which
 * destroy never runs beside (the same thread) and whose job reference
 * keeps rt alive.
 * The references (refs, enter, leave, unref) are inline here.
 */
#ifndef KMQ_RUNTIME_RUNTIME_INT_H
#define KMQ_RUNTIME_RUNTIME_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "kmq/consumer.h"
#include "kmq/dlq.h"
#include "kmq/fallback.h"
#include "kmq/hist.h"
#include "kmq/message.h"
#include "kmq/runtime.h"
#include "kmq/sched.h"
#include "lib/log.h"
#include "lib/util.h"
#include "processors/proc_ctx.h"
#include "runtime/metrics_int.h"


/* One message from dispatch to ack. A job has no home of its own: it is the
 * area of the message's record in the consumer's slab (kmq_ack_data; the
 * consumer was created with record_size = sizeof(kmq__job_t)), so the
 * consumer's kmq.max.inflight is its only budget and kmq_ack its only end.
 * The job pointer is also the scheduler's item. The rd_kafka_message_t is
 * the consumer's too, valid until the ack; kmq_ack is the last touch of
 * the job (the poll thread may reuse the record at once). The area keeps
 * its bytes between records: rt and ctx are set on a record's first use
 * (the consumer zeroes the slab), the rest per message. */
typedef struct kmq__job_s {
  kmq_runtime_t *rt;
  const rd_kafka_message_t *m;
  kmq_ack_t ack;
  kmq_sched_actor_t *actor; /* NULL for messages dead-lettered at dispatch */
  const kmq_proc_entry_t *entry;
  kmq_chat_msg_t msg;
  int decoded;
  /* 1 on the first run; > 1 when kmq__job_run gets the job back from
   * kmq_sched_retry_after (begun and decoded already). */
  int attempt;
  int64_t t0_us;
  /* Its dead letter, kept for a retry when neither the DLQ nor the store
   * took it (kmq__dlq_retry): the arguments of kmq__job_dlq (static strings,
   * job->err or the ctx's reason, all stable until the job ends) and the
   * attempts so far. dlq_retry: kmq__job_run gets the job back for the DLQ,
   * not for its processor. */
  const char *dlq_reason, *dlq_error, *dlq_source;
  int dlq_tries;
  int dlq_retry;
  /* Stall diagnostics (runtime/metrics_int.h): state and attempts, a
   * relaxed store per transition, sampled by the poll thread. */
  atomic_int diag;
  kmq_proc_ctx_t ctx;
  char err[256];
} kmq__job_t;


struct kmq_runtime_s {
  char *topic;
  kmq_consumer_t *consumer;
  kmq_sched_t *sched;
  kmq_dlq_t *dlq;
  kmq_fallback_t *store; /* kmq.fallback.backend's, as the DLQ's hook when
                          * the application gave none; may be NULL */
  kmq_msg_decoder_t *dec;
  kmq_proc_registry_t *reg;
  const kmq_proc_entry_t *raw; /* set: every record goes to it undecoded */
  kmq_hist_t *lat;
  kmq__obs_t *obs; /* metrics endpoint, errors, stall sampling */

  int max_attempts;
  int64_t backoff_ms, backoff_max_ms, close_ms, flush_ms;
  int64_t dlq_backoff_ms, dlq_backoff_max_ms; /* kmq.dlq.retry.backoff* */
  size_t max_bytes;
  int subscribed;
  /* kmq.mode=shadow: consumes in its own group (never the live one) and
   * writes nothing: no DLQ; what would be dead-lettered is counted in
   * `failed` and its offset finished in the shadow group. */
  int shadow;
  kmq__log_sink_t log; /* the conf's log hook */
  int64_t last_tick;
  atomic_int stop;

  /* Shutdown with work still running (kmq_runtime_destroy past its
   * bound). Every way back into the runtime for a job (a worker's run or
   * cancel, an ASYNC completion, a DLQ outcome) brackets its own work with
   * kmq__rt_enter/kmq__rt_leave (never the processor call). destroy sets
   * `detached` and waits (bounded) for `entered` to reach 0; from then on
   * a job that comes back takes the late path (kmq__job_late): it touches
   * only the job, the scheduler it came from and `refs`, never the
   * consumer's API (it does not ack), the DLQ or the gates. `refs` is 1
   * (the owner, dropped by destroy) + the jobs between kmq__job_on_message
   * and their end + the threads entered; whoever drops the last one frees
   * the runtime and what destroy could not free: a stuck processor keeps
   * its job and message (and so the closed consumer handle, whose record
   * slab holds both) alive until it returns; a thread still entered at
   * destroy's deadline (a dead-letter send waiting on a full queue, a
   * fallback hook) keeps the DLQ and the consumer until it leaves. */
  /* Each group below on cache lines of its own: every message writes
   * these from the poll thread and the workers, and sharing a line with
   * the read-mostly fields above would make every reader miss. */
  _Alignas(KMQ__CACHELINE) atomic_int detached;
  atomic_int entered;
  atomic_long refs;

  /* Relaxed counters: metrics only. The poll thread's, then the others
   * (workers, completion threads). */
  _Alignas(KMQ__CACHELINE) atomic_llong dispatched;
  atomic_llong gate_backlog, commit_lag;

  _Alignas(KMQ__CACHELINE) atomic_llong processed;
  atomic_llong failed, retried, dlq_lost, cancelled, dlq_retries;
  /* Jobs whose dead letter waits for a retry now (a gauge). */
  atomic_llong dlq_retrying;
};

#define KMQ__INC(rt, f)                                                        \
  atomic_fetch_add_explicit(&(rt)->f, 1, memory_order_relaxed)
#define KMQ__DIAG_SET(job, st, n)                                              \
  atomic_store_explicit(&(job)->diag, KMQ__DIAG(st, n), memory_order_relaxed)

static inline int64_t kmq__now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- references (inline; kmq__rt_free in runtime.c) ---- */

/* Frees the runtime once its last reference is gone (kmq__rt_unref). */
void kmq__rt_free(kmq_runtime_t *rt);

/* Drops one reference; the last one frees the runtime. acq_rel: what every
 * holder did happens before the free. */
static inline void kmq__rt_unref(kmq_runtime_t *rt) {
  if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1)
    kmq__rt_free(rt);
}

/* Enters the runtime's own code for a job (see `detached`), holding a
 * reference until kmq__rt_leave. Returns false, entered and referenced
 * nothing, when the runtime is detached: take the late path
 * (kmq__job_late) instead. The caller's job reference keeps rt alive
 * meanwhile. seq_cst with destroy's store of detached and load of entered:
 * either destroy sees us entered and waits, or we see detached. */
static inline bool kmq__rt_enter(kmq_runtime_t *rt) {
  atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
  atomic_fetch_add(&rt->entered, 1);
  if (!atomic_load(&rt->detached))
    return true;
  atomic_fetch_sub_explicit(&rt->entered, 1, memory_order_release);
  atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_relaxed);
  return false;
}

/* Leaves; may free the runtime (destroy gave up waiting for us): nothing
 * of rt may be touched after it. */
static inline void kmq__rt_leave(kmq_runtime_t *rt) {
  atomic_fetch_sub_explicit(&rt->entered, 1, memory_order_release);
  kmq__rt_unref(rt);
}

/* ---- the message path (job.c) ---- */

/* The consumer's handler: fills the record's job and routes it to its
 * user's actor. @locality poll thread */
kmq_err_t kmq__job_on_message(const rd_kafka_message_t *m, kmq_ack_t ack,
                              void *opaque);
/* The scheduler's callbacks (kmq_sched_callbacks_t). @locality a worker */
void kmq__job_run(void *opaque, kmq_sched_actor_t *actor, void *item);
void kmq__job_cancel(void *opaque, void *item);
/* A job back after destroy detached the runtime: released without an ack;
 * ends with the job's reference. Any thread. */
void kmq__job_late(kmq_runtime_t *rt, kmq__job_t *job);
/* The message's outcome is known: records its latency, frees the actor,
 * acks (ok: finished; else left for redelivery). Inside kmq__rt_enter. */
void kmq__job_finish(kmq__job_t *job, int ok);
/* Left unfinished for the next owner, counted as cancelled. Inside
 * kmq__rt_enter. */
void kmq__job_drop(kmq__job_t *job);
/* The wait before retry `attempt` + 1: backoff doubled per retry, capped
 * at max. */
int64_t kmq__job_backoff_ms(int64_t base, int64_t max, int attempt);

/* ---- dead letters (job_dlq.c) ---- */

/* Dead-letters the job's message; the ack follows the DLQ outcome, so the
 * offset is finished only once the record is durable somewhere. Inside
 * kmq__rt_enter; the job is not touched by the caller afterwards. */
void kmq__job_dlq(kmq__job_t *job, const char *reason, const char *error,
                  const char *source);

#endif
