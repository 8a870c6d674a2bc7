/* One message's path from dispatch to ack (runtime_int.h): the poll thread
 * routes it to its user's actor, a worker decodes it and calls its
 * processor, and the outcome (OK, RETRY on the scheduler's timer, FAIL to
 * the DLQ in job_dlq.c) ends in exactly one kmq_ack. */
#include <stdio.h>
#include <string.h>

#include "lib/consumer_records.h"
#include "runtime/runtime_int.h"

/* A job that came back after destroy detached the runtime: its outcome
 * is ignored (the consumer left the group and committed without it, so its
 * message is redelivered) and it is not acked: its record stays taken in
 * the closed consumer's slab, which lives until the last reference goes
 * (kmq__free_now destroys the consumer). The user's actor is released on
 * the abandoned scheduler, which frees itself after the last one. Ends
 * with the job's reference: nothing of rt, nor the job, may be touched
 * after it. */
void kmq__job_late(kmq_runtime_t *rt, kmq__job_t *job) {
  if (job->dlq_tries)
    atomic_fetch_sub_explicit(&rt->dlq_retrying, 1, memory_order_relaxed);
  if (job->decoded) {
    kmq_chat_msg_clear(&job->msg);
    job->decoded = 0;
  }
  if (job->actor && rt->sched)
    kmq_sched_done(rt->sched, job->actor);
  kmq__rt_unref(rt);
}

/* Frees the actor for the user's next message, then acks the job's message
 * (ok: finished, else left for redelivery), which ends the job. In that
 * order so that the scheduler counts an item as in flight only while its
 * record is taken: its kmq.max.inflight, the consumer's, then never
 * refuses what the consumer admitted (sched.h). Inside kmq__rt_enter; drops
 * the job's reference, never the last one (the owner's is held while a
 * thread is inside). */
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
void kmq__job_finish(kmq__job_t *job, int ok) {
  kmq_hist_record(job->rt->lat, kmq__now_us() - job->t0_us);
  kmq__complete(job, ok);
}

/* A message that must not start (its partition is being revoked or the
 * consumer is closing): left unfinished for the next owner, the actor freed
 * for the user's next message (which is dropped the same way). */
void kmq__job_drop(kmq__job_t *job) {
  KMQ__INC(job->rt, cancelled);
  kmq__complete(job, 0);
}

/* The wait before retry `attempt` + 1: backoff doubled per retry, capped at
 * max; no shift can overflow whatever the attempt (kmq.proc.retries allows
 * 1000). */
int64_t kmq__job_backoff_ms(int64_t base, int64_t max, int attempt) {
  int64_t ms = base < max ? base : max;
  for (int i = 1; i < attempt && ms < max; i++)
    ms = ms > max / 2 ? max : ms * 2;
  return ms;
}

/* Applies an outcome; the job is not touched afterwards (it may already
 * be retried on another worker, or released). @locality the worker that
 * ran the processor, or the thread completing an ASYNC one */
static void kmq__outcome(kmq__job_t *job, kmq_proc_result_t r) {
  kmq_runtime_t *rt = job->rt;
  switch (r) {
  case KMQ_PROC_OK:
    KMQ__INC(rt, processed);
    kmq__job_finish(job, 1);
    return;
  case KMQ_PROC_RETRY:
    KMQ__INC(rt, retried);
    if (job->attempt >= rt->max_attempts) {
      kmq__job_dlq(job, KMQ_PROC_REASON_RETRIES,
                   kmq_proc_ctx_reason(&job->ctx), "processor");
      return;
    }
    if (kmq_ack_revoked(job->ack)) {
      /* The partition is going: the next owner retries it. */
      kmq__job_drop(job);
      return;
    }
    /* The backoff waits on the scheduler's timer, not on this thread: the
     * actor keeps the user's order (the user's next messages wait), the
     * worker runs other users meanwhile, and kmq__job_run gets the job back
     * with attempt > 1. Deferred meanwhile, like a queued message: a
     * revoke does not wait for the backoff, and kmq__job_run begins it again
     * or drops it. */
    int64_t ms =
        kmq__job_backoff_ms(rt->backoff_ms, rt->backoff_max_ms, job->attempt);
    KMQ__DIAG_SET(job, KMQ_STALL_RETRYING, job->attempt);
    job->attempt++;
    kmq_ack_defer(job->ack);
    if (kmq_sched_retry_after(rt->sched, job->actor, job, ms) != KMQ_OK)
      kmq__job_drop(job); /* SHUTDOWN: left unfinished for redelivery */
    return;
  default:
    kmq__job_dlq(job, KMQ_PROC_REASON_FAILED, kmq_proc_ctx_reason(&job->ctx),
                 "processor");
    return;
  }
}

/* The processor's outcome, back in the runtime (or too late for it). */
static void kmq__resume(kmq__job_t *job, kmq_proc_result_t r) {
  kmq_runtime_t *rt = job->rt;
  if (!kmq__rt_enter(rt)) {
    kmq__job_late(rt, job);
    return;
  }
  kmq__outcome(job, r);
  kmq__rt_leave(rt);
}

/* Calls the processor once (attempt job->attempt), outside kmq__rt_enter: a
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
 * dropped). Inside kmq__rt_enter. */
static bool kmq__prepare(kmq_runtime_t *rt, kmq__job_t *job) {
  const rd_kafka_message_t *m = job->m;
  if (job->dlq_retry) {
    /* Back from a dead-letter retry's backoff: the DLQ again, not the
     * processor. A revoke meanwhile: the next owner has it. */
    if (!kmq_ack_begin(job->ack)) {
      kmq__job_drop(job);
      return false;
    }
    kmq__job_dlq(job, job->dlq_reason, job->dlq_error, job->dlq_source);
    return false;
  }
  if (job->attempt > 1) {
    /* Back from its backoff (kmq_sched_retry_after): decoded and routed on
     * its first run, deferred while it waited. A revoke that came meanwhile
     * did not wait for it: the next owner retries it. */
    if (kmq_ack_begin(job->ack))
      return true;
    kmq__job_drop(job);
    return false;
  }
  job->entry = NULL; /* no processor yet: a dead letter before it says so */
  if (!kmq_ack_begin(job->ack)) {
    /* Its partition is being revoked (or we are closing): the revoke does
     * not wait for it, the next owner runs it. */
    kmq__job_drop(job);
    return false;
  }
  KMQ__DIAG_SET(job, KMQ_STALL_RUNNING, 0); /* decoding */
  /* Checked here, in the user's order, not at dispatch: a user's dead
   * letters must come out in offset order (dlq.h). Never parsed. */
  if (m->len > rt->max_bytes) {
    snprintf(job->err, sizeof(job->err),
             "value of %zu bytes exceeds kmq.msg.max.bytes (%zu)", m->len,
             rt->max_bytes);
    kmq__job_dlq(job, "too_large", job->err, "consumer");
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
    kmq__job_dlq(job, kmq_msg_reason(err), job->err, "consumer");
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
    kmq__job_dlq(job, KMQ_MSG_REASON_KEY_MISMATCH, job->err, "consumer");
    return false;
  }
  job->entry = kmq_proc_lookup(rt->reg, &job->msg);
  if (!job->entry) {
    snprintf(job->err, sizeof(job->err),
             "no processor for msg_type \"%.*s\" and no default",
             (int)job->msg.msg_type.len, job->msg.msg_type.ptr);
    kmq__job_dlq(job, KMQ_PROC_REASON_NO_PROCESSOR, job->err, "processor");
    return false;
  }
  return true;
}

/* @locality worker running the user's actor */
void kmq__job_run(void *opaque, kmq_sched_actor_t *actor, void *item) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = item;
  job->actor = actor;
  if (!kmq__rt_enter(rt)) {
    kmq__job_late(rt, job);
    return;
  }
  bool call = kmq__prepare(rt, job);
  kmq__rt_leave(rt);
  if (call)
    kmq__attempt(job);
}

/* A queued message, or one waiting for its retry, dropped (shutdown):
 * left unfinished, the next owner reads it again from the committed
 * offset. @locality any worker */
void kmq__job_cancel(void *opaque, void *item) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = item;
  job->actor = NULL; /* a cancelled item needs no kmq_sched_done */
  if (!kmq__rt_enter(rt)) {
    kmq__job_late(rt, job);
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
  kmq__rt_leave(rt);
}

/* @locality poll thread */
kmq_err_t kmq__job_on_message(const rd_kafka_message_t *m, kmq_ack_t ack,
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
  job->decoded = 0;
  job->attempt = 1;
  job->dlq_tries = 0;
  job->dlq_retry = 0;
  if (!rt->batch_t0_us)
    rt->batch_t0_us = kmq__now_us();
  job->t0_us = rt->batch_t0_us;
  /* A record without a key has no user to order by (and no user order to
   * keep): dead-lettered here, before routing, and finished once the DLQ
   * has it. */
  if (!m->key || !m->key_len) {
    /* The send may wait for room in the DLQ's queue: what this poll made
     * runnable goes to the workers first. */
    kmq_sched_batch_flush(rt->sched);
    job->entry = NULL;
    kmq__job_dlq(job, "missing_user",
                 "record has no key: the key must be the external_userid",
                 "consumer");
    return KMQ_OK;
  }
  /* Queued, not running, until kmq__job_run begins it: a revoke meanwhile
   * releases the partition without waiting for it. */
  kmq_ack_defer(ack);
  kmq_err_t err = kmq_sched_submit(rt->sched, m->key, m->key_len, job);
  if (err) {
    /* Not taken: the consumer voids the ack and frees the record. */
    atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_relaxed);
    /* No memory for the user's actor: held and offered again, like a full
     * mailbox. As "unfinished" the consumer would go on with the next
     * records, and the user's later ones could run before this one is
     * redelivered. */
    if (err == KMQ_ERR_NOMEM)
      err = KMQ_ERR_BACKPRESSURE;
    return err; /* BACKPRESSURE: held and offered again; else unfinished */
  }
  KMQ__INC(rt, dispatched);
  return KMQ_OK;
}

