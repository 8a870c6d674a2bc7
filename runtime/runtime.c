/* Runtime: wires consumer (poll thread) -> scheduler (actors on workers) ->
 * processors -> ack / DLQ. */
#include "kmq/runtime.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/hist.h"
#include "kmq/message.h"
#include "kmq/sched.h"
#include "lib/consumer_records.h"
#include "lib/limits.h"
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
  /* 1 on the first run; > 1 when kmq__run gets the job back from
   * kmq_sched_retry_after (begun and decoded already). */
  int attempt;
  int64_t t0_us;
  /* Its dead letter, kept for a retry when neither the DLQ nor the store
   * took it (kmq__dlq_retry): the arguments of kmq__dlq (static strings,
   * job->err or the ctx's reason, all stable until the job ends) and the
   * attempts so far. dlq_retry: kmq__run gets the job back for the DLQ,
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
   * kmq__enter/kmq__leave (never the processor call). destroy sets
   * `detached` and waits (bounded) for `entered` to reach 0; from then on
   * a job that comes back takes the late path (kmq__late): it touches only
   * the job, the scheduler it came from and `refs`, never the consumer's
   * API (it does not ack), the DLQ or the gates. `refs` is 1 (the owner,
   * dropped by destroy) + the jobs between kmq__on_message and their end +
   * the threads entered; whoever drops the last one frees the runtime and
   * what destroy could not free: a stuck processor keeps its job and
   * message (and so the closed consumer handle, whose record slab holds
   * both) alive until it returns; a thread still entered at destroy's
   * deadline (a dead-letter send waiting on a full queue, a fallback hook)
   * keeps the DLQ and the consumer until it leaves. */
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

#define KMQ__INC(rt, f) atomic_fetch_add_explicit(&(rt)->f, 1, memory_order_relaxed)
#define KMQ__DIAG_SET(job, st, n)                                              \
  atomic_store_explicit(&(job)->diag, KMQ__DIAG(st, n), memory_order_relaxed)

static int64_t kmq__now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void kmq__free(kmq_runtime_t *rt);

/* Drops one reference; the last one frees the runtime. acq_rel: what every
 * holder did happens before the free. */
static void kmq__unref(kmq_runtime_t *rt) {
  if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1)
    kmq__free(rt);
}

/* Enters the runtime's own code for a job (see `detached`), holding a
 * reference until kmq__leave. Returns false, entered and referenced
 * nothing, when the runtime is detached: take the late path (kmq__late)
 * instead. The caller's job reference keeps rt alive meanwhile. seq_cst
 * with destroy's store of detached and load of entered: either destroy sees
 * us entered and waits, or we see detached. */
static bool kmq__enter(kmq_runtime_t *rt) {
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
static void kmq__leave(kmq_runtime_t *rt) {
  atomic_fetch_sub_explicit(&rt->entered, 1, memory_order_release);
  kmq__unref(rt);
}

/* A job that came back after destroy detached the runtime: its outcome
 * is ignored (the consumer left the group and committed without it, so its
 * message is redelivered) and it is not acked: its record stays taken in
 * the closed consumer's slab, which lives until the last reference goes
 * (kmq__free_now destroys the consumer). The user's actor is released on
 * the abandoned scheduler, which frees itself after the last one. Ends
 * with the job's reference: nothing of rt, nor the job, may be touched
 * after it. */
static void kmq__late(kmq_runtime_t *rt, kmq__job_t *job) {
  if (job->dlq_tries)
    atomic_fetch_sub_explicit(&rt->dlq_retrying, 1, memory_order_relaxed);
  if (job->decoded) {
    kmq_chat_msg_clear(&job->msg);
    job->decoded = 0;
  }
  if (job->actor && rt->sched)
    kmq_sched_done(rt->sched, job->actor);
  kmq__unref(rt);
}

typedef struct {
  kmq__job_visit_cb *cb;
  void *opaque;
} kmq__visit_t;

static void kmq__visit_record(const rd_kafka_message_t *m, void *area,
                              void *opaque) {
  kmq__visit_t *v = opaque;
  const kmq__job_t *job = area;
  v->cb(m, atomic_load_explicit(&job->diag, memory_order_relaxed),
        v->opaque);
}

void kmq__runtime_each_job(kmq_runtime_t *rt, kmq__job_visit_cb *cb,
                           void *opaque) {
  /* Every record in flight is a job: kmq__on_message fills its area before
   * returning, on this thread, and a record the handler did not take is
   * voided before the next visit. */
  kmq__visit_t v = {cb, opaque};
  kmq__consumer_each_record(rt->consumer, kmq__visit_record, &v);
}

kmq__obs_t *kmq__runtime_obs(const kmq_runtime_t *rt) { return rt->obs; }

kmq_fallback_t *kmq__runtime_store(const kmq_runtime_t *rt) {
  return rt->store;
}

/* Frees the actor for the user's next message, then acks the job's message
 * (ok: finished, else left for redelivery), which ends the job. In that
 * order so that the scheduler counts an item as in flight only while its
 * record is taken: its kmq.max.inflight, the consumer's, then never
 * refuses what the consumer admitted (sched.h). Inside kmq__enter; drops
 * the job's reference, never the last one (the entered thread holds
 * one). */
static void kmq__complete(kmq__job_t *job, int ok) {
  kmq_runtime_t *rt = job->rt;
  if (job->dlq_tries) {
    atomic_fetch_sub_explicit(&rt->dlq_retrying, 1, memory_order_relaxed);
    if (ok)
      kmq__log_to(&rt->log, "WARN", "runtime",
                  "%s [%d] @%lld: dead letter taken after %d failed "
                  "attempts; the offset finishes, the partition resumes",
                  rd_kafka_topic_name(job->m->rkt), job->m->partition,
                  (long long)job->m->offset, job->dlq_tries);
  }
  if (job->decoded) {
    kmq_chat_msg_clear(&job->msg);
    job->decoded = 0;
  }
  kmq_ack_t ack = job->ack;
  kmq_sched_actor_t *actor = job->actor;
  if (actor)
    kmq_sched_done(rt->sched, actor);
  kmq_ack(ack, ok); /* the job is not touched from here on */
  atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel);
}

/* The message's outcome is known. */
static void kmq__finish(kmq__job_t *job, int ok) {
  kmq_hist_record(job->rt->lat, kmq__now_us() - job->t0_us);
  kmq__complete(job, ok);
}

/* A message that must not start (its partition is being revoked or the
 * consumer is closing): left unfinished for the next owner, the actor freed
 * for the user's next message (which is dropped the same way). */
static void kmq__drop(kmq__job_t *job) {
  KMQ__INC(job->rt, cancelled);
  kmq__complete(job, 0);
}

/* The wait before retry `attempt` + 1: backoff doubled per retry, capped at
 * max; no shift can overflow whatever the attempt (kmq.proc.retries allows
 * 1000). */
static int64_t kmq__backoff_ms(int64_t base, int64_t max, int attempt) {
  int64_t ms = base < max ? base : max;
  for (int i = 1; i < attempt && ms < max; i++)
    ms = ms > max / 2 ? max : ms * 2;
  return ms;
}

/* Neither the DLQ nor the fallback took the job's dead letter: instead of
 * leaving its offset unfinished until a restart (which would hit the same
 * wall), keep it unfinished, pause its partition (kmq_ack_stuck: nothing
 * more is fetched behind it), say so, and send the dead letter again after
 * a capped exponential backoff on the scheduler's timer: the actor holds
 * the user's order meanwhile, other users run. Deferred while it waits,
 * like a processor retry: a revoke drops it for the next owner (kmq__run),
 * a shutdown cancels it (kmq__cancel). Returns false (nothing done) for a
 * job without an actor (dead-lettered at dispatch: no user, no timer) or
 * on a partition already going: then the caller leaves it unfinished.
 * Inside kmq__enter. */
static bool kmq__dlq_retry(kmq__job_t *job, kmq_err_t err) {
  kmq_runtime_t *rt = job->rt;
  if (!job->actor || kmq_ack_revoked(job->ack))
    return false;
  int64_t ms = kmq__backoff_ms(rt->dlq_backoff_ms, rt->dlq_backoff_max_ms,
                               job->dlq_tries + 1);
  if (!job->dlq_tries++)
    atomic_fetch_add_explicit(&rt->dlq_retrying, 1, memory_order_relaxed);
  KMQ__INC(rt, dlq_retries);
  const rd_kafka_message_t *m = job->m;
  kmq__log_to(&rt->log, "ERROR", "runtime",
              "%s [%d] @%lld (user %.*s): neither the DLQ nor the fallback "
              "store took its dead letter (%s, attempt %d): offset left "
              "unfinished, partition paused, retrying in %lld ms",
              rd_kafka_topic_name(m->rkt), m->partition, (long long)m->offset,
              (int)(m->key_len > 64 ? 64 : m->key_len), (const char *)m->key,
              kmq_err2str(err), job->dlq_tries, (long long)ms);
  KMQ__DIAG_SET(job, KMQ_STALL_DLQ, job->dlq_tries);
  kmq_ack_stuck(job->ack, 1);
  job->dlq_retry = 1;
  kmq_ack_defer(job->ack);
  if (kmq_sched_retry_after(rt->sched, job->actor, job, ms) != KMQ_OK)
    kmq__drop(job); /* SHUTDOWN: left unfinished for redelivery */
  return true;
}

/* @locality the DLQ's delivery thread, or the sender when the DLQ
 * decides at once */
static void kmq__dlq_done(kmq_dlq_outcome_t outcome, kmq_err_t err,
                          void *opaque) {
  kmq__job_t *job = opaque;
  kmq_runtime_t *rt = job->rt;
  if (!kmq__enter(rt)) {
    kmq__late(rt, job);
    return;
  }
  if (outcome == KMQ_DLQ_OUTCOME_LOST) {
    /* Neither the DLQ nor the fallback took it: retried (kmq__dlq_retry),
     * or else left unfinished, delivered again after a restart. */
    KMQ__INC(rt, dlq_lost);
    if (!kmq__dlq_retry(job, err))
      kmq__finish(job, 0);
  } else {
    KMQ__INC(rt, failed);
    kmq__finish(job, 1);
  }
  kmq__leave(rt);
}

/* Dead-letters the job's message; the ack follows the DLQ outcome, so the
 * offset is finished only once the record is durable somewhere. */
static void kmq__dlq(kmq__job_t *job, const char *reason, const char *error,
                     const char *source) {
  const rd_kafka_message_t *m = job->m;
  if (job->rt->shadow) {
    /* A shadow must not touch what the live path owns, the DLQ included:
     * the failure is only counted (the live group dead-letters it). */
    KMQ__INC(job->rt, failed);
    kmq__finish(job, 1);
    return;
  }
  job->dlq_reason = reason;
  job->dlq_error = error;
  job->dlq_source = source;
  if (!job->dlq_tries) { /* a retry keeps the state kmq__dlq_retry set */
    KMQ__DIAG_SET(job, KMQ_STALL_DLQ, job->attempt - (job->entry == NULL));
    kmq__obs_dlq(job->rt->obs, reason);
  }
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_message_headers(m, &hdrs);
  kmq_dlq_record_t rec = {
      .original_topic = rd_kafka_topic_name(m->rkt),
      .original_partition = m->partition,
      .original_offset = m->offset,
      .key = m->key,
      .key_len = m->key_len,
      .payload = m->payload,
      .payload_len = m->len,
      .headers = hdrs,
      .reason = reason,
      .error = error,
      .source = source,
  };
  kmq_err_t err = kmq_dlq_send(job->rt->dlq, &rec, kmq__dlq_done, job);
  if (err != KMQ_OK) {
    KMQ__INC(job->rt, dlq_lost);
    if (!kmq__dlq_retry(job, err))
      kmq__finish(job, 0);
  }
}

/* Applies an outcome; the job is not touched afterwards (it may already
 * be retried on another worker, or released). @locality the worker that
 * ran the processor, or the thread completing an ASYNC one */
static void kmq__outcome(kmq__job_t *job, kmq_proc_result_t r) {
  kmq_runtime_t *rt = job->rt;
  switch (r) {
  case KMQ_PROC_OK:
    KMQ__INC(rt, processed);
    kmq__finish(job, 1);
    return;
  case KMQ_PROC_RETRY:
    KMQ__INC(rt, retried);
    if (job->attempt >= rt->max_attempts) {
      kmq__dlq(job, KMQ_PROC_REASON_RETRIES, kmq_proc_ctx_reason(&job->ctx),
               "processor");
      return;
    }
    if (kmq_ack_revoked(job->ack)) {
      /* The partition is going: the next owner retries it. */
      kmq__drop(job);
      return;
    }
    /* The backoff waits on the scheduler's timer, not on this thread: the
     * actor keeps the user's order (the user's next messages wait), the
     * worker runs other users meanwhile, and kmq__run gets the job back
     * with attempt > 1. Deferred meanwhile, like a queued message: a
     * revoke does not wait for the backoff, and kmq__run begins it again
     * or drops it. */
    int64_t ms =
        kmq__backoff_ms(rt->backoff_ms, rt->backoff_max_ms, job->attempt);
    KMQ__DIAG_SET(job, KMQ_STALL_RETRYING, job->attempt);
    job->attempt++;
    kmq_ack_defer(job->ack);
    if (kmq_sched_retry_after(rt->sched, job->actor, job, ms) != KMQ_OK)
      kmq__drop(job); /* SHUTDOWN: left unfinished for redelivery */
    return;
  default:
    kmq__dlq(job, KMQ_PROC_REASON_FAILED, kmq_proc_ctx_reason(&job->ctx),
             "processor");
    return;
  }
}

/* The processor's outcome, back in the runtime (or too late for it). */
static void kmq__resume(kmq__job_t *job, kmq_proc_result_t r) {
  kmq_runtime_t *rt = job->rt;
  if (!kmq__enter(rt)) {
    kmq__late(rt, job);
    return;
  }
  kmq__outcome(job, r);
  kmq__leave(rt);
}

/* Calls the processor once (attempt job->attempt), outside kmq__enter: a
 * processor that never returns must not hold up destroy. */
static void kmq__attempt(kmq__job_t *job) {
  const rd_kafka_message_t *m = job->m;
  KMQ__DIAG_SET(job, KMQ_STALL_RUNNING, job->attempt);
  kmq__proc_ctx_begin(&job->ctx, m->key, m->key_len,
                      rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                      job->attempt, job->rt->max_attempts);
  /* A raw processor gets no decoded message (processor.h). */
  kmq_proc_result_t r = kmq__proc_ctx_returned(
      &job->ctx, job->entry->cb(job->decoded ? &job->msg : NULL, &job->ctx,
                                job->entry->opaque));
  if (r != KMQ_PROC_ASYNC)
    kmq__resume(job, r); /* else kmq__proc_done continues */
}

/* An asynchronous processor completed. @locality the completing thread */
static void kmq__proc_done(kmq_proc_ctx_t *ctx, kmq_proc_result_t result,
                           void *opaque) {
  (void)ctx;
  kmq__resume(opaque, result);
}

/* Everything before the processor call: returns true when the processor
 * must be called (kmq__attempt), false when the job went elsewhere (DLQ,
 * dropped). Inside kmq__enter. */
static bool kmq__prepare(kmq_runtime_t *rt, kmq__job_t *job) {
  const rd_kafka_message_t *m = job->m;
  if (job->dlq_retry) {
    /* Back from a dead-letter retry's backoff: the DLQ again, not the
     * processor. A revoke meanwhile: the next owner has it. */
    if (!kmq_ack_begin(job->ack)) {
      kmq__drop(job);
      return false;
    }
    kmq__dlq(job, job->dlq_reason, job->dlq_error, job->dlq_source);
    return false;
  }
  if (job->attempt > 1) {
    /* Back from its backoff (kmq_sched_retry_after): decoded and routed on
     * its first run, deferred while it waited. A revoke that came meanwhile
     * did not wait for it: the next owner retries it. */
    if (kmq_ack_begin(job->ack))
      return true;
    kmq__drop(job);
    return false;
  }
  if (!kmq_ack_begin(job->ack)) {
    /* Its partition is being revoked (or we are closing): the revoke does
     * not wait for it, the next owner runs it. */
    kmq__drop(job);
    return false;
  }
  KMQ__DIAG_SET(job, KMQ_STALL_RUNNING, 0); /* decoding */
  /* Checked here, in the user's order, not at dispatch: a user's dead
   * letters must come out in offset order (dlq.h). Never parsed. */
  if (m->len > rt->max_bytes) {
    snprintf(job->err, sizeof(job->err),
             "value of %zu bytes exceeds kmq.msg.max.bytes (%zu)", m->len,
             rt->max_bytes);
    kmq__dlq(job, "too_large", job->err, "consumer");
    return false;
  }
  kmq__proc_ctx_set_value(&job->ctx, m->payload, m->len); /* all attempts */
  if (rt->raw) {
    job->entry = rt->raw;
    return true;
  }
  /* The decoder only reads its limits, so workers share it. */
  kmq_err_t err = kmq_msg_decode(rt->dec, m->payload, m->len, &job->msg,
                                 job->err, sizeof(job->err));
  if (err) {
    kmq__dlq(job, kmq_msg_reason(err), job->err, "consumer");
    return false;
  }
  job->decoded = 1;
  if (!kmq_msg_key_matches(&job->msg, m->key, m->key_len)) {
    snprintf(job->err, sizeof(job->err),
             "record key \"%.*s\" differs from external_user_id \"%.*s\"",
             (int)(m->key_len > 64 ? 64 : m->key_len), (const char *)m->key,
             (int)(job->msg.external_user_id.len > 64
                       ? 64
                       : job->msg.external_user_id.len),
             job->msg.external_user_id.ptr);
    kmq__dlq(job, KMQ_MSG_REASON_KEY_MISMATCH, job->err, "consumer");
    return false;
  }
  job->entry = kmq_proc_lookup(rt->reg, &job->msg);
  if (!job->entry) {
    snprintf(job->err, sizeof(job->err),
             "no processor for msg_type \"%.*s\" and no default",
             (int)job->msg.msg_type.len, job->msg.msg_type.ptr);
    kmq__dlq(job, KMQ_PROC_REASON_NO_PROCESSOR, job->err, "processor");
    return false;
  }
  return true;
}

/* @locality worker running the user's actor */
static void kmq__run(void *opaque, kmq_sched_actor_t *actor, void *item) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = item;
  job->actor = actor;
  if (!kmq__enter(rt)) {
    kmq__late(rt, job);
    return;
  }
  bool call = kmq__prepare(rt, job);
  kmq__leave(rt);
  if (call)
    kmq__attempt(job);
}

/* A queued message, or one waiting for its retry, dropped (shutdown):
 * left unfinished, the next owner reads it again from the committed
 * offset. @locality any worker */
static void kmq__cancel(void *opaque, void *item) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = item;
  job->actor = NULL; /* a cancelled item needs no kmq_sched_done */
  if (!kmq__enter(rt)) {
    kmq__late(rt, job);
    return;
  }
  KMQ__INC(rt, cancelled);
  if (job->dlq_tries)
    atomic_fetch_sub_explicit(&rt->dlq_retrying, 1, memory_order_relaxed);
  if (job->decoded) { /* a retry was decoded on its first run */
    kmq_chat_msg_clear(&job->msg);
    job->decoded = 0;
  }
  kmq_ack(job->ack, 0); /* the job is not touched from here on */
  atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel);
  kmq__leave(rt);
}

/* Consumer hooks (@locality poll thread). Errors are counted and reported
 * by the observer. */
static void kmq__on_error(rd_kafka_resp_err_t err, const char *reason,
                          void *opaque) {
  kmq__obs_on_error(err, reason, ((kmq_runtime_t *)opaque)->obs);
}

/* A rebalance may keep the poll thread for long (consumer.h): the actors
 * this poll's batch made runnable go to the workers first. */
static void kmq__on_rebalance(void *opaque) {
  kmq_sched_batch_flush(((kmq_runtime_t *)opaque)->sched);
}

/* @locality poll thread */
static kmq_err_t kmq__on_message(const rd_kafka_message_t *m, kmq_ack_t ack,
                                 void *opaque) {
  kmq_runtime_t *rt = opaque;
  /* The record's area: ours until kmq_ack. Never NULL for a current ack of
   * a consumer created with record_size (kmq_runtime_new). */
  kmq__job_t *job = kmq_ack_data(ack);
  if (!job)
    return KMQ_ERR_STATE;
  if (job->rt != rt) { /* the record's first use */
    job->rt = rt;
    kmq__proc_ctx_init(&job->ctx, kmq__proc_done, job);
  }
  /* Relaxed: the owner's reference keeps refs > 0 while we run. */
  atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
  KMQ__DIAG_SET(job, KMQ_STALL_QUEUED, 0);
  job->m = m;
  job->ack = ack;
  job->actor = NULL;
  job->entry = NULL;
  job->decoded = 0;
  job->attempt = 1;
  job->dlq_tries = 0;
  job->dlq_retry = 0;
  job->t0_us = kmq__now_us();
  /* A record without a key has no user to order by (and no user order to
   * keep): dead-lettered here, before routing, and finished once the DLQ
   * has it. */
  if (!m->key || !m->key_len) {
    /* The send may wait for room in the DLQ's queue: what this poll made
     * runnable goes to the workers first. */
    kmq_sched_batch_flush(rt->sched);
    kmq__dlq(job, "missing_user",
             "record has no key: the key must be the external_userid",
             "consumer");
    return KMQ_OK;
  }
  /* Queued, not running, until kmq__run begins it: a revoke meanwhile
   * releases the partition without waiting for it. */
  kmq_ack_defer(ack);
  kmq_err_t err = kmq_sched_submit(rt->sched, m->key, m->key_len, job);
  if (err) {
    /* Not taken: the consumer voids the ack and frees the record. */
    atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_relaxed);
    return err; /* BACKPRESSURE: held and offered again; else unfinished */
  }
  KMQ__INC(rt, dispatched);
  return KMQ_OK;
}

typedef struct {
  rd_kafka_t *rk;
  int64_t backlog, lag;
} kmq__sample_t;

/* The design's commit lag: high watermark - committed, from librdkafka's
 * cached watermark (no broker round trip on the poll thread). */
static void kmq__sample(const kmq_partition_info_t *pi, void *opaque) {
  kmq__sample_t *acc = opaque;
  acc->backlog += pi->backlog;
  int64_t lo = -1, hi = -1;
  if (pi->committed >= 0 &&
      !rd_kafka_get_watermark_offsets(acc->rk, pi->topic, pi->partition, &lo,
                                      &hi) &&
      hi >= pi->committed)
    acc->lag += hi - pi->committed;
}

kmq_runtime_t *kmq_runtime_new(const kmq_conf_t *conf,
                               kmq_proc_registry_t *registry,
                               kmq_fallback_cb *fallback,
                               void *fallback_opaque, char *errstr,
                               size_t errstr_size) {
  if (!conf || !registry || !kmq_conf_get(conf, "kmq.topic")) {
    snprintf(errstr, errstr_size, "conf with kmq.topic and a registry are "
                                  "required");
    return NULL;
  }
  /* Aligned: the struct's cache-line groups must start on lines. */
  kmq_runtime_t *rt = kmq__zalloc_lines(sizeof(*rt));
  if (!rt) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  rt->reg = registry;
  kmq_proc_registry_freeze(registry);
  rt->raw = kmq_proc_raw(registry);
  rt->topic = strdup(kmq_conf_get(conf, "kmq.topic"));
  rt->max_attempts = 1 + (int)kmq_conf_get_int(conf, "kmq.proc.retries");
  rt->backoff_ms = kmq_conf_get_int(conf, "kmq.proc.backoff.ms");
  rt->backoff_max_ms = kmq_conf_get_int(conf, "kmq.proc.backoff.max.ms");
  rt->dlq_backoff_ms = kmq_conf_get_int(conf, "kmq.dlq.retry.backoff.ms");
  rt->dlq_backoff_max_ms =
      kmq_conf_get_int(conf, "kmq.dlq.retry.backoff.max.ms");
  rt->max_bytes = (size_t)kmq_conf_get_int(conf, "kmq.msg.max.bytes");
  rt->close_ms = kmq_conf_get_int(conf, "kmq.close.timeout.ms");
  rt->flush_ms = kmq_conf_get_int(conf, "kmq.flush.timeout.ms");
  rt->log = kmq__conf_hooks(conf)->log;
  atomic_init(&rt->refs, 1); /* the owner's */
  rt->lat = kmq_hist_new();
  if (!rt->topic || !rt->lat) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_mem;
  }
  rt->dec = kmq_msg_decoder_new(conf, errstr, errstr_size);
  if (!rt->dec)
    goto fail_mem;
  const char *mode = kmq_conf_get(conf, "kmq.mode");
  if (mode && !strcmp(mode, "shadow")) {
    const char *live = kmq_conf_get(conf, "kmq.live.group.id");
    const char *gid = kmq_conf_get(conf, "group.id");
    if (!live || !*live || !gid || !strcmp(live, gid)) {
      snprintf(errstr, errstr_size,
               "kmq.mode=shadow needs kmq.live.group.id, different from "
               "group.id: a shadow never consumes in the live group");
      goto fail_dlq;
    }
    rt->shadow = 1;
  } else if (mode && strcmp(mode, "live")) {
    snprintf(errstr, errstr_size, "kmq.mode: \"%s\" is not live or shadow",
             mode);
    goto fail_dlq;
  }
  if (!rt->shadow) {
    if (!fallback && kmq_fallback_configured(conf)) {
      /* The third level: a record the DLQ rejects is stored (durably,
       * before the hook returns), and only then is its offset finished. */
      rt->store = kmq_fallback_new(conf, errstr, errstr_size);
      if (!rt->store)
        goto fail_dlq;
      fallback = kmq_fallback_hook;
      fallback_opaque = rt->store;
    }
    rt->dlq =
        kmq_dlq_new(conf, fallback, fallback_opaque, errstr, errstr_size);
    if (!rt->dlq)
      goto fail_dlq;
    /* A shadow produces nothing: no limit to agree with. */
    if (kmq__limits_check(rt->max_bytes, kmq__dlq_max_bytes(rt->dlq), errstr,
                          errstr_size))
      goto fail_obs;
    int check_ms = (int)kmq_conf_get_int(conf, "kmq.dlq.check.timeout.ms");
    if (check_ms > 0) {
      char why[768];
      kmq_err_t cerr = kmq__dlq_check_topic(rt->dlq, check_ms, why,
                                            sizeof(why));
      if (cerr == KMQ_ERR_CONF_INVALID) {
        snprintf(errstr, errstr_size, "%s", why);
        goto fail_obs;
      }
      /* Not knowing is no reason to refuse: the broker may come later and
       * the DLQ topic may be created on first use; say what was not
       * checked. */
      if (cerr)
        kmq__log_to(&rt->log, "WARN", "runtime",
                    "the DLQ topic's max.message.bytes was not checked "
                    "against the largest dead letter (%zu bytes): %s",
                    kmq__dlq_max_bytes(rt->dlq), why);
    }
  }
  rt->obs = kmq__obs_new(conf);
  if (!rt->obs) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_obs;
  }
  /* No revoke hook: the consumer flags a revoked partition's messages and
   * kmq__run drops those that have not started (kmq_ack_revoked). Errors
   * are counted, reported to the error hook, and a fatal one stops run. */
  kmq_consumer_hooks_t hooks = {.on_error = kmq__on_error,
                                .on_rebalance = kmq__on_rebalance,
                                .opaque = rt,
                                .record_size = sizeof(kmq__job_t)};
  rt->consumer = kmq_consumer_new(conf, &hooks, errstr, errstr_size);
  if (!rt->consumer)
    goto fail_consumer;
  kmq_sched_callbacks_t cbs = {kmq__run, kmq__cancel};
  rt->sched = kmq_sched_new(conf, &cbs, rt, errstr, errstr_size);
  if (!rt->sched)
    goto fail_sched;
  if (kmq__obs_start(rt->obs, rt, rt->consumer, rt->sched, rt->lat, errstr,
                     errstr_size))
    goto fail_endpoint;
  rt->last_tick = kmq__mono_ms();
  return rt;

fail_endpoint:
  kmq_sched_destroy(rt->sched);
fail_sched:
  kmq_consumer_destroy(rt->consumer);
fail_consumer:
  kmq__obs_destroy(rt->obs);
fail_obs:
  kmq_dlq_destroy(rt->dlq);
fail_dlq:
  kmq_fallback_destroy(rt->store);
  kmq_msg_decoder_destroy(rt->dec);
fail_mem:
  kmq_hist_destroy(rt->lat);
  free(rt->topic);
  free(rt);
  return NULL;
}

int kmq_runtime_poll(kmq_runtime_t *rt, int timeout_ms) {
  if (!rt->subscribed) {
    const char *topics[] = {rt->topic};
    kmq_err_t err = kmq_consumer_subscribe(rt->consumer, topics, 1);
    if (err)
      return err;
    rt->subscribed = 1;
  }
  /* What is already fetched is dispatched as one burst with deferred
   * worker wake-ups (kmq_sched_batch_begin); only when there was nothing
   * does the poll wait, and then each message wakes a worker at once, so
   * a trickle is not held back by the batching. */
  kmq_sched_batch_begin(rt->sched);
  int n = kmq_consumer_poll_and_dispatch_with_ack(rt->consumer,
                                                  kmq__on_message, rt, 0);
  kmq_sched_batch_end(rt->sched);
  if (n == 0 && timeout_ms != 0)
    n = kmq_consumer_poll_and_dispatch_with_ack(rt->consumer, kmq__on_message,
                                                rt, timeout_ms);
  int64_t now = kmq__mono_ms();
  if (now - rt->last_tick >= 1000) {
    rt->last_tick = now;
    kmq_sched_reclaim(rt->sched, now);
    kmq__sample_t acc = {kmq_consumer_rk(rt->consumer), 0, 0};
    kmq_consumer_partitions(rt->consumer, kmq__sample, &acc);
    atomic_store_explicit(&rt->gate_backlog, acc.backlog, memory_order_relaxed);
    atomic_store_explicit(&rt->commit_lag, acc.lag, memory_order_relaxed);
  }
  kmq__obs_tick(rt->obs, now);
  kmq_err_t fatal = kmq__obs_fatal(rt->obs);
  return fatal ? fatal : n;
}

kmq_err_t kmq_runtime_run(kmq_runtime_t *rt) {
  while (!atomic_load_explicit(&rt->stop, memory_order_relaxed)) {
    int n = kmq_runtime_poll(rt, 100);
    if (n < 0 && n != KMQ_ERR_BACKPRESSURE)
      return (kmq_err_t)n;
  }
  return KMQ_OK;
}

void kmq_runtime_stop(kmq_runtime_t *rt) {
  /* Relaxed: a flag polled by run(); lock-free, so signal-safe. */
  atomic_store_explicit(&rt->stop, 1, memory_order_relaxed);
}

/* Frees the runtime's memory, and the clients a late job kept: the
 * consumer (a stuck job and its message live in its record slab), the DLQ
 * and the decoder (a thread was still entered at destroy's deadline). No
 * job is left by now (each held a reference, and cleared its decoded
 * message before dropping it), so the DLQ has no outcome to report. */
static void kmq__free_now(kmq_runtime_t *rt) {
  kmq_dlq_destroy_within(rt->dlq, (int)rt->flush_ms);
  kmq_fallback_destroy(rt->store); /* after the DLQ: its last hook calls */
  kmq_msg_decoder_destroy(rt->dec);
  kmq_consumer_destroy(rt->consumer);
  kmq__obs_destroy(rt->obs); /* after the consumer: its error hook */
  kmq_hist_destroy(rt->lat);
  free(rt->topic);
  free(rt);
}

static void *kmq__reaper(void *arg) {
  kmq__free_now(arg);
  return NULL;
}

/* The last reference is gone. On destroy's thread: free now. On a late
 * job's thread (a processor's worker or completion thread): the consumer
 * handle's destruction joins librdkafka's threads, so it goes to a
 * detached thread of its own instead of blocking the caller. */
static void kmq__free(kmq_runtime_t *rt) {
  if (!rt->consumer && !rt->dlq) {
    kmq__free_now(rt);
    return;
  }
  pthread_t t;
  pthread_attr_t attr;
  int r = pthread_attr_init(&attr);
  if (r == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&t, &attr, kmq__reaper, rt);
    pthread_attr_destroy(&attr);
  }
  if (r != 0)
    kmq__free_now(rt); /* no thread: block this one rather than leak */
}

void kmq_runtime_destroy(kmq_runtime_t *rt) {
  if (!rt)
    return;
  kmq__obs_stop(rt->obs); /* first: the HTTP thread reads everything */
  int64_t t0 = kmq__mono_ms();
  /* The consumer drops queued messages (they do not start), waits for
   * running ones (bounded by kmq.close.timeout.ms), commits, and leaves the
   * group. */
  kmq_consumer_close(rt->consumer, (int)rt->close_ms);
  /* What is still queued is cancelled (unfinished, redelivered later);
   * what still runs, or waits for its dead letter's outcome, gets the rest
   * of the close budget, at least enough to hand the queued ones to the
   * cancel callback. */
  kmq_sched_stop(rt->sched);
  int64_t left = rt->close_ms - (kmq__mono_ms() - t0);
  if (left < 200)
    left = 200;
  bool abandoned = kmq_sched_destroy_within(rt->sched, (int)left) != KMQ_OK;
  if (abandoned) {
    kmq__log_to(&rt->log, "ERROR", "runtime",
             "destroy: messages still processing (or waiting for their dead "
             "letter) %lld ms after close began: abandoned; their outcome "
             "will be ignored and they are redelivered; the memory they use "
             "is freed when the last of them returns",
             (long long)(kmq__mono_ms() - t0));
  } else {
    rt->sched = NULL; /* freed */
  }
  /* From here on a job that comes back takes the late path; once no
   * thread is inside, the DLQ and the rest can go. A thread inside can be
   * in a dead-letter send waiting for room or in the fallback hook: it
   * gets kmq.flush.timeout.ms, shared with the DLQ's own flush. */
  int64_t flush_deadline = kmq__mono_ms() + rt->flush_ms;
  atomic_store(&rt->detached, 1);
  while (atomic_load(&rt->entered) != 0 &&
         kmq__mono_ms() < flush_deadline) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  if (atomic_load(&rt->entered) == 0) {
    /* Dead letters still in flight reach their outcome (or are purged)
     * within what is left; their callbacks take the late path. */
    int64_t fl = flush_deadline - kmq__mono_ms();
    kmq_dlq_destroy_within(rt->dlq, fl > 0 ? (int)fl : 0);
    rt->dlq = NULL;
    kmq_fallback_destroy(rt->store); /* after the DLQ: its last hook calls */
    rt->store = NULL;
    kmq_msg_decoder_destroy(rt->dec);
    rt->dec = NULL;
    if (!abandoned) {
      kmq_consumer_destroy(rt->consumer);
      rt->consumer = NULL;
    }
  } else {
    kmq__log_to(&rt->log, "ERROR", "runtime",
             "destroy: a dead-letter send or fallback hook still running "
             "after kmq.flush.timeout.ms: the DLQ and the consumer are freed "
             "when it returns");
  }
  /* The owner's reference; if a late job or an entered thread still holds
   * one, the last of them frees the rest (kmq__free). */
  if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1)
    kmq__free_now(rt);
}

void kmq_runtime_metrics(const kmq_runtime_t *rt, kmq_runtime_metrics_t *out) {
  memset(out, 0, sizeof(*out));
#define KMQ__LD(f) atomic_load_explicit(&rt->f, memory_order_relaxed)
  out->dispatched = KMQ__LD(dispatched);
  out->processed = KMQ__LD(processed);
  out->failed = KMQ__LD(failed);
  out->retried = KMQ__LD(retried);
  out->dlq_lost = KMQ__LD(dlq_lost);
  out->dlq_retries = KMQ__LD(dlq_retries);
  out->dlq_retrying = KMQ__LD(dlq_retrying);
  out->cancelled = KMQ__LD(cancelled);
  out->gate_backlog = KMQ__LD(gate_backlog);
  out->commit_lag = KMQ__LD(commit_lag);
#undef KMQ__LD
  if (rt->dlq) {
    kmq_dlq_stats_t ds;
    kmq_dlq_stats(rt->dlq, &ds);
    out->dlq = ds.written + ds.fallback;
  }
  kmq_sched_stats_t ss;
  kmq_sched_stats(rt->sched, &ss);
  out->actors_live = (int64_t)ss.actors_live;
  out->mailbox_depth_max = (int64_t)ss.mailbox_depth_max;
  kmq_consumer_stats_t cs;
  kmq_consumer_stats(rt->consumer, &cs);
  out->rebalances = cs.rebalances;
  out->committed_offsets = cs.offsets_committed;
  out->in_flight = cs.in_flight;
  out->latency_p50_us = kmq_hist_percentile(rt->lat, 50);
  out->latency_p99_us = kmq_hist_percentile(rt->lat, 99);
  out->latency_p999_us = kmq_hist_percentile(rt->lat, 99.9);
  out->latency_max_us = kmq_hist_max(rt->lat);
  kmq__obs_fill(rt->obs, out);
}

kmq_consumer_t *kmq_runtime_consumer(kmq_runtime_t *rt) {
  return rt->consumer;
}
