/* A job's dead letter (runtime_int.h): sent to the DLQ, finished once the
 * DLQ or the fallback store holds it, and retried on the scheduler's timer
 * when neither took it. */
#include <stdio.h>

#include "runtime/runtime_int.h"

/* Neither the DLQ nor the fallback took the job's dead letter: instead of
 * leaving its offset unfinished until a restart (which would hit the same
 * wall), keep it unfinished, pause its partition (kmq_ack_stuck: nothing
 * more is fetched behind it), say so, and send the dead letter again after
 * a capped exponential backoff on the scheduler's timer: the actor holds
 * the user's order meanwhile, other users run. Deferred while it waits,
 * like a processor retry: a revoke drops it for the next owner (kmq__job_run),
 * a shutdown cancels it (kmq__job_cancel). Returns false (nothing done) for a
 * job without an actor (dead-lettered at dispatch: no user, no timer) or
 * on a partition already going: then the caller leaves it unfinished.
 * Inside kmq__rt_enter. */
static bool kmq__dlq_retry(kmq__job_t *job, kmq_err_t err) {
  kmq_runtime_t *rt = job->rt;
  if (!job->actor || kmq_ack_revoked(job->ack))
    return false;
  int64_t ms = kmq__job_backoff_ms(rt->dlq_backoff_ms, rt->dlq_backoff_max_ms,
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
    kmq__job_drop(job); /* SHUTDOWN: left unfinished for redelivery */
  return true;
}

/* @locality the DLQ's delivery thread, or the sender when the DLQ
 * decides at once */
static void kmq__dlq_done(kmq_dlq_outcome_t outcome, kmq_err_t err,
                          void *opaque) {
  kmq__job_t *job = opaque;
  kmq_runtime_t *rt = job->rt;
  if (!kmq__rt_enter(rt)) {
    kmq__job_late(rt, job);
    return;
  }
  if (outcome == KMQ_DLQ_OUTCOME_LOST) {
    /* Neither the DLQ nor the fallback took it: retried (kmq__dlq_retry),
     * or else left unfinished, delivered again after a restart. */
    KMQ__INC(rt, dlq_lost);
    if (!kmq__dlq_retry(job, err))
      kmq__job_finish(job, 0);
  } else {
    KMQ__INC(rt, failed);
    kmq__job_finish(job, 1);
  }
  kmq__rt_leave(rt);
}

/* Dead-letters the job's message; the ack follows the DLQ outcome, so the
 * offset is finished only once the record is durable somewhere. */
void kmq__job_dlq(kmq__job_t *job, const char *reason, const char *error,
                  const char *source) {
  const rd_kafka_message_t *m = job->m;
  if (job->rt->shadow) {
    /* A shadow must not touch what the live path owns, the DLQ included:
     * the failure is only counted (the live group dead-letters it). */
    KMQ__INC(job->rt, failed);
    kmq__job_finish(job, 1);
    return;
  }
  job->dlq_reason = reason;
  job->dlq_error = error;
  job->dlq_source = source;
  if (!job->dlq_tries) { /* a retry keeps the state kmq__dlq_retry set */
    KMQ__DIAG_SET(job, KMQ_STALL_DLQ, job->attempt - (job->entry == NULL));
    kmq__obs_dlq(job->rt->obs, reason);
  }
  kmq_dlq_record_t rec = kmq_dlq_record_of(m, reason, error, source);
  kmq_err_t err = kmq_dlq_send(job->rt->dlq, &rec, kmq__dlq_done, job);
  if (err != KMQ_OK) {
    KMQ__INC(job->rt, dlq_lost);
    if (!kmq__dlq_retry(job, err))
      kmq__job_finish(job, 0);
  }
}
