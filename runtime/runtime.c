/* Runtime: wires consumer (poll thread) -> scheduler (actors on workers) ->
 * processors -> ack / DLQ. */
#include "kmq/runtime.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/hist.h"
#include "kmq/message.h"
#include "kmq/sched.h"
#include "lib/mpsc.h"
#include "lib/util.h"
#include "processors/proc_ctx.h"

/* One message from dispatch to ack. Jobs come from a slab sized to
 * kmq.max.inflight: no allocation per message. The rd_kafka_message_t is the
 * consumer's and stays valid until the job's ack; a job is not touched after
 * it was released. */
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

  kmq__job_t *jobs;
  uint32_t njobs;
  kmq__job_t **free_stack; /* @locality poll thread */
  uint32_t free_top;
  kmq__mpsc_t freed; /* any thread releases, the poll thread collects */
  uint32_t *freed_next;

  int max_attempts;
  int64_t backoff_ms, backoff_max_ms, close_ms;
  size_t max_bytes;
  int subscribed;
  int64_t last_tick;
  atomic_int stop;

  /* Relaxed counters: metrics only. */
  atomic_llong dispatched, processed, failed, retried, dlq_lost, cancelled,
      gate_backlog, commit_lag;
};

#define KMQ__INC(rt, f) atomic_fetch_add_explicit(&(rt)->f, 1, memory_order_relaxed)

static int64_t kmq__now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* @locality any thread */
static void kmq__job_release(kmq_runtime_t *rt, kmq__job_t *job) {
  kmq__mpsc_push(&rt->freed, (uint32_t)(job - rt->jobs));
}

/* @locality poll thread */
static kmq__job_t *kmq__job_get(kmq_runtime_t *rt) {
  for (uint32_t n = kmq__mpsc_take(&rt->freed); n;
       n = kmq__mpsc_next(&rt->freed, n))
    rt->free_stack[rt->free_top++] = &rt->jobs[n - 1];
  return rt->free_top ? rt->free_stack[--rt->free_top] : NULL;
}

/* Releases the job and acks its message (ok: finished, else left for
 * redelivery), then frees the actor for the user's next message. */
static void kmq__complete(kmq__job_t *job, int ok) {
  kmq_runtime_t *rt = job->rt;
  if (job->decoded) {
    kmq_chat_msg_clear(&job->msg);
    job->decoded = 0;
  }
  kmq_ack_t ack = job->ack;
  kmq_sched_actor_t *actor = job->actor;
  kmq__job_release(rt, job); /* not touched from here on */
  kmq_ack(ack, ok);
  if (actor)
    kmq_sched_done(rt->sched, actor);
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

static void kmq__dlq_done(kmq_dlq_outcome_t outcome, kmq_err_t err,
                          void *opaque) {
  kmq__job_t *job = opaque;
  (void)err;
  if (outcome == KMQ_DLQ_OUTCOME_LOST) {
    /* Neither the DLQ nor the fallback took it: keep the offset unfinished
     * so the message is delivered again after a restart. */
    KMQ__INC(job->rt, dlq_lost);
    kmq__finish(job, 0);
    return;
  }
  KMQ__INC(job->rt, failed);
  kmq__finish(job, 1);
}

/* Dead-letters the job's message; the ack follows the DLQ outcome, so the
 * offset is finished only once the record is durable somewhere. */
static void kmq__dlq(kmq__job_t *job, const char *reason, const char *error,
                     const char *source) {
  const rd_kafka_message_t *m = job->m;
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
  if (kmq_dlq_send(job->rt->dlq, &rec, kmq__dlq_done, job) != KMQ_OK) {
    KMQ__INC(job->rt, dlq_lost);
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

/* Calls the processor once (attempt job->attempt). */
static void kmq__attempt(kmq__job_t *job) {
  const rd_kafka_message_t *m = job->m;
  kmq__proc_ctx_begin(&job->ctx, m->key, m->key_len,
                      rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                      job->attempt, job->rt->max_attempts);
  /* A raw processor gets no decoded message (processor.h). */
  kmq_proc_result_t r = kmq__proc_ctx_returned(
      &job->ctx, job->entry->cb(job->decoded ? &job->msg : NULL, &job->ctx,
                                job->entry->opaque));
  if (r != KMQ_PROC_ASYNC)
    kmq__outcome(job, r); /* else kmq__proc_done continues */
}

/* An asynchronous processor completed. @locality the completing thread */
static void kmq__proc_done(kmq_proc_ctx_t *ctx, kmq_proc_result_t result,
                           void *opaque) {
  (void)ctx;
  kmq__outcome(opaque, result);
}

/* @locality worker running the user's actor */
static void kmq__run(void *opaque, kmq_sched_actor_t *actor, void *item) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = item;
  const rd_kafka_message_t *m = job->m;
  job->actor = actor;
  if (job->attempt > 1) {
    /* Back from its backoff (kmq_sched_retry_after): decoded and routed on
     * its first run, deferred while it waited. A revoke that came meanwhile
     * did not wait for it: the next owner retries it. */
    if (kmq_ack_begin(job->ack))
      kmq__attempt(job);
    else
      kmq__drop(job);
    return;
  }
  if (!kmq_ack_begin(job->ack)) {
    /* Its partition is being revoked (or we are closing): the revoke does
     * not wait for it, the next owner runs it. */
    kmq__drop(job);
    return;
  }
  /* Checked here, in the user's order, not at dispatch: a user's dead
   * letters must come out in offset order (dlq.h). Never parsed. */
  if (m->len > rt->max_bytes) {
    snprintf(job->err, sizeof(job->err),
             "value of %zu bytes exceeds kmq.msg.max.bytes (%zu)", m->len,
             rt->max_bytes);
    kmq__dlq(job, "too_large", job->err, "consumer");
    return;
  }
  kmq__proc_ctx_set_value(&job->ctx, m->payload, m->len); /* all attempts */
  if (rt->raw) {
    job->entry = rt->raw;
    kmq__attempt(job);
    return;
  }
  /* The decoder only reads its limits, so workers share it. */
  kmq_err_t err = kmq_msg_decode(rt->dec, m->payload, m->len, &job->msg,
                                 job->err, sizeof(job->err));
  if (err) {
    kmq__dlq(job, kmq_msg_reason(err), job->err, "consumer");
    return;
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
    return;
  }
  job->entry = kmq_proc_lookup(rt->reg, &job->msg);
  if (!job->entry) {
    snprintf(job->err, sizeof(job->err),
             "no processor for msg_type \"%.*s\" and no default",
             (int)job->msg.msg_type.len, job->msg.msg_type.ptr);
    kmq__dlq(job, KMQ_PROC_REASON_NO_PROCESSOR, job->err, "processor");
    return;
  }
  kmq__attempt(job);
}

/* A queued message, or one waiting for its retry, dropped (shutdown):
 * left unfinished, the next owner reads it again from the committed
 * offset. @locality any worker */
static void kmq__cancel(void *opaque, void *item) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = item;
  KMQ__INC(rt, cancelled);
  if (job->decoded) { /* a retry was decoded on its first run */
    kmq_chat_msg_clear(&job->msg);
    job->decoded = 0;
  }
  kmq_ack_t ack = job->ack;
  kmq__job_release(rt, job);
  kmq_ack(ack, 0);
}

/* @locality poll thread */
static kmq_err_t kmq__on_message(const rd_kafka_message_t *m, kmq_ack_t ack,
                                 void *opaque) {
  kmq_runtime_t *rt = opaque;
  kmq__job_t *job = kmq__job_get(rt);
  if (!job)
    return KMQ_ERR_BACKPRESSURE;
  job->m = m;
  job->ack = ack;
  job->actor = NULL;
  job->entry = NULL;
  job->decoded = 0;
  job->attempt = 1;
  job->t0_us = kmq__now_us();
  /* A record without a key has no user to order by (and no user order to
   * keep): dead-lettered here, before routing, and finished once the DLQ
   * has it. */
  if (!m->key || !m->key_len) {
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
    rt->free_stack[rt->free_top++] = job;
    return err; /* BACKPRESSURE: held and offered again; else unfinished */
  }
  KMQ__INC(rt, dispatched);
  return KMQ_OK;
}

static void kmq__sample(const kmq_partition_info_t *pi, void *opaque) {
  int64_t *acc = opaque;
  acc[0] += pi->backlog;
  if (pi->committable >= 0 && pi->committed >= 0)
    acc[1] += pi->committable - pi->committed;
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
  kmq_runtime_t *rt = calloc(1, sizeof(*rt));
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
  rt->max_bytes = (size_t)kmq_conf_get_int(conf, "kmq.msg.max.bytes");
  rt->close_ms = kmq_conf_get_int(conf, "kmq.close.timeout.ms");
  rt->njobs = (uint32_t)kmq_conf_get_int(conf, "kmq.max.inflight");
  rt->jobs = calloc(rt->njobs, sizeof(*rt->jobs));
  rt->free_stack = calloc(rt->njobs, sizeof(*rt->free_stack));
  rt->freed_next = calloc(rt->njobs, sizeof(*rt->freed_next));
  rt->lat = kmq_hist_new();
  if (!rt->topic || !rt->jobs || !rt->free_stack || !rt->freed_next ||
      !rt->lat) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_mem;
  }
  kmq__mpsc_init(&rt->freed, rt->freed_next);
  for (uint32_t i = 0; i < rt->njobs; i++) {
    kmq__job_t *j = &rt->jobs[i];
    j->rt = rt;
    kmq__proc_ctx_init(&j->ctx, kmq__proc_done, j);
    rt->free_stack[rt->free_top++] = j;
  }
  rt->dec = kmq_msg_decoder_new(conf, errstr, errstr_size);
  if (!rt->dec)
    goto fail_mem;
  if (!fallback && kmq_fallback_configured(conf)) {
    /* The third level: a record the DLQ rejects is stored (durably, before
     * the hook returns), and only then is its offset finished. */
    rt->store = kmq_fallback_new(conf, errstr, errstr_size);
    if (!rt->store)
      goto fail_dlq;
    fallback = kmq_fallback_hook;
    fallback_opaque = rt->store;
  }
  rt->dlq = kmq_dlq_new(conf, fallback, fallback_opaque, errstr, errstr_size);
  if (!rt->dlq)
    goto fail_dlq;
  /* No revoke hook: the consumer flags a revoked partition's messages and
   * kmq__run drops those that have not started (kmq_ack_revoked). */
  rt->consumer = kmq_consumer_new(conf, NULL, errstr, errstr_size);
  if (!rt->consumer)
    goto fail_consumer;
  kmq_sched_callbacks_t cbs = {kmq__run, kmq__cancel};
  rt->sched = kmq_sched_new(conf, &cbs, rt, errstr, errstr_size);
  if (!rt->sched)
    goto fail_sched;
  rt->last_tick = kmq__mono_ms();
  return rt;

fail_sched:
  kmq_consumer_destroy(rt->consumer);
fail_consumer:
  kmq_dlq_destroy(rt->dlq);
fail_dlq:
  kmq_fallback_destroy(rt->store);
  kmq_msg_decoder_destroy(rt->dec);
fail_mem:
  kmq_hist_destroy(rt->lat);
  free(rt->freed_next);
  free(rt->free_stack);
  free(rt->jobs);
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
    int64_t acc[2] = {0, 0};
    kmq_consumer_partitions(rt->consumer, kmq__sample, acc);
    atomic_store_explicit(&rt->gate_backlog, acc[0], memory_order_relaxed);
    atomic_store_explicit(&rt->commit_lag, acc[1], memory_order_relaxed);
  }
  return n;
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

void kmq_runtime_destroy(kmq_runtime_t *rt) {
  if (!rt)
    return;
  /* The consumer drops queued messages (they do not start), waits for
   * running ones (bounded by kmq.close.timeout.ms), commits, and leaves the
   * group. */
  kmq_consumer_close(rt->consumer, (int)rt->close_ms);
  /* What is still queued is cancelled (unfinished, redelivered later). */
  kmq_sched_stop(rt->sched);
  kmq_dlq_flush(rt->dlq, 10000);
  kmq_sched_destroy(rt->sched);
  kmq_dlq_destroy(rt->dlq);
  kmq_fallback_destroy(rt->store); /* after the DLQ: its last hook calls */
  kmq_consumer_destroy(rt->consumer);
  kmq_msg_decoder_destroy(rt->dec);
  for (uint32_t i = 0; i < rt->njobs; i++)
    if (rt->jobs[i].decoded)
      kmq_chat_msg_clear(&rt->jobs[i].msg);
  kmq_hist_destroy(rt->lat);
  free(rt->freed_next);
  free(rt->free_stack);
  free(rt->jobs);
  free(rt->topic);
  free(rt);
}

void kmq_runtime_metrics(const kmq_runtime_t *rt, kmq_runtime_metrics_t *out) {
  memset(out, 0, sizeof(*out));
#define KMQ__LD(f) atomic_load_explicit(&rt->f, memory_order_relaxed)
  out->dispatched = KMQ__LD(dispatched);
  out->processed = KMQ__LD(processed);
  out->failed = KMQ__LD(failed);
  out->retried = KMQ__LD(retried);
  out->dlq_lost = KMQ__LD(dlq_lost);
  out->cancelled = KMQ__LD(cancelled);
  out->gate_backlog = KMQ__LD(gate_backlog);
  out->commit_lag = KMQ__LD(commit_lag);
#undef KMQ__LD
  kmq_dlq_stats_t ds;
  kmq_dlq_stats(rt->dlq, &ds);
  out->dlq = ds.written + ds.fallback;
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
}

kmq_consumer_t *kmq_runtime_consumer(kmq_runtime_t *rt) {
  return rt->consumer;
}
