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
  /* The partition's own librdkafka queue, not forwarded to the consumer
   * queue (consumer_flow.c): NULL if it could not be split off. */
  rd_kafka_queue_t *q;
  int64_t in_flight;  /* records outstanding for this partition */
  int64_t stored;     /* last offset handed to rd_kafka_offsets_store, -1 */
  int64_t committed;  /* last offset confirmed committed, -1 */
  int dirty;          /* committable advanced past `stored` */
  int paused; /* kmq does not read it for now (held, stuck or no budget) */
  int stuck; /* PENDING slots flagged KMQ__SLOT_STUCK (kmq__apply_stuck) */
  int was_stuck; /* at the previous kmq__apply_stuck: logs the resume */
  int revoking;
  /* Messages taken from librdkafka but not yet accepted (a refusal by the
   * handler or the gate window), in offset order, at most one read's batch
   * (the partition's queue is not read again until they are taken; only
   * the consumer-queue fallback of kmq__part_split can hold more). */
  rd_kafka_message_t **held;
  int held_cnt, held_size;
  struct kmq__part_s *next; /* in the consumer's list */
} kmq__part_t;

#endif
