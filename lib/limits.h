/* The size limits that must agree before anything runs: a record kmq
 * accepts (kmq.msg.max.bytes) must be producible by kmq's producers
 * (message.max.bytes, read back from a client: what librdkafka enforces),
 * because a record kmq took in may be produced again whole, by the
 * fallback store's compensator or a replay. Its dead letter always fits
 * (kmq_dlq_letter_build truncates). Checked by kmq_runtime_new and
 * kmq_producer_new. The DLQ topic's max.message.bytes must take the
 * largest letter: kmq_runtime_new asks the broker
 * (kmq__dlq_check_topic, bounded by kmq.dlq.check.timeout.ms) and
 * `kmqctl topics bootstrap` reports its drift. */
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

/* The DLQ producer's librdkafka handle (owned by dlq). */
struct rd_kafka_s *kmq__dlq_rk(const kmq_dlq_t *dlq);

/* Asks the broker for the DLQ topic's max.message.bytes, waiting at most
 * timeout_ms (+1 s for librdkafka to hand back its own timeout). KMQ_OK
 * when it takes every letter (>= kmq__dlq_max_bytes); KMQ_ERR_CONF_INVALID
 * when it is smaller, errstr saying both values and what to change;
 * otherwise the check could not be made (KMQ_ERR_NOT_FOUND: no such topic
 * yet; KMQ_ERR_TIMED_OUT, KMQ_ERR_KAFKA: no answer, not authorised) and
 * errstr says why. @locality the calling thread (lib/dlq_check.c) */
kmq_err_t kmq__dlq_check_topic(const kmq_dlq_t *dlq, int timeout_ms,
                               char *errstr, size_t errstr_size);

#endif
