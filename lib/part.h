/* Per-partition consumer state shared by consumer.c and committer.c.
 * Everything here is @locality poll thread. */
#ifndef KMQ_LIB_PART_H
#define KMQ_LIB_PART_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "kmq/gate.h"

typedef struct kmq__part_s {
  char *topic;
  int32_t partition;
  kmq_gate_t *gate;   /* NULL until the start offset is known */
  /* The partition's own librdkafka queue, taken off the consumer queue
   * (consumer_flow.c): NULL if it could not be. Forwarded to the consumer's
   * fetch queue while the partition is readable (fwd), kept apart while it
   * is blocked (held or stuck). */
  rd_kafka_queue_t *q;
  int fwd;
  rd_kafka_topic_t *rkt; /* of its messages, once one was read: a quick
                            match for the fetch queue's reads */
  int64_t in_flight;  /* records outstanding for this partition */
  /* One past the highest offset read from librdkafka for it in this
   * assignment (0: none yet): a message below it was read before (handed
   * out, skipped as restored, or held), so it is a re-fetch. Not the
   * gate's high: a finished prefix carries the gate past offsets restored
   * as finished that the fetch has not reached yet (gate.c), and those are
   * skipped, not re-fetches. */
  int64_t read_end;
  /* -1, or the offset of a message kmq could not keep (out of memory in
   * kmq__hold): nothing at or past it is offered in this assignment, so
   * the gate never tracks past it and nothing from it on is committed; the
   * next owner, or this one after a restart, reads it again. */
  int64_t dropped_at;
  int64_t stored;     /* last offset handed to rd_kafka_offsets_store, -1 */
  int64_t committed;  /* last offset confirmed committed, -1 */
  int dirty;          /* committable advanced past `stored` */
  int paused; /* kmq does not read it for now (held, stuck or no budget) */
  int stuck; /* PENDING slots flagged KMQ__SLOT_STUCK (kmq__apply_stuck) */
  int was_stuck; /* at the previous kmq__apply_stuck: logs the resume */
  int revoking;
  /* Messages taken from librdkafka but not yet accepted (a refusal by the
   * handler or the gate window, or read from the fetch queue while the
   * partition was held or stuck), in offset order: at most what the fetch
   * queue held of the partition when it was blocked, plus one read. While
   * blocked its queue is not forwarded, so what librdkafka fetches for it
   * next waits there instead, up to its queued.* thresholds. */
  rd_kafka_message_t **held;
  int held_cnt, held_size;
  struct kmq__part_s *next; /* in the consumer's list */
} kmq__part_t;

#endif
