/*
 * Consumer internals, shared by the lib/consumer*.c files only (kmq__
 * prefix: not public API). The consumer is split by feature:
 *   consumer.c            handle, poll loop, close, stats;
 *   consumer_flow.c       the partition table and flow control: each
 *                         partition's own queue, read passes, offering a
 *                         message to the handler, holding refused ones,
 *                         dropping a partition;
 *   consumer_ack.c        the record slab: kmq_ack*, kmq_ack_data, the
 *                         REVOKED/QUEUED flags, the drain that applies acks
 *                         to the gates;
 *   consumer_rebalance.c  assign, revoke (waiting for running records), lost.
 * Everything here is @locality poll thread unless a function says otherwise
 * (kmq_ack* in consumer.h are any thread).
 */
#ifndef KMQ_LIB_CONSUMER_INT_H
#define KMQ_LIB_CONSUMER_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "kmq/consumer.h"
#include "lib/committer.h"
#include "lib/log.h"
#include "lib/mpsc.h"
#include "lib/part.h"
#include "lib/rdstats.h"
#include "lib/util.h" /* KMQ__CACHELINE */

/* Flow control (consumer_flow.c). Each assigned partition's librdkafka
 * queue is taken off the consumer queue and forwarded to one fetch queue of
 * kmq's own (rd_kafka_queue_forward), which the poll thread reads while the
 * ack budget (kmq.max.inflight) has room. librdkafka's prefetch thresholds
 * (queued.min.messages, queued.max.messages.kbytes) then bound what all the
 * readable partitions hold together, as they bound a plain consumer's
 * queue. A partition that cannot take its next message (a refusal by the
 * handler or the gate window: "held"; a message that cannot finish for
 * now: "stuck") is blocked: its queue is no longer forwarded, so what
 * librdkafka fetches for it next stays there (up to the same thresholds,
 * for that partition alone), and what the fetch queue still holds of it is
 * held in order as it is read. Once nothing of it is held or stuck its queue
 * is forwarded again, which moves what it holds behind the fetch queue's
 * messages and so keeps the offset order: held messages (offered first)
 * are older than its messages still in the fetch queue, which are older
 * than those in its own queue. Memory: the fetch queue's bound, plus each
 * blocked partition's own queue (up to the same thresholds) and its held
 * messages (at most what the fetch queue had of it).
 * No partition is ever paused: librdkafka 2.0.2 throws a paused
 * partition's prefetched messages away, so every pause and resume fetched
 * and decompressed them again (ten times over in the decoding pipeline,
 * bench/RESULTS.md), and a resume can rewind the fetch position (#4636).
 * The consumer queue carries only events (rebalances, errors, statistics).
 * The poll thread sleeps in poll(2) on a pipe that librdkafka writes to
 * when one of these queues turns non-empty (rd_kafka_queue_io_event_enable).
 */
#define KMQ__READ_BATCH 64

enum { KMQ__SLOT_FREE = 0, KMQ__SLOT_PENDING, KMQ__SLOT_OK, KMQ__SLOT_FAIL };
#define KMQ__SLOT_STATE 3u
/* Set on a slot whose partition is being revoked, lost or closed: the
 * message must not start any more (kmq_ack_begin fails). A flag beside the
 * state, so that acks keep working and nothing has a capacity. */
#define KMQ__SLOT_REVOKED 4u
/* The message waits in a queue and has not started (kmq_ack_defer until
 * kmq_ack_begin): a revoke does not wait for it. */
#define KMQ__SLOT_QUEUED 8u
/* The message cannot finish for now (kmq_ack_stuck): its partition stays
 * paused while a PENDING slot of it carries this flag. */
#define KMQ__SLOT_STUCK 16u

/* A record's header (its ack slot): one message awaiting its ack. `word`
 * packs the generation (high 32 bits) with the state and the REVOKED flag
 * so that kmq_ack() from any thread can CAS a specific (generation,
 * PENDING) and a stale handle can never hit a reused slot. part and m are
 * @locality poll thread. */
typedef struct {
  _Atomic uint64_t word;
  kmq__part_t *part; /* NULL once the partition was dropped */
  rd_kafka_message_t *m;
} kmq__slot_t;

typedef struct {
  atomic_llong consumed, dispatched, finished, unfinished, backpressured,
      assigned, revoked, lost, rebalances, in_flight, paused, consume_errors,
      refetched, slow_revokes, abandoned, restored, skipped_done;
} kmq__cstats_t;

struct kmq_consumer_s {
  rd_kafka_t *rk;
  kmq_consumer_hooks_t hooks;
  kmq__committer_t cm;
  kmq__part_t *parts;
  size_t window;
  int64_t revoke_ms, commit_timeout_ms;
  /* How long a revoke may keep a partition while its messages run: 90% of
   * max.poll.interval.ms, the group protocol's own limit. */
  int64_t revoke_max_ms;
  int64_t close_ms;
  int64_t close_deadline; /* set by kmq_consumer_close */
  int poll_batch;
  /* The wake-up pipe of the queues' io events ([0] read by the poll
   * thread, [1] written by librdkafka's threads) and the consumer queue. */
  int wake[2];
  rd_kafka_queue_t *cq;
  /* The fetch queue: readable partitions' queues forward to it, unless
   * per_part (kmq.fetch.queue=partition): then each is read from its own
   * queue, round robin, and fq stays empty. */
  rd_kafka_queue_t *fq;
  int per_part;
  uint32_t rr; /* kmq.fetch.queue=partition: where the next round starts */
  kmq__part_t *last; /* partition of the last message read from fq */
  /* Queues of dropped partitions, released by kmq__retire_queues. */
  rd_kafka_queue_t **retired;
  int nretired, retired_size;
  /* Set by the last read pass: messages wait for budget or for held ones
   * to be taken, which acks free and acks do not wake the poll thread. */
  int starved;
  int cooperative;
  int subscribed;
  int closed;

  /* The record slab, one allocation of kmq.max.inflight records: the
   * headers (slots) first, then the embedder's areas (hooks.record_size
   * each, rounded up to a cache line: record i's is data + i * data_stride,
   * data_stride 0 when none was asked for). Index i is one record: one
   * budget (the free stack), one completion path (kmq_ack's push onto
   * `acked`, applied by kmq__drain). The headers are kept together rather
   * than interleaved with the areas so that the scans over them (revoke,
   * stuck recount, partition drop) stay within a few cache lines per 64
   * records whatever the embedder keeps. */
  _Alignas(KMQ__CACHELINE) kmq__slot_t *slots;
  unsigned char *data;
  size_t data_stride;
  uint32_t nslots;
  /* Cache lines of their own from here on (KMQ__CACHELINE): the poll
   * thread writes these for every message, the ackers write `acked`, and
   * the lines above are read by both (kmq_ack reads slots and nslots). */
  _Alignas(KMQ__CACHELINE) uint32_t *free_stack; /* @locality poll thread */
  uint32_t free_top;
  /* A revoke's scratch (kmq__revoke_slots): the revoked partition's
   * records, to be flagged highest offset first. nslots entries, allocated
   * with the slab so that a revoke never fails for memory.
   * @locality poll thread */
  struct kmq__revoke_ent *revoke_order;
  _Alignas(KMQ__CACHELINE) kmq__mpsc_t acked; /* ackers -> poll thread:
                                                 slot indices */
  uint32_t *acked_next;
  /* Set (release) by kmq_ack_stuck and by an ack of a stuck slot; the poll
   * thread exchanges it (acquire) and recounts the stuck slots. */
  atomic_int stuck_dirty;

  /* The handler of the current poll call, to re-offer held messages. */
  _Alignas(KMQ__CACHELINE) kmq_handler_cb *h;
  kmq_ack_handler_cb *ah;
  void *hopaque;

  /* Written on the poll thread, read anywhere: relaxed, metrics only. */
  _Alignas(KMQ__CACHELINE) kmq__cstats_t st;
  /* The conf's log hook: kmq's lines and librdkafka's (log_cb). */
  kmq__log_sink_t log;
  /* 0 while librdkafka's group join state is a rejoin state (init,
   * wait-join, wait-metadata, wait-sync), else 1: written by the log callback from librdkafka's main
   * thread, read by the committer on the poll thread (committer.h says
   * why). kmq turns on librdkafka's `cgrp` debug context to see it; those
   * lines reach the log hook only when the application asked for debug
   * lines (user_debug) or its log_level (user_log_level) takes them. */
  atomic_int join_steady;
  /* KMQ__CALL_ASSIGN or KMQ__CALL_UNASSIGN while that join state waits
   * for the application's assign or unassign call (wait-assign-call,
   * wait-unassign-call), else 0: a handle destroyed in the first may never
   * finish (lib/rk_destroy.h). Same writer and source as join_steady; read
   * by close and destroy. */
  atomic_int join_call;
  /* Set by the rebalance callback when join_call is still
   * KMQ__CALL_ASSIGN after its assign call returned: librdkafka ignored
   * the call. @locality poll thread */
  int call_ignored;
  int static_member;  /* group.instance.id is set */
  int teardown_stuck; /* destroy: known never to end (rk_destroy.h) */
  /* Set by kmq_consumer_destroy when it abandons the handle to a
   * librdkafka destroy that did not end within its bound: from then on
   * librdkafka's lines no longer reach the conf's log hook, whose opaque
   * the application may free once destroy returns. log_entered counts
   * the log callbacks inside that hook, which destroy waits out. */
  atomic_int log_muted;
  atomic_int log_entered;
  int user_debug;
  int user_log_level;
  /* librdkafka's statistics (stats_cb), for the metrics endpoint. */
  kmq__rdstats_t rdstats;
};

/* What kmq_consumer_destroy gives librdkafka's teardown at least, past
 * close's deadline, before it abandons the handle (rk_destroy.h). A
 * healthy teardown after a close joins librdkafka's threads in well under
 * a second. */
#define KMQ__TEARDOWN_MIN_MS 5000

enum { KMQ__CALL_ASSIGN = 1, KMQ__CALL_UNASSIGN = 2 };

#define KMQ__INC(c, f, n)                                                      \
  atomic_fetch_add_explicit(&(c)->st.f, (n), memory_order_relaxed)

/* ---- consumer_flow.c ---- */
kmq__part_t *kmq__part_find(kmq_consumer_t *c, const char *topic,
                            int32_t partition);
kmq__part_t *kmq__part_add(kmq_consumer_t *c, const char *topic,
                           int32_t partition);
/* Creates p's gate at start; -1 (logged) when it cannot. */
int kmq__part_gate(kmq_consumer_t *c, kmq__part_t *p, int64_t start);
/* Keeps a refused message in p's held list (offset order). */
void kmq__hold(kmq_consumer_t *c, kmq__part_t *p, rd_kafka_message_t *m);
/* Returns how many were taken. */
int kmq__retry_held(kmq_consumer_t *c);
/* Routes one consumed message of p: drop a re-fetch, hold, or offer. */
void kmq__dispatch(kmq_consumer_t *c, kmq__part_t *p, rd_kafka_message_t *m);
/* Takes p's queue off the consumer queue (before it is assigned) and
 * forwards it to the fetch queue (kmq.fetch.queue=shared) or keeps it
 * apart (partition). */
void kmq__part_split(kmq_consumer_t *c, kmq__part_t *p);
/* One read pass, up to kmq.poll.batch messages: forwards the queues of
 * partitions that can take messages again, reads the fetch queue (or, with
 * kmq.fetch.queue=partition, the readable partitions' own queues, round
 * robin); sets c->starved and each partition's paused. Returns the
 * messages taken. */
int kmq__read_parts(kmq_consumer_t *c);
/* Errors from librdkafka's queues (m->err set): logged, reported, m
 * destroyed. */
void kmq__consume_error(kmq_consumer_t *c, rd_kafka_message_t *m);
void kmq__part_drop(kmq_consumer_t *c, kmq__part_t *p);
/* Releases the queues of the partitions dropped since the last call,
 * emptying them first when purge is set (after their unassign, so that
 * what librdkafka prefetched for them does not stay in memory until they
 * come back; not at destroy, which frees it all). */
void kmq__retire_queues(kmq_consumer_t *c, int purge);
/* After kmq_ack_stuck or the ack of a stuck slot: recounts each
 * partition's stuck messages (a partition with one is not read). */
void kmq__apply_stuck(kmq_consumer_t *c);

/* ---- consumer_ack.c ---- */
/* One record of a partition being revoked: its offset and index. */
struct kmq__revoke_ent {
  int64_t offset;
  uint32_t idx;
};
/* p's gate finished offset: advance and tell the committer. */
void kmq__part_finish(kmq_consumer_t *c, kmq__part_t *p, int64_t offset);
/* Applies acks that arrived since the last call; returns their count. */
int kmq__drain(kmq_consumer_t *c);
/* Pending and not deferred: the message may be running. Any thread. */
int kmq__slot_running(const kmq__slot_t *s);
void kmq__revoke_slots(kmq_consumer_t *c, kmq__part_t *p);
/* Wakes the poll thread out of its wait (kmq__poll): a stuck partition
 * that may be read again does not make its queue turn non-empty, which is
 * all librdkafka's io events report. Any thread. */
void kmq__wake(kmq_consumer_t *c);
/* Returns slot idx to the free stack, bumping its generation. */
void kmq__slot_free(kmq_consumer_t *c, uint32_t idx);
/* Allocates the record slab (c->nslots records with areas of record_size
 * bytes) and fills the free stack; -1 with errstr filled when it cannot.
 * Freed with kmq__slab_free. */
int kmq__slab_init(kmq_consumer_t *c, size_t record_size, char *errstr,
                   size_t errstr_size);
void kmq__slab_free(kmq_consumer_t *c);

/* ---- consumer_rebalance.c ---- */
int64_t kmq__revoking_busy(kmq_consumer_t *c);
void kmq__wait_revoking(kmq_consumer_t *c, int64_t max_ms);
void kmq__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                       rd_kafka_topic_partition_list_t *parts, void *opaque);

#endif /* KMQ_LIB_CONSUMER_INT_H */
