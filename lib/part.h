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
  int64_t in_flight;  /* ack slots outstanding for this partition */
  int64_t stored;     /* last offset handed to rd_kafka_offsets_store, -1 */
  int64_t committed;  /* last offset confirmed committed, -1 */
  int dirty;          /* committable advanced past `stored` */
  int paused;
  int stuck; /* PENDING slots flagged KMQ__SLOT_STUCK (kmq__apply_stuck) */
  int revoking;
  /* Messages taken from librdkafka but not yet accepted (backpressure), in
   * offset order; past KMQ__HOLD_BEFORE_PAUSE the partition is paused, which
   * stops more from arriving. */
  rd_kafka_message_t **held;
  int held_cnt, held_size;
  struct kmq__part_s *next; /* in the consumer's list */
} kmq__part_t;

#endif
