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
 * the fallback hook both fail, the offset stays unfinished, its partition is
 * paused (nothing more of it is taken), an ERROR line goes to the log
 * hook (counted: dlq_retries, dlq_retrying; /stuck shows state dlq) and the
 * dead letter is sent again after kmq.dlq.retry.backoff.ms, doubling up to
 * kmq.dlq.retry.backoff.max.ms, holding its user's order (other users
 * run); once the DLQ or the hook takes it the offset finishes and the
 * partition resumes. A revoke meanwhile leaves it to the next owner, a
 * shutdown to the next start. Exception: a record without a key
 * (missing_user, dead-lettered at dispatch, no user to hold) is not
 * retried: its offset stays unfinished until a restart. Nothing is lost
 * silently.
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
 * Modes (kmq.mode): live (the default) as above; shadow (migration phase
 * 1, README "Migration"): needs kmq.live.group.id different from group.id
 * (else kmq_runtime_new fails), creates no DLQ producer and writes nothing:
 * what live would dead-letter is counted in `failed` and finished in the
 * shadow's group.
 *
 * Who owns what: the conf is copied; the registry and processor opaques are
 * borrowed and must outlive the runtime (the registry is frozen by
 * kmq_runtime_new). Processors run on worker threads (see processor.h).
 * A message in flight has one home: its record in the consumer's slab
 * (consumer.h, "Records"), whose area holds the runtime's state for it
 * (decoded message, processor context, retry and dead-letter state); that
 * record is also the scheduler's item. kmq.max.inflight is the one budget:
 * the consumer stops taking messages when its records are all in flight,
 * and the scheduler's bound of the same size never refuses one of them
 * (sched.h); only a full mailbox (kmq.sched.mailbox.size) or the actor
 * bound (kmq.sched.max.actors) refuses a record, which the consumer then
 * holds and offers again. A message ends with its ack, on whichever thread
 * knows its outcome; the poll thread frees the record and marks the gate.
 *
 * Operations. With kmq.metrics.listen set (e.g. 127.0.0.1:9464; empty, the
 * default: off) kmq_runtime_new starts an HTTP server on its own thread,
 * bound exactly there (it fails when it cannot bind), serving GET /metrics
 * (Prometheus text format 0.0.4: the counters below, the processing
 * latency histogram, per-partition gauges, librdkafka's statistics, an
 * attached producer's figures) and GET /stuck (JSON: every partition whose
 * commit waits for an in-flight record, with that record's offset, user,
 * attempts, state and how long it has blocked, and the 10 deepest
 * mailboxes). The poll thread samples partitions, stalls and mailboxes
 * every kmq.metrics.interval.ms (default 1000) into a snapshot; the HTTP
 * thread and the C API below read that snapshot and atomic counters, never
 * the poll thread's own state, and nothing is sampled per message. The
 * conf's log hook receives kmq's and librdkafka's log lines, its error
 * hook librdkafka's errors (conf.h); kmq_runtime_run documents which stop
 * it.
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
typedef struct kmq_producer_s kmq_producer_t;

/* Error types counted in kmq_runtime_metrics_t.errors (kmq_error_t.type in
 * conf.h; the "type" label of kmq_errors_total). */
#define KMQ_ERROR_TYPES 6
/* DLQ reasons counted in kmq_runtime_metrics_t.dlq_by_reason (the README's
 * table; "other" for any reason not listed). */
#define KMQ_DLQ_REASONS 10

typedef struct {
  int64_t dispatched;   /* messages handed to actors */
  int64_t processed;    /* processor returned OK */
  int64_t failed;       /* ended in the DLQ (bad input or processor) */
  int64_t retried;      /* processor attempts that returned RETRY */
  int64_t dlq;          /* records written to the DLQ */
  int64_t dlq_lost;     /* DLQ and fallback failed (offset left unfinished),
                         * once per failed attempt */
  int64_t dlq_retries;  /* dead-letter attempts retried after such a
                         * failure (kmq.dlq.retry.backoff.ms) */
  int64_t dlq_retrying; /* records waiting for that retry now (their
                         * partitions paused) */
  int64_t cancelled;    /* queued messages dropped on revoke/shutdown (and
                           retries stopped by a revoke): redelivered */
  int64_t actors_live;
  int64_t mailbox_depth_max;
  int64_t rebalances;
  int64_t committed_offsets; /* offsets advanced by commits */
  int64_t in_flight;
  int64_t gate_backlog; /* sum over partitions, sampled on the poll thread */
  int64_t commit_lag;   /* sum of high watermark - committed (librdkafka's
                           cached watermark), same sampling */
  int64_t latency_p50_us, latency_p99_us, latency_p999_us, latency_max_us;
  /* Errors librdkafka reported, by type (kmq_runtime_error_type()). */
  int64_t errors[KMQ_ERROR_TYPES];
  /* Records the runtime sent to the DLQ, by reason (kmq_runtime_dlq_reason();
   * whatever their outcome: see dlq and dlq_lost). */
  int64_t dlq_by_reason[KMQ_DLQ_REASONS];
} kmq_runtime_metrics_t;

/* Name of error type i ("unknown_topic", ...) and of DLQ reason i
 * ("bad_json", ..., "other"); NULL out of range. Static strings. */
const char *kmq_runtime_error_type(int i);
const char *kmq_runtime_dlq_reason(int i);

/* Where a partition's commit is blocked, sampled by the poll thread every
 * kmq.metrics.interval.ms (not per message). */
typedef enum {
  KMQ_STALL_NONE = 0, /* not blocked */
  KMQ_STALL_QUEUED,   /* dispatched, not started: its user's earlier
                         messages run, or no worker is free */
  KMQ_STALL_RUNNING,  /* its processor runs (or it is being decoded) */
  KMQ_STALL_RETRYING, /* waiting out a retry backoff */
  KMQ_STALL_DLQ,      /* waiting for the DLQ (or the fallback hook) */
} kmq_stall_state_t;

#define KMQ_USER_MAX 64

/* One assigned partition as of the last sample. */
typedef struct {
  char topic[256];
  int32_t partition;
  int64_t committed;      /* last committed offset, -1 if none */
  int64_t committable;    /* end of the finished prefix, -1: no gate yet */
  int64_t high_watermark; /* librdkafka's cached one, -1 if unknown */
  int64_t lag;            /* high_watermark - committed, -1 if unknown */
  int64_t backlog;        /* finished offsets waiting for a lower one */
  int64_t in_flight;      /* handed out, not finished */
  int paused;
  /* The record the commit waits for: the offset at `committable` while it
   * is in flight, else -1 (and the fields below are empty). */
  int64_t blocking_offset;
  char user[KMQ_USER_MAX]; /* its record key (cut), NUL-terminated */
  double blocked_seconds;  /* since a sample first saw it blocking (the
                              resolution is kmq.metrics.interval.ms) */
  int attempts;            /* processor attempts begun; in state
                              KMQ_STALL_DLQ after a dead letter neither the
                              DLQ nor the store took: its failed attempts */
  kmq_stall_state_t state;
} kmq_runtime_partition_t;

/* A user with queued messages. */
typedef struct {
  char user[KMQ_USER_MAX]; /* cut, NUL-terminated */
  int64_t depth;           /* queued messages plus the running one */
} kmq_runtime_mailbox_t;

/* Copies up to max partitions of the last sample into out and returns how
 * many there were (more than max: the rest were left out). Empty before
 * the first sample (the first poll) and after a revoke of everything.
 * Any thread (a mutex-protected copy; the poll thread holds that mutex
 * only to publish a sample). */
size_t kmq_runtime_partitions(const kmq_runtime_t *rt,
                              kmq_runtime_partition_t *out, size_t max);

/* The (at most 10) users with the deepest mailboxes at the last sample,
 * deepest first; returns how many were copied (at most max). Any thread. */
#define KMQ_TOP_MAILBOXES 10
size_t kmq_runtime_top_mailboxes(const kmq_runtime_t *rt,
                                 kmq_runtime_mailbox_t *out, size_t max);

/* The port of the metrics endpoint (kmq.metrics.listen; the one picked for
 * port 0), 0 when it is off. Any thread. */
int kmq_runtime_metrics_port(const kmq_runtime_t *rt);

/* Adds an application's producer to the metrics endpoint (produced,
 * delivery failures, DLQ, queue depth, send-to-delivery latency). Borrowed:
 * detach it (NULL) before destroying it. Any thread. */
void kmq_runtime_set_producer(kmq_runtime_t *rt, kmq_producer_t *p);

/* Creates the runtime: consumer (not yet subscribed), scheduler workers, DLQ
 * producer. fallback may be NULL (kmq_dlq_new); then, when conf selects a
 * fallback store (kmq.fallback.backend, fallback.h), the runtime opens it and
 * installs it as the hook (kmq_fallback_hook): a record the DLQ rejects is
 * stored, and its offset finishes only once the row is durable; if the store
 * fails too, the offset stays unfinished (redelivered). The registry is frozen.
 * Limits are checked before anything runs: kmq.msg.max.bytes against the
 * DLQ producer's message.max.bytes, and the DLQ topic's max.message.bytes
 * against the largest dead letter, which means asking the broker: this call
 * blocks up to kmq.dlq.check.timeout.ms (default 5 s, +1 s) when the
 * cluster does not answer; no answer or no DLQ topic yet is a WARN line,
 * not a refusal; 0 skips the question. Returns NULL with errstr filled on
 * error (a too-small DLQ topic names both values). Any thread. */
kmq_runtime_t *kmq_runtime_new(const kmq_conf_t *conf,
                               kmq_proc_registry_t *registry,
                               kmq_fallback_cb *fallback,
                               void *fallback_opaque, char *errstr,
                               size_t errstr_size);

/* Subscribes to kmq.topic and polls until kmq_runtime_stop(). Returns KMQ_OK
 * after a stop, or an error if the subscription failed.
 * Errors librdkafka reports meanwhile go to the conf's error hook
 * (kmq_conf_set_error_cb) and are counted (kmq_errors_total{type}); the
 * transient ones (a missing topic: UNKNOWN_TOPIC_OR_PART; an unreachable
 * cluster: ALL_BROKERS_DOWN, transport errors) do not stop it: librdkafka
 * keeps retrying, and consumption starts once the topic or the brokers are
 * there. A fatal error (RD_KAFKA_RESP_ERR__FATAL) makes it return
 * KMQ_ERR_FATAL after the hook ran: the runtime cannot continue; destroy
 * it (and create a new one). @locality the thread that becomes the poll
 * thread (one at a time). */
kmq_err_t kmq_runtime_run(kmq_runtime_t *rt);

/* One poll iteration, for applications that own their loop (subscribes on
 * first use). Returns messages dispatched or a negative kmq_err_t
 * (KMQ_ERR_FATAL after a fatal error, as kmq_runtime_run). Samples the
 * metrics snapshot every kmq.metrics.interval.ms. */
int kmq_runtime_poll(kmq_runtime_t *rt, int timeout_ms);

/* Asks run() to return. Any thread; async-signal-safe. */
void kmq_runtime_stop(kmq_runtime_t *rt);

/* Graceful shutdown, then frees: queued messages do not start (they are
 * redelivered), running ones get up to kmq.close.timeout.ms to finish, the
 * finished prefix is committed, the group is left, dead letters in flight
 * get up to kmq.flush.timeout.ms. Bounded whatever the processors do:
 * returns within kmq.close.timeout.ms + kmq.flush.timeout.ms (at least
 * 200 ms for the scheduler) plus what kmq cannot bound: the purge of
 * undelivered dead letters (about 2 s), the fallback hook's own time, and,
 * when the group coordinator does not answer, librdkafka's final commit
 * and group leave (its socket and session timeouts). librdkafka's own
 * teardown is bounded too: until the close deadline, or 5 s from its
 * start if that is later; past it the consumer's handle is abandoned
 * (kmq_consumer_destroy).
 * tests/test_shutdown_broker.c: 1 s + 1 s bounds, a SYNC or ASYNC processor
 * that never returns, destroy in < 8 s.
 * What still runs at the close deadline is abandoned: logged as an error,
 * not committed (redelivered to the next owner), and its outcome, when the
 * processor returns or completes later, is ignored. Until then the runtime
 * keeps what that outcome touches: its record (job and message) and so the
 * closed consumer handle with its librdkafka threads, the scheduler with its idle
 * workers; the last such outcome frees them, on a thread of its own. A
 * processor that never returns keeps them for the life of the process.
 * Likewise a dead-letter send or fallback hook still running at the flush
 * deadline keeps the DLQ and the consumer until it returns. The registry
 * and processor opaques must stay valid until the processors return.
 * @locality the thread that ran run()/poll(), not while run() is running.
 * No-op on NULL. */
void kmq_runtime_destroy(kmq_runtime_t *rt);

/* Metrics; gate backlog and commit lag are sampled on the poll thread
 * every second. Any thread: every field is an atomic counter read with a
 * relaxed load (exact on its own, not a consistent snapshot of the others).
 * The endpoint (kmq.metrics.listen) serves the same figures. */
void kmq_runtime_metrics(const kmq_runtime_t *rt, kmq_runtime_metrics_t *out);

/* The consumer (for partition listings in tools). @locality poll thread. */
kmq_consumer_t *kmq_runtime_consumer(kmq_runtime_t *rt);

#ifdef __cplusplus
}
#endif
#endif
