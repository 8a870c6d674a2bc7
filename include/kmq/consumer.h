/*
 * Consumer: at-least-once consumption with a commit gate per partition.
 *
 * A librdkafka consumer with cooperative-sticky assignment, auto commit and
 * auto offset store off. Each consumed message is tracked in its partition's
 * commit gate; only the contiguous prefix of finished offsets is stored and
 * committed (asynchronously every kmq.commit.interval.ms or every
 * kmq.commit.batch offsets; synchronously on revoke and on close).
 *
 * Two dispatch styles:
 *   kmq_consumer_poll_and_dispatch(): the handler processes the message before
 *     returning; KMQ_OK finishes the offset.
 *   kmq_consumer_poll_and_dispatch_with_ack(): the handler receives an ack it
 *     may call later, from any thread, exactly once (later calls are ignored):
 *     kmq_ack(ack, 1) finishes the offset, kmq_ack(ack, 0) leaves it
 *     unfinished, so the group's position stays below it and it is delivered
 *     again after a restart or a rebalance.
 * In both, a handler returning KMQ_ERR_BACKPRESSURE has not taken the
 * message: the consumer keeps it, pauses its partition and offers it again
 * on a later call; other partitions keep flowing. The consumer itself applies
 * the same backpressure when kmq.max.inflight messages await their ack or a
 * partition's gate window (kmq.gate.window) is full.
 *
 * Rebalance: on assign, each partition's gate starts at the group's
 * committed offset; with none, at the first offset fetched (where
 * auto.offset.reset put the fetcher: the low watermark by default). On revoke, the revoke hook
 * runs first (cancel queued work of those partitions), then in-flight
 * messages of the revoked partitions may finish for up to
 * kmq.revoke.timeout.ms, then their contiguous prefix is stored and committed
 * synchronously, then the partitions are unassigned. Lost partitions are
 * dropped without committing. Acks of dropped partitions are ignored.
 *
 * Threads: everything except kmq_ack() runs on one thread, the poll thread
 * (the one calling poll_and_dispatch*), which also runs the handler, the
 * hooks and the rebalance. Acks travel to it through a lock-free MPSC stack
 * with one node per ack slot (kmq.max.inflight), so kmq_ack() never blocks,
 * never waits for another acker and never fails.
 * Message lifetime: the rd_kafka_message_t given to a handler is valid until
 * the handler returns (plain style) or until its ack is called (ack style);
 * the consumer destroys it.
 */
#ifndef KMQ_CONSUMER_H
#define KMQ_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_consumer_s kmq_consumer_t;

/* A completion handle, passed by value. Stale handles (second call, or a
 * message of a partition that was revoked meanwhile) are ignored. */
typedef struct {
  kmq_consumer_t *c;
  uint32_t slot;
  uint32_t gen;
} kmq_ack_t;

/* KMQ_OK: finished. KMQ_ERR_BACKPRESSURE: not taken, offer again later.
 * Anything else: not finished (redelivered after restart/rebalance). */
typedef kmq_err_t(kmq_handler_cb)(const rd_kafka_message_t *m, void *opaque);

/* KMQ_OK: taken, the ack will be called. KMQ_ERR_BACKPRESSURE: not taken
 * (the ack is void). Anything else: not finished, the ack is void. */
typedef kmq_err_t(kmq_ack_handler_cb)(const rd_kafka_message_t *m,
                                      kmq_ack_t ack, void *opaque);

typedef struct {
  /* After the partitions were added to the gate table and assigned. */
  void (*on_assign)(const rd_kafka_topic_partition_list_t *parts,
                    void *opaque);
  /* Before waiting for in-flight messages of these partitions: cancel queued
   * work (ack it with 0). lost: the partitions are already owned by another
   * member; nothing will be committed for them. */
  void (*on_revoke)(const rd_kafka_topic_partition_list_t *parts, int lost,
                    void *opaque);
  void *opaque;
} kmq_consumer_hooks_t;

typedef struct {
  int64_t consumed;       /* messages returned by librdkafka */
  int64_t dispatched;     /* handed to a handler and taken */
  int64_t finished;       /* acked ok / handled */
  int64_t unfinished;     /* acked 0 / handler error */
  int64_t backpressured;  /* offers refused (BACKPRESSURE, full window...) */
  int64_t commits;        /* commit requests (async + sync) */
  int64_t commit_errors;  /* failed commits (retried by the next one) */
  int64_t offsets_committed; /* sum over partitions of advanced offsets */
  int64_t assigned, revoked, lost; /* partitions, cumulative */
  int64_t rebalances;     /* rebalance callbacks */
  int64_t in_flight;      /* awaiting ack now */
  int64_t paused;         /* partitions paused now */
  int64_t consume_errors; /* error events from librdkafka */
  int64_t refetched;      /* re-fetched offsets dropped (already handed out) */
} kmq_consumer_stats_t;

/* Per-partition view for metrics: the gate's state and the commit lag. */
typedef struct {
  const char *topic; /* valid during the callback */
  int32_t partition;
  int64_t committable; /* gate prefix end (-1: no gate yet) */
  int64_t committed;   /* last successfully committed offset, -1 if none */
  int64_t backlog;     /* finished but not committable */
  int64_t in_flight;   /* tracked, not finished */
  int paused;
} kmq_partition_info_t;

/* Creates a consumer from conf (bootstrap.servers and group.id required;
 * consumer baselines applied). hooks may be NULL; it is copied. Returns NULL
 * with errstr filled on error. */
kmq_consumer_t *kmq_consumer_new(const kmq_conf_t *conf,
                                 const kmq_consumer_hooks_t *hooks,
                                 char *errstr, size_t errstr_size);

/* Subscribes to topics (copied). Errors: KMQ_ERR_KAFKA. */
kmq_err_t kmq_consumer_subscribe(kmq_consumer_t *c, const char *const *topics,
                                 int n);

/* Polls up to kmq.poll.batch messages (waiting at most timeout_ms for the
 * first), dispatches them, applies completions, commits as due. Returns the
 * number of messages dispatched, or a negative kmq_err_t. */
int kmq_consumer_poll_and_dispatch(kmq_consumer_t *c, kmq_handler_cb *handler,
                                   void *opaque, int timeout_ms);
int kmq_consumer_poll_and_dispatch_with_ack(kmq_consumer_t *c,
                                            kmq_ack_handler_cb *handler,
                                            void *opaque, int timeout_ms);

/* Finishes (ok != 0) or abandons (ok == 0) the message of `ack`. Any thread;
 * exactly once per handle: later calls are ignored. Never blocks. */
void kmq_ack(kmq_ack_t ack, int ok);

/* Graceful shutdown: stops taking messages, waits up to timeout_ms for
 * in-flight acks while serving them, commits the contiguous prefix of every
 * partition synchronously, closes the group membership (serving the
 * rebalance). Returns KMQ_ERR_TIMED_OUT if acks were still missing (their
 * offsets stay uncommitted and are redelivered). Idempotent. */
kmq_err_t kmq_consumer_close(kmq_consumer_t *c, int timeout_ms);

/* Closes if needed (kmq.revoke.timeout.ms), then frees. No-op on NULL. */
void kmq_consumer_destroy(kmq_consumer_t *c);

/* Commits the contiguous prefix of every partition now, synchronously. */
kmq_err_t kmq_consumer_commit_sync(kmq_consumer_t *c);

void kmq_consumer_stats(const kmq_consumer_t *c, kmq_consumer_stats_t *out);

/* Calls cb for each assigned partition. @locality poll thread */
void kmq_consumer_partitions(kmq_consumer_t *c,
                             void (*cb)(const kmq_partition_info_t *info,
                                        void *opaque),
                             void *opaque);

/* The librdkafka handle (for tools and tests). Owned by the consumer. */
rd_kafka_t *kmq_consumer_rk(kmq_consumer_t *c);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_CONSUMER_H */
