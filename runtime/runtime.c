/* Runtime: wires consumer (poll thread) -> scheduler (actors on workers) ->
 * processors -> ack / DLQ. This file is the object (new, poll, run, stop,
 * destroy, metrics) and the consumer's hooks; one message's path is in
 * job.c and job_dlq.c (runtime_int.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/consumer_records.h"
#include "lib/limits.h"
#include "runtime/runtime_int.h"

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
  /* Every record in flight is a job: kmq__job_on_message fills its area
   * before returning, on this thread, and a record the handler did not take
   * is voided before the next visit. */
  kmq__visit_t v = {cb, opaque};
  kmq__consumer_each_record(rt->consumer, kmq__visit_record, &v);
}

kmq__obs_t *kmq__runtime_obs(const kmq_runtime_t *rt) { return rt->obs; }

kmq_fallback_t *kmq__runtime_store(const kmq_runtime_t *rt) {
  return rt->store;
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
   * kmq__job_run drops those that have not started (kmq_ack_revoked). Errors
   * are counted, reported to the error hook, and a fatal one stops run. */
  kmq_consumer_hooks_t hooks = {.on_error = kmq__on_error,
                                .on_rebalance = kmq__on_rebalance,
                                .opaque = rt,
                                .record_size = sizeof(kmq__job_t)};
  rt->consumer = kmq_consumer_new(conf, &hooks, errstr, errstr_size);
  if (!rt->consumer)
    goto fail_consumer;
  kmq_sched_callbacks_t cbs = {kmq__job_run, kmq__job_cancel};
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
  /* One burst per call, with deferred worker wake-ups
   * (kmq_sched_batch_begin, whose header says when it wakes before its
   * end): what is already fetched, or, when that was nothing, what a
   * second call takes, waiting first if it too finds nothing. The waiting
   * call is inside the batch as well: the consumer blocks only after
   * taking nothing in that call, so no deferred wake-up waits on it, and
   * what it then dispatches is woken for at kmq_sched_batch_end, right
   * after; a trickle (one message per wait) is not held back. Flat out the
   * waiting call is the usual one (every record in flight, the poll waits
   * up to 1 ms for acks), which is why it must not wake a worker per
   * newly runnable user. */
  kmq_sched_batch_begin(rt->sched);
  rt->batch_t0_us = 0;
  int n = kmq_consumer_poll_and_dispatch_with_ack(rt->consumer,
                                                  kmq__job_on_message, rt, 0);
  if (n == 0 && timeout_ms != 0) {
    rt->batch_t0_us = 0; /* not the time before the wait */
    n = kmq_consumer_poll_and_dispatch_with_ack(
        rt->consumer, kmq__job_on_message, rt, timeout_ms);
  }
  kmq_sched_batch_end(rt->sched);
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
void kmq__rt_free(kmq_runtime_t *rt) {
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
  atomic_fetch_or_explicit(&rt->entered, KMQ__RT_DETACHED,
                           memory_order_acq_rel);
  /* Until no one is inside, or the deadline: then abandoned, in the same
   * RMW that sees someone inside, so that exactly one of us drops the
   * owner's reference (kmq__rt_leave). A thread refused entry (a late
   * job) counts for a moment too: before the deadline that costs another
   * look; at it, it is taken for a thread inside, and the rest is freed
   * when it leaves, a moment later. */
  bool inside;
  for (;;) {
    long long word = atomic_load_explicit(&rt->entered, memory_order_acquire);
    if (!(word & KMQ__RT_INSIDE)) {
      inside = false;
      break;
    }
    if (kmq__mono_ms() >= flush_deadline) {
      if (atomic_compare_exchange_strong_explicit(
              &rt->entered, &word, word | KMQ__RT_ABANDONED,
              memory_order_acq_rel, memory_order_acquire)) {
        inside = true;
        break;
      }
      continue; /* changed meanwhile: look again */
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  if (!inside) {
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
  /* The owner's reference, unless abandoned (then the last thread out
   * drops it); if a late job still holds one, the last of them frees the
   * rest (kmq__rt_free). */
  if (!inside &&
      atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1)
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
