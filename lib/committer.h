/*
 * Committer: turns gate progress into stored and committed offsets.
 *
 * Offsets go to librdkafka with rd_kafka_offsets_store() only once the gate
 * says they are the end of a contiguous finished prefix; an asynchronous
 * rd_kafka_commit() follows every kmq.commit.interval.ms, or as soon as
 * kmq.commit.batch offsets advanced. A failed commit loses nothing: the
 * stored position stays in librdkafka and the next commit carries it.
 * Synchronous commits (revoke, close) pass explicit offsets.
 *
 * @locality poll thread, like the partitions it reads.
 */
#ifndef KMQ_LIB_COMMITTER_H
#define KMQ_LIB_COMMITTER_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include <stdatomic.h>

#include "kmq/err.h"
#include "lib/part.h"

typedef struct {
  rd_kafka_t *rk;
  int64_t interval_ms;
  int64_t batch;
  int64_t timeout_ms;
  int64_t pending;   /* offsets advanced since the last commit */
  int64_t last_ms;   /* time of the last commit */
  /* Written on the poll thread only, read from any thread for metrics
   * (kmq_consumer_stats): relaxed atomics, single writer, order nothing. */
  _Atomic int64_t commits, commit_errors, offsets_committed;
} kmq__committer_t;

/* Single-writer counter update (poll thread), see above. */
static inline void kmq__cm_add(_Atomic int64_t *c, int64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

void kmq__committer_init(kmq__committer_t *cm, rd_kafka_t *rk,
                         int64_t interval_ms, int64_t batch,
                         int64_t timeout_ms);

/* The gate of `p` advanced by `n` offsets. */
void kmq__committer_note(kmq__committer_t *cm, kmq__part_t *p, int64_t n);

/* Stores dirty partitions and commits asynchronously if due. */
void kmq__committer_maybe_commit(kmq__committer_t *cm, kmq__part_t *parts,
                                 int64_t now_ms);

/* Stores and commits the committable offset of each partition in `parts`
 * (a list linked through next; `only_revoking` restricts it to partitions
 * being revoked) synchronously, before they are unassigned. */
kmq_err_t kmq__committer_commit_sync(kmq__committer_t *cm, kmq__part_t *parts,
                                     int only_revoking);

/* offset_commit_cb body: records results per partition. */
void kmq__committer_on_commit(kmq__committer_t *cm, kmq__part_t *parts,
                              rd_kafka_resp_err_t err,
                              const rd_kafka_topic_partition_list_t *offsets);

#endif
