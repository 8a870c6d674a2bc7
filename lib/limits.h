/* The size limits that must agree before anything runs: a record kmq
 * accepts (kmq.msg.max.bytes) must be producible by kmq's producers
 * (message.max.bytes, read back from a client: what librdkafka enforces),
 * because a record kmq took in may be produced again whole, by the
 * fallback store's compensator or a replay. Its dead letter always fits
 * (kmq_dlq_letter_build truncates). Checked by kmq_runtime_new and
 * kmq_producer_new; the DLQ topic's max.message.bytes is left to
 * `kmqctl topics bootstrap` (its drift check), which asks the broker. */
#ifndef KMQ_LIB_LIMITS_H
#define KMQ_LIB_LIMITS_H

#include <stddef.h>

#include "kmq/dlq.h"

/* What message.max.bytes must leave beyond kmq.msg.max.bytes for the key,
 * the headers and librdkafka's per-record framing (KMQ_DLQ_RECORD_OVERHEAD
 * and room to spare: a WeCom key is an external_userid, the headers a few
 * ids). */
#define KMQ_MSG_ROOM_BYTES 16384

/* 0 when msg_max + KMQ_MSG_ROOM_BYTES <= producer_max; else -1 with errstr
 * naming both keys and values and what to change. Pure. */
int kmq__limits_check(size_t msg_max, size_t producer_max, char *errstr,
                      size_t errstr_size);

/* The DLQ producer's message.max.bytes (read back from its client). */
size_t kmq__dlq_max_bytes(const kmq_dlq_t *dlq);

#endif
