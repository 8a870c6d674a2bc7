/*
 * Committer: turns gate progress into committed offsets.
 *
 * Each commit carries, per partition, the gate's committable offset (the end
 * of the contiguous finished prefix) and, as the offset's metadata, the
 * finished offsets beyond it (kmq_gate_encode_done, at most
 * kmq.commit.metadata.max.bytes; 0 turns it off), so that the partition's
 * next owner skips work already done instead of doing it again. Explicit
 * offset lists are committed (librdkafka 2.0.2 stores no metadata with
 * rd_kafka_offsets_store): asynchronously every kmq.commit.interval.ms, or
 * as soon as kmq.commit.batch offsets finished; synchronously on revoke and
 * close. A partition is committed again when its prefix advanced or an
 * offset beyond it finished (`dirty`). A failed commit loses nothing: its
 * partitions are dirty again and the next commit carries them.
 *
 * Periodic commits wait while the group member rejoins the group (`steady`
 * is 0 in librdkafka's join states init, wait-join, wait-metadata and
 * wait-sync, fed by the consumer from librdkafka's CGRPJOINSTATE lines):
 * in librdkafka 2.0.2 a commit sent while the member rejoins is queued by the coordinator behind the JoinGroup, answered
 * ILLEGAL_GENERATION for the old generation, and that answer resets the
 * member's generation to -1, so its SyncGroup fails and its whole
 * assignment is declared lost (#4059, fixed in librdkafka 2.10 by #4908):
 * the finished but uncommitted work of every partition is then done again
 * by the next owner. Synchronous commits are not held: a revoke's is sent
 * from the rebalance callback, before the rejoin; close waits for the
 * rejoin (kmq_consumer_close) and skips its commit if the member is still
 * rejoining.
 *
 * @locality poll thread, like the partitions it reads.
 */
#ifndef KMQ_LIB_COMMITTER_H
#define KMQ_LIB_COMMITTER_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include <stdatomic.h>

#include "kmq/err.h"
#include "lib/log.h"
#include "lib/part.h"

typedef struct {
  rd_kafka_t *rk;
  int64_t interval_ms;
  int64_t batch;
  int64_t timeout_ms;
  int64_t pending;   /* offsets finished since the last commit */
  int64_t last_ms;   /* time of the last commit */
  int64_t held_ms;   /* when a held commit was last counted */
  size_t meta_max;   /* kmq.commit.metadata.max.bytes; 0: no metadata */
  char *meta_buf;    /* meta_max + 1 bytes of scratch, or NULL */
  /* Written on the poll thread only, read from any thread for metrics
   * (kmq_consumer_stats): relaxed atomics, single writer, order nothing. */
  _Atomic int64_t commits, commit_errors, offsets_committed;
  /* Commits whose metadata could not hold every finished offset (those
   * left out are processed again after a rebalance, never skipped). */
  _Atomic int64_t meta_truncated;
  /* Periodic commits held back while the member was rejoining. */
  _Atomic int64_t commits_held;
  /* Where its log lines go (the owner's sink, set after init). */
  const kmq__log_sink_t *log;
  /* 0 while the member rejoins the group (any thread writes it, the poll
   * thread reads it); NULL: always steady. Set after init. */
  const atomic_int *steady;
} kmq__committer_t;

/* Single-writer counter update (poll thread), see above. */
static inline void kmq__cm_add(_Atomic int64_t *c, int64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* Returns -1 when the metadata buffer cannot be allocated. */
int kmq__committer_init(kmq__committer_t *cm, rd_kafka_t *rk,
                        int64_t interval_ms, int64_t batch, int64_t timeout_ms,
                        size_t meta_max);
void kmq__committer_free(kmq__committer_t *cm);

/* `n` offsets of `p` finished (its commit is due again). */
void kmq__committer_note(kmq__committer_t *cm, kmq__part_t *p, int64_t n);

/* Commits dirty partitions asynchronously if due. */
void kmq__committer_maybe_commit(kmq__committer_t *cm, kmq__part_t *parts,
                                 int64_t now_ms);

/* Commits the committable offset of each partition in `parts`
 * (a list linked through next; `only_revoking` restricts it to partitions
 * being revoked) synchronously, before they are unassigned. */
kmq_err_t kmq__committer_commit_sync(kmq__committer_t *cm, kmq__part_t *parts,
                                     int only_revoking);

/* offset_commit_cb body: records results per partition. */
void kmq__committer_on_commit(kmq__committer_t *cm, kmq__part_t *parts,
                              rd_kafka_resp_err_t err,
                              const rd_kafka_topic_partition_list_t *offsets);

#endif
