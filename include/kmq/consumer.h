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
 *     returning; KMQ_OK finishes the offset. A thin adapter over the ack
 *     style: the message takes a record like any other and is acked as soon
 *     as the handler returns (one budget, one completion path).
 *   kmq_consumer_poll_and_dispatch_with_ack(): the handler receives an ack it
 *     may call later, from any thread, exactly once (later calls are ignored):
 *     kmq_ack(ack, 1) finishes the offset, kmq_ack(ack, 0) leaves it
 *     unfinished, so the group's position stays below it and it is delivered
 *     again after a restart or a rebalance.
 * In both, a handler returning KMQ_ERR_BACKPRESSURE has not taken the
 * message: the consumer keeps it, stops reading its partition and offers it
 * again on a later call; other partitions keep flowing. The consumer itself applies
 * the same backpressure when kmq.max.inflight messages await their ack or a
 * partition's gate window (kmq.gate.window) is full.
 *
 * Records: each message in flight has one home, a record in a slab of
 * kmq.max.inflight records that the consumer allocates at kmq_consumer_new
 * (no allocation per message): its message, its partition, its state word
 * and, when the embedder asked for one (hooks.record_size), an area of its
 * own that the embedder keeps its per-message state in (kmq_ack_data; the
 * way Concurrency Kit leaves storage to its caller). kmq.max.inflight is
 * the one in-flight budget: an embedder that keeps its state there needs
 * no pool, no bound and no completion path of its own; the record ends
 * with kmq_ack (one atomic transition plus one push), and the poll thread's
 * next drain frees it and marks its offset in the gate.
 *
 * Commits carry, as the offset's metadata, the finished offsets beyond the
 * committed one (kmq_gate_encode_done, at most
 * kmq.commit.metadata.max.bytes; a set that does not fit is cut and counted
 * in meta_truncated: what is left out is processed again, never skipped).
 *
 * Rebalance: on assign, each partition's gate starts at the group's
 * committed offset and takes the finished offsets of its metadata
 * (restored): those records are skipped, not processed again
 * (skipped_done), and still committed in order; with no committed offset,
 * the gate starts at the first offset fetched (where auto.offset.reset put
 * the fetcher: the low watermark by default). On
 * revoke, every in-flight message of the revoked partitions is flagged
 * (a deferred one that has not begun never will: kmq_ack_begin), the
 * revoke hook runs, then the consumer waits until none of them runs any
 * more: a partition is not released while one of its messages runs, so
 * the next owner never starts a user this member is still running. A wait
 * past kmq.revoke.timeout.ms is logged and counted (slow_revokes); past 90%
 * of max.poll.interval.ms (the group protocol's own limit) the partition is
 * released anyway and what still runs is abandoned (logged as an error,
 * counted; its ack is ignored, its offset redelivered; only then can the
 * next owner overlap with it). Then the contiguous prefix is stored and
 * committed synchronously, and the partitions are
 * unassigned. Lost partitions get the same wait but no commit: librdkafka
 * 2.0.2 declares an assignment lost on ILLEGAL_GENERATION during a
 * rebalance (#4059) while the member is still in the group, and the group
 * moves the partitions only after this member rejoins. What makes it do so
 * is avoided: periodic commits are held while the member rejoins (the join
 * states init, wait-join, wait-metadata and wait-sync, which librdkafka
 * logs under its `cgrp` debug context; the consumer turns that context on
 * and forces log.queue off; those debug lines reach the log hook only when
 * the application set `debug` itself or log_level 7; an application that
 * set other debug contexts gets the cgrp lines too), counted in
 * commits_held, and a close lets a rejoin in progress finish (within its
 * timeout, and at most kmq.commit.timeout.ms) before its final commit. After a real
 * session timeout the new owner may already run them: nothing prevents
 * that overlap but keeping session.timeout.ms above stalls of this
 * process.
 *
 * Threads: everything except kmq_ack() runs on one thread, the poll thread
 * (the one calling poll_and_dispatch*), which also runs the handler, the
 * hooks and the rebalance. Acks travel to it through a lock-free MPSC stack
 * with one node per record (kmq.max.inflight), so kmq_ack() never blocks,
 * never waits for another acker and never fails.
 * Message lifetime: the rd_kafka_message_t given to a handler is valid until
 * the handler returns (plain style) or until its ack is called (ack style);
 * the consumer destroys it. A message never acked (its holder stuck) and
 * its record stay until kmq_consumer_destroy, which frees both.
 */
#ifndef KMQ_CONSUMER_H
#define KMQ_CONSUMER_H

#include <stdbool.h>
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
  /* After the in-flight messages of these partitions were flagged revoked
   * (deferred ones that have not begun never will) and before the consumer
   * waits for the running ones; an application may stop long work early
   * (ack it with 0). lost: librdkafka declared the assignment lost; the
   * wait still happens, but nothing will be committed for them. */
  void (*on_revoke)(const rd_kafka_topic_partition_list_t *parts, int lost,
                    void *opaque);
  /* An error librdkafka reported (its error callback, or a consume error
   * such as UNKNOWN_TOPIC_OR_PART for a subscribed topic that does not
   * exist), after the consumer logged and counted it. err is
   * RD_KAFKA_RESP_ERR__FATAL for a fatal error (rd_kafka_fatal_error says
   * which); librdkafka retries everything else by itself. May be NULL. */
  void (*on_error)(rd_kafka_resp_err_t err, const char *reason, void *opaque);
  void *opaque;
  /* Bytes of the embedder's area in each record (kmq_ack_data), 0: none.
   * Each area starts on a cache line of its own (64 bytes; the size is
   * rounded up to a multiple of it); kmq.max.inflight areas are
   * allocated by kmq_consumer_new (which fails, with errstr, when that
   * cannot be), zeroed, and freed by kmq_consumer_destroy. */
  size_t record_size;
  /* At the start of every rebalance callback, on the poll thread, before
   * the consumer may block for long (an assignment's committed-offset
   * fetch, a revoke's wait for its running messages and its commit): an
   * embedder that defers handing work to other threads during a poll
   * (kmq_sched_batch_begin) hands it over here. May be NULL. */
  void (*on_rebalance)(void *opaque);
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
  int64_t paused;         /* partitions kmq does not read now (a refused
                             message waits, a stuck one, or no budget while
                             librdkafka has messages of it) */
  int64_t consume_errors; /* error events from librdkafka */
  int64_t refetched;      /* re-fetched offsets dropped (read before in the
                             partition's assignment: handed out, skipped or
                             held) */
  int64_t slow_revokes;   /* revokes that waited past kmq.revoke.timeout.ms */
  int64_t abandoned;      /* in flight when their partition was dropped (lost,
                             or revoke/close past its bound): outcome ignored */
  int64_t restored;       /* offsets restored as finished from commit metadata
                             on assign (the previous owner finished them) */
  int64_t skipped_done;   /* records skipped because they were restored as
                             finished: not processed again */
  int64_t meta_truncated; /* commits whose metadata could not list every
                             finished offset (kmq.commit.metadata.max.bytes):
                             those are processed again after a rebalance */
  int64_t commits_held;   /* commit intervals that passed while the member
                             was rejoining the group: the commit waited for
                             the rejoin (librdkafka #4059, committer.h) */
} kmq_consumer_stats_t;

/* Per-partition view for metrics: the gate's state and the commit lag. */
typedef struct {
  const char *topic; /* valid during the callback */
  int32_t partition;
  int64_t committable; /* gate prefix end (-1: no gate yet) */
  int64_t committed;   /* last successfully committed offset, -1 if none */
  int64_t backlog;     /* finished but not committable */
  int64_t in_flight;   /* tracked, not finished */
  int paused;          /* kmq does not read it now (see stats.paused) */
  int64_t high;        /* one past the highest offset handed out (-1: no
                          gate yet); committable < high: the record at
                          committable is in flight and blocks the commit */
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
 * exactly once per handle: later calls are ignored. Never blocks. It ends
 * the caller's hold on the record: the poll thread may free the message
 * and reuse the record (and its area, kmq_ack_data) as soon as it returns,
 * so it must be the caller's last touch of either. */
void kmq_ack(kmq_ack_t ack, int ok);

/* The embedder's area of ack's record: hooks.record_size bytes (rounded
 * up to 64), starting on a 64-byte cache line (so aligned for any type),
 * one per record, never shared
 * with another message in flight. Owned by whoever holds the ack, from the
 * ack handler's call until kmq_ack() for it (on any thread, through the
 * holder's own hand-offs); the consumer never reads or writes it. It is
 * zeroed at kmq_consumer_new and otherwise keeps what the record's
 * previous holder left there (an embedder may initialise its state once
 * per record and reuse it). Returns NULL when the consumer has no areas
 * (record_size 0) or the handle is not current (acked, voided, or its
 * record reused: a new generation). Any thread; one atomic load. */
void *kmq_ack_data(kmq_ack_t ack);

/* A message handed to an ack handler counts as running from dispatch: a
 * revoke keeps its partition until it is acked. A handler that queues the
 * message instead (a scheduler, a mailbox) calls kmq_ack_defer(ack) before
 * publishing it to another thread; the message then counts as queued until
 * kmq_ack_begin(ack) succeeds, and a revoke or close does not wait for it:
 * kmq_ack_begin() returns false once the partition is being revoked, was
 * lost, or the consumer is closing, and the message must not start (ack it
 * with 0: it is redelivered to the partition's next owner). One CAS decides
 * between a begin and a revoke, so a message either runs while its
 * partition is still held or never runs here. A revoke flags the
 * partition's messages in flight highest offset first: once
 * kmq_ack_begin() has refused a message because of the revoke (or
 * kmq_ack_revoked() returned true for it), every message of that partition
 * with a higher offset that was in flight then is refused too, on any
 * thread whose begin is ordered after that refusal. A caller that begins a
 * key's messages in offset order, one after the other, thus never runs one
 * of them after refusing an earlier one (which the next owner runs), as
 * long as the key's messages are all in that partition.
 * A message that has begun may be deferred again while it waits (e.g. a
 * retry's backoff): a revoke then does not wait for it, and it must begin
 * again before it resumes.
 * kmq_ack_defer: the thread holding the message, before handing it to a
 *   queue or timer (the handler on the poll thread, or a worker).
 * kmq_ack_begin: any thread, before the work (re)starts; never blocks.
 * kmq_ack_revoked: true once the partition is going (or the handle is
 * stale): a running message may stop early (e.g. between retries) and ack
 * with 0. Any thread; one atomic load. */
void kmq_ack_defer(kmq_ack_t ack);
bool kmq_ack_begin(kmq_ack_t ack);
bool kmq_ack_revoked(kmq_ack_t ack);

/* The message of ack cannot finish for now and will not for a while (the
 * runtime retries a dead letter that neither the DLQ nor the fallback store
 * took): stuck != 0 pauses its partition on the next poll (the consumer
 * takes nothing more of it; what librdkafka fetches for it next stays on
 * the partition's own queue, up to its queued.* thresholds), until
 * kmq_ack_stuck(ack, 0) or the message's ack; a revoke drops the partition
 * as usual. Other partitions keep flowing. No-op on a stale ack. Any
 * thread; never blocks. */
void kmq_ack_stuck(kmq_ack_t ack, int stuck);

/* Graceful shutdown: stops taking messages, flags every in-flight message
 * as revoked (those not started will not start), waits up to timeout_ms for
 * the running ones while serving acks and the group, lets a rejoin of the
 * group in progress finish (within the same deadline, at most
 * kmq.commit.timeout.ms), commits the contiguous prefix of every partition
 * synchronously (skipped, with a WARN, if the member is still rejoining:
 * the commit would be refused), closes the group membership (serving the
 * rebalance). Returns KMQ_ERR_TIMED_OUT if messages were still running at
 * the deadline: the member leaves anyway, their offsets stay uncommitted
 * and are redelivered (logged as an error). After a fatal librdkafka error
 * it neither commits nor leaves the group (librdkafka 2.0.2's close could
 * wait forever for it); it serves the group until librdkafka waits for
 * nothing of the application (no assign call pending and, for a dynamic
 * member, no rejoin under way; within the deadline and
 * kmq.commit.timeout.ms) and returns KMQ_ERR_FATAL (or
 * KMQ_ERR_TIMED_OUT): the group's session timeout ends the membership.
 * Idempotent. */
kmq_err_t kmq_consumer_close(kmq_consumer_t *c, int timeout_ms);

/* Closes if needed (kmq.close.timeout.ms), then frees. No-op on NULL.
 * librdkafka's teardown (rd_kafka_destroy) gets until close's deadline, or
 * 5 s from its start if that is later; one that does not end by then is
 * abandoned: logged as an error, the librdkafka handle with its threads,
 * the consumer's own struct and two file descriptors stay until it ends
 * (freed then, by its thread), and none of its log lines reach the conf's
 * log hook after this returns. It is abandoned at once, without the wait,
 * when it is known never to end: after the fatal error of a static
 * (group.instance.id) cooperative member whose assign call librdkafka
 * ignored (lib/rk_destroy.h, librdkafka < 2.4.0); librdkafka's main
 * thread then spins on one CPU for the life of the process, which should
 * be restarted. @locality an application thread */
void kmq_consumer_destroy(kmq_consumer_t *c);

/* Commits the contiguous prefix of every partition now, synchronously.
 * Not held while the member rejoins the group, unlike the periodic
 * commits: called then, it may be refused (ILLEGAL_GENERATION) and cost
 * the assignment (see the rebalance notes above). @locality poll thread */
kmq_err_t kmq_consumer_commit_sync(kmq_consumer_t *c);

void kmq_consumer_stats(const kmq_consumer_t *c, kmq_consumer_stats_t *out);

/* Calls cb for each assigned partition. @locality poll thread */
void kmq_consumer_partitions(kmq_consumer_t *c,
                             void (*cb)(const kmq_partition_info_t *info,
                                        void *opaque),
                             void *opaque);

/* The librdkafka handle (for tools and tests). Owned by the consumer.
 * Its consumer queue carries only events: each assigned partition's
 * messages are on the partition's own queue, forwarded to the consumer's
 * fetch queue (kmq.fetch.queue), which only the consumer reads
 * (rd_kafka_consumer_poll on this handle returns no message of it; only a
 * partition whose queue librdkafka could not give, which it does for every
 * partition of a consumer handle, would come through there). */
rd_kafka_t *kmq_consumer_rk(kmq_consumer_t *c);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_CONSUMER_H */
