/*
 * Runtime: the embedding API. Consumer -> dispatcher -> per-user actors ->
 * processors -> ack -> commit gate -> committer, plus the DLQ.
 *
 * The application builds a kmq_conf_t (bootstrap.servers, group.id,
 * kmq.topic, ...), registers processors in a kmq_proc_registry_t, creates the
 * runtime and calls kmq_runtime_run() on a thread of its own (that thread
 * becomes the poll thread: consumer, dispatcher, gates, committer), until
 * kmq_runtime_stop() is called from any thread (or a signal handler).
 * kmq_runtime_destroy() then drains, commits and closes.
 *
 * Guarantees: one user's messages (same record key = external_userid) are
 * processed one at a time in offset order; different users in parallel on
 * kmq.sched.workers threads; an offset is committed only when it and every
 * offset before it in its partition are finished. Bad input and failing
 * processors end in the DLQ (then the offset is finished); if the DLQ and
 * the fallback hook both fail, the offset stays unfinished and is delivered
 * again after a restart: nothing is lost silently.
 *
 * Across members: a partition is released (revoke, shutdown) only once none
 * of its messages runs here; its queued messages never start once the
 * revoke begins (no capacity limit), so the next owner never starts a user
 * this member is still running. The bounds: a revoke keeps the partition up
 * to 90% of max.poll.interval.ms (a wait past kmq.revoke.timeout.ms is only
 * logged and counted), kmq_runtime_destroy up to kmq.close.timeout.ms; a
 * lost assignment is waited for the same way (consumer.h). Past a bound,
 * what still runs is abandoned: logged as an error, counted, its outcome
 * ignored and its offset redelivered; only then, or after a real session
 * timeout of this member, can the same user run on two members at once.
 * Finished offsets beyond the committed one travel in the commit metadata:
 * the next owner skips them (consumer.h).
 *
 * Retries: the backoff before retry n is kmq.proc.backoff.ms doubled n-1
 * times, capped at kmq.proc.backoff.max.ms; it waits on a scheduler timer
 * (kmq_sched_retry_after), holding the user's order but no worker: other
 * users run meanwhile. A RETRY whose partition is being revoked stops
 * retrying (the next owner runs it).
 *
 * Who owns what: the conf is copied; the registry and processor opaques are
 * borrowed and must outlive the runtime (the registry is frozen by
 * kmq_runtime_new). Processors run on worker threads (see processor.h).
 */
#ifndef KMQ_RUNTIME_H
#define KMQ_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/consumer.h"
#include "kmq/dlq.h"
#include "kmq/err.h"
#include "kmq/fallback.h"
#include "kmq/processor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_runtime_s kmq_runtime_t;

typedef struct {
  int64_t dispatched;   /* messages handed to actors */
  int64_t processed;    /* processor returned OK */
  int64_t failed;       /* ended in the DLQ (bad input or processor) */
  int64_t retried;      /* processor attempts that returned RETRY */
  int64_t dlq;          /* records written to the DLQ */
  int64_t dlq_lost;     /* DLQ and fallback failed (offset left unfinished) */
  int64_t cancelled;    /* queued messages dropped on revoke/shutdown (and
                           retries stopped by a revoke): redelivered */
  int64_t actors_live;
  int64_t mailbox_depth_max;
  int64_t rebalances;
  int64_t committed_offsets; /* offsets advanced by commits */
  int64_t in_flight;
  int64_t gate_backlog; /* sum over partitions, sampled on the poll thread */
  int64_t commit_lag;   /* sum of committable - committed, same sampling */
  int64_t latency_p50_us, latency_p99_us, latency_p999_us, latency_max_us;
} kmq_runtime_metrics_t;

/* Creates the runtime: consumer (not yet subscribed), scheduler workers, DLQ
 * producer. fallback may be NULL (kmq_dlq_new); then, when conf selects a
 * fallback store (kmq.fallback.backend, fallback.h), the runtime opens it and
 * installs it as the hook (kmq_fallback_hook): a record the DLQ rejects is
 * stored, and its offset finishes only once the row is durable; if the store
 * fails too, the offset stays unfinished (redelivered). The registry is frozen.
 * Returns NULL with errstr filled on error. */
kmq_runtime_t *kmq_runtime_new(const kmq_conf_t *conf,
                               kmq_proc_registry_t *registry,
                               kmq_fallback_cb *fallback,
                               void *fallback_opaque, char *errstr,
                               size_t errstr_size);

/* Subscribes to kmq.topic and polls until kmq_runtime_stop(). Returns KMQ_OK
 * after a stop, or an error if the subscription failed. @locality the
 * thread that becomes the poll thread (one at a time). */
kmq_err_t kmq_runtime_run(kmq_runtime_t *rt);

/* One poll iteration, for applications that own their loop (subscribes on
 * first use). Returns messages dispatched or a negative kmq_err_t. */
int kmq_runtime_poll(kmq_runtime_t *rt, int timeout_ms);

/* Asks run() to return. Any thread; async-signal-safe. */
void kmq_runtime_stop(kmq_runtime_t *rt);

/* Graceful shutdown, then frees: queued messages do not start (they are
 * redelivered), running ones finish (up to kmq.close.timeout.ms, then they
 * are abandoned and the member leaves anyway), the finished prefix is
 * committed, the group is left, the DLQ flushed. The scheduler then still
 * waits for running processors to return before freeing (a processor that
 * never returns blocks this call: issue 10). Not while run() is running.
 * No-op on NULL. */
void kmq_runtime_destroy(kmq_runtime_t *rt);

/* Metrics; gate backlog and commit lag are sampled on the poll thread at
 * every iteration. Any thread. */
void kmq_runtime_metrics(const kmq_runtime_t *rt, kmq_runtime_metrics_t *out);

/* The consumer (for partition listings in tools). @locality poll thread. */
kmq_consumer_t *kmq_runtime_consumer(kmq_runtime_t *rt);

#ifdef __cplusplus
}
#endif
#endif
