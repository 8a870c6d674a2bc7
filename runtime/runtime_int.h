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
 * wait (see `entered` below); "inside kmq__rt_enter" below also covers
 * the poll thread at dispatch (a keyless record's dead letter), which
 * destroy never runs beside (the same thread) and whose job reference
 * keeps rt alive.
 * The references (refs, enter, leave, unref) are inline here.
 */
#ifndef KMQ_RUNTIME_RUNTIME_INT_H
#define KMQ_RUNTIME_RUNTIME_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
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
  /* The first cache line (the consumer aligns areas to lines): all that
   * kmq__job_on_message writes per message, so that handing a record out
   * costs the poll thread one line that a worker last wrote, not three. */
  kmq_runtime_t *rt;
  const rd_kafka_message_t *m;
  kmq_ack_t ack;
  kmq_sched_actor_t *actor; /* NULL for messages dead-lettered at dispatch */
  int64_t t0_us; /* dispatched: its poll call's first dispatch */
  /* 1 on the first run; > 1 when kmq__job_run gets the job back from
   * kmq_sched_retry_after (begun and decoded already). */
  int attempt;
  /* Stall diagnostics (runtime/metrics_int.h): state and attempts, a
   * relaxed store per transition, sampled by the poll thread. */
  atomic_int diag;
  /* Its dead letter's attempts so far, and dlq_retry: kmq__job_run gets
   * the job back for the DLQ, not for its processor (kmq__dlq_retry). */
  int dlq_tries;
  unsigned char dlq_retry;
  unsigned char decoded; /* msg holds a decoded message to clear */
  /* From here on, written by the workers. entry: the processor, set by
   * kmq__prepare (NULL until then). */
  const kmq_proc_entry_t *entry;
  /* Its dead letter, kept for a retry when neither the DLQ nor the store
   * took it (kmq__dlq_retry): the arguments of kmq__job_dlq (static
   * strings, job->err or the ctx's reason, all stable until the job
   * ends). */
  const char *dlq_reason, *dlq_error, *dlq_source;
  kmq_chat_msg_t msg;
  kmq_proc_ctx_t ctx;
  char err[256];
} kmq__job_t;

_Static_assert(offsetof(kmq__job_t, entry) <= KMQ__CACHELINE,
               "the fields the poll thread writes fit the first line");


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
  /* When the current poll call dispatched its first message (0: none yet):
   * the dispatch time of every message of that call (which includes the
   * messages before it and a wait for room of up to about 1 ms), so that a
   * burst costs the poll thread one clock read, not one per message.
   * @locality poll thread */
  int64_t batch_t0_us;
  atomic_int stop;

  /* Shutdown with work still running (kmq_runtime_destroy past its
   * bound). Every way back into the runtime for a job (a worker's run or
   * cancel, an ASYNC completion, a DLQ outcome) brackets its own work with
   * kmq__rt_enter/kmq__rt_leave (never the processor call). `entered` is
   * one word: the number of threads inside (KMQ__RT_INSIDE) and destroy's
   * flags. destroy sets KMQ__RT_DETACHED and waits (bounded) for no thread
   * inside; from then on a job that comes back takes the late path
   * (kmq__job_late): it touches only the job, the scheduler it came from
   * and `refs`, never the consumer's API (it does not ack), the DLQ or the
   * gates. One word, so that entering and leaving are one RMW each and
   * destroy's checks are exact: a thread either enters before the flag or
   * sees it.
   * `refs` is 1 (the owner) + the jobs between kmq__job_on_message and
   * their end; whoever drops the last one frees the runtime and what
   * destroy could not free: a stuck processor keeps its job and message
   * (and so the closed consumer handle, whose record slab holds both)
   * alive until it returns. An entered thread takes no reference of its
   * own (a job can end inside, dropping its): the owner's covers it.
   * destroy drops the owner's only once no thread is inside; when one is
   * still inside at its deadline (a dead-letter send waiting on a full
   * queue, a fallback hook), destroy sets KMQ__RT_ABANDONED instead and
   * the last thread to leave drops it (KMQ__RT_OWNER_DROPPED: exactly
   * once), keeping the DLQ and the consumer until then. */
  /* On cache lines of their own: every message writes them, `entered`
   * from the workers, `refs` from the poll thread and the workers, and
   * sharing a line with the read-mostly fields above would make every
   * reader miss. */
  _Alignas(KMQ__CACHELINE) atomic_llong entered;
  _Alignas(KMQ__CACHELINE) atomic_long refs;

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

#define KMQ__RT_INSIDE 0xffffffffLL       /* threads inside */
#define KMQ__RT_DETACHED (1LL << 40)      /* destroy: no entering */
#define KMQ__RT_ABANDONED (1LL << 41)     /* the last out drops the owner's */
#define KMQ__RT_OWNER_DROPPED (1LL << 42) /* ... and has dropped it */

/* Leaves (or undoes a refused entry). The last thread out of an abandoned
 * runtime drops the owner's reference, which may free it: nothing of rt
 * may be touched after this. acq_rel: what the thread did inside happens
 * before destroy's (acquire) check that no one is inside, and before the
 * free of the last one out. */
static inline void kmq__rt_leave(kmq_runtime_t *rt) {
  long long old =
      atomic_fetch_sub_explicit(&rt->entered, 1, memory_order_acq_rel);
  if ((old & KMQ__RT_ABANDONED) && (old & KMQ__RT_INSIDE) == 1 &&
      !(atomic_fetch_or_explicit(&rt->entered, KMQ__RT_OWNER_DROPPED,
                                 memory_order_acq_rel) &
        KMQ__RT_OWNER_DROPPED))
    kmq__rt_unref(rt);
}

/* Enters the runtime's own code for a job (see `entered`). Returns false,
 * entered nothing, when the runtime is detached: take the late path
 * (kmq__job_late) instead. The caller's job reference keeps rt alive
 * meanwhile (and the owner's, while entered). */
static inline bool kmq__rt_enter(kmq_runtime_t *rt) {
  if (!(atomic_fetch_add_explicit(&rt->entered, 1, memory_order_acq_rel) &
        KMQ__RT_DETACHED))
    return true;
  kmq__rt_leave(rt);
  return false;
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
