/*
 * Dead-letter queue.
 *
 * A record that cannot be delivered or processed is written to the DLQ topic
 * with the same key (external_userid) and the same partitioner as the main
 * topic, so one user's dead letters land in one partition, in the order
 * kmq_dlq_send() was called for them. The runtime calls it from the user's
 * actor, one message at a time and waiting for each outcome, so a user's
 * dead letters are in offset order (processing failures, decode failures
 * and oversized records alike). A record without a key has no user: it is
 * dead-lettered at dispatch, and key-less letters have no order among
 * themselves (the partitioner spreads them). The value
 * is a JSON envelope (version 1):
 *   {"version":1, "original_topic", "original_partition", "original_offset"
 *    (null when unknown), "reason", "error", "kafka_error", "failed_at"
 *    (RFC 3339 UTC, ms), "source", "key" (UTF-8 text, null otherwise),
 *    "payload" (UTF-8 text) or "payload_base64"}
 * and the headers are the original ones plus dlq_timestamp (ms since epoch),
 * dlq_source and dlq_reason.
 *
 * Dead letters always fit. The limit is the DLQ producer's own librdkafka
 * message.max.bytes (producer.message.max.bytes, default 1000000): key,
 * value and headers of the DLQ record take at most that minus
 * KMQ_DLQ_RECORD_OVERHEAD. When the full envelope above would not fit, the
 * letter is a *truncated* one (kmq_dlq_letter_build):
 *   - "payload" (or "payload_base64") holds only a prefix of the original
 *     value: text cut on a UTF-8 character boundary, or the base64 of a byte
 *     prefix, as long as the whole letter fits (JSON escaping can make a
 *     byte take 6), possibly empty;
 *   - three fields follow it: "payload_truncated" (true when the prefix is
 *     shorter than the value), "payload_size" (bytes of the whole original
 *     value) and "payload_sha256" (lower-case hex SHA-256 of the whole
 *     original value), so that the original can be found and checked;
 *   - a key longer than KMQ_DLQ_KEY_MAX bytes is cut to that (on a character
 *     boundary when it is UTF-8), as the record key and in "key", and
 *     "key_truncated": true, "key_size", "key_sha256" say so;
 *   - original headers taking more than a quarter of message.max.bytes are
 *     not copied, and "headers_dropped": <count> says so.
 * An envelope that fits is byte for byte the full one, without these fields.
 * A truncated letter cannot be replayed (kmqctl replay skips it). With a
 * fallback hook, the full envelope is first offered to the hook (kafka_err
 * MSG_SIZE_TOO_LARGE) with a "msg_id" header (the original's, else
 * "kmq-dlq:<topic>:<partition>:<offset>", which kmq_fallback_hook keys its
 * row by); the DLQ gets the truncated letter either way, and when the hook
 * kept the whole record the letter carries the header
 * "fallback_message_id" = that msg_id, so that whoever reads the DLQ finds
 * the stored row (outcome DLQ, or FALLBACK when the DLQ then refuses the
 * letter: the record is kept all the same). So a poison record of any size ends as a dead letter, and its
 * offset finishes, as long as the DLQ topic's max.message.bytes is at least
 * the producer's message.max.bytes (Kafka's default, 1048588, is above
 * librdkafka's 1000000) and message.max.bytes leaves room for an envelope
 * without payload (its fields, KMQ_DLQ_KEY_MAX of key, the DLQ headers: a
 * few KiB); otherwise the record goes to the hook or is LOST as below.
 *
 * When the DLQ itself cannot take a record (its delivery fails or times out,
 * or the local queue stays full), the record goes to the fallback hook given
 * at creation. Nothing is dropped silently: every kmq_dlq_send() that returns
 * KMQ_OK ends in exactly one call of its done callback with the outcome
 * DLQ, FALLBACK or LOST (no hook, or the hook failed), and LOST is counted.
 *
 * Threads: kmq_dlq_send() may be called from any thread. The DLQ owns a
 * librdkafka producer and a thread that serves its delivery reports; done
 * callbacks and the fallback hook run on that thread, or on the sending
 * thread when the record could not even be queued or did not fit.
 */
#ifndef KMQ_DLQ_H
#define KMQ_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_dlq_s kmq_dlq_t;

/* What failed and where. Every pointer is borrowed for the duration of
 * kmq_dlq_send(): the DLQ copies what it keeps. */
typedef struct kmq_dlq_record_s {
  const char *original_topic;
  int32_t original_partition; /* -1 when unknown */
  int64_t original_offset;    /* -1 when unknown (e.g. never written) */
  const void *key;            /* external_userid; may be NULL */
  size_t key_len;
  const void *payload; /* the original value, any bytes */
  size_t payload_len;
  const rd_kafka_headers_t *headers; /* originals, copied; may be NULL */
  const char *reason; /* short machine-readable: "delivery_failed", ... */
  const char *error;  /* human-readable detail; may be NULL */
  rd_kafka_resp_err_t kafka_err; /* carried librdkafka error, or NO_ERROR */
  const char *source; /* "producer", "consumer", "processor" */
} kmq_dlq_record_t;

/* The record for a consumed message m: its topic, partition, offset, key,
 * value and headers, borrowed from m (valid while m is), and what failed:
 * reason, error (may be NULL) and source, borrowed too; kafka_err
 * NO_ERROR. Allocates nothing. @locality any thread */
kmq_dlq_record_t kmq_dlq_record_of(const rd_kafka_message_t *m,
                                   const char *reason, const char *error,
                                   const char *source);

/* What the fallback hook receives: the DLQ message exactly as it would have
 * been produced, so that a compensator can replay it verbatim; for a record
 * whose full envelope does not fit the DLQ (kafka_err MSG_SIZE_TOO_LARGE),
 * the full envelope with the whole key and headers. Borrowed for the
 * duration of the hook call. */
typedef struct kmq_fallback_record_s {
  const char *topic; /* the DLQ topic */
  const void *key;
  size_t key_len;
  const void *value; /* the JSON envelope */
  size_t value_len;
  const rd_kafka_headers_t *headers;
  rd_kafka_resp_err_t kafka_err; /* why the DLQ did not take it */
} kmq_fallback_record_t;

/* Persists a record the DLQ could not take. Returns KMQ_OK once the record
 * is durable; any error makes the record LOST (counted and logged). */
typedef kmq_err_t(kmq_fallback_cb)(const kmq_fallback_record_t *rec,
                                   void *opaque);

typedef enum {
  KMQ_DLQ_OUTCOME_DLQ,      /* written to the DLQ topic (acks=all) */
  KMQ_DLQ_OUTCOME_FALLBACK, /* the DLQ failed; the fallback hook stored it */
  KMQ_DLQ_OUTCOME_LOST,     /* DLQ and fallback failed: reported, counted */
} kmq_dlq_outcome_t;

/* Final fate of one record. `err` is KMQ_OK for DLQ, else what failed last. */
typedef void(kmq_dlq_done_cb)(kmq_dlq_outcome_t outcome, kmq_err_t err,
                              void *opaque);

typedef struct {
  int64_t sent;     /* records accepted by kmq_dlq_send */
  int64_t written;  /* outcome DLQ */
  int64_t fallback; /* outcome FALLBACK */
  int64_t lost;     /* outcome LOST */
} kmq_dlq_stats_t;

/* Creates a DLQ producer from conf (bootstrap.servers, kmq.dlq.topic or
 * kmq.topic + ".dlq", producer baselines). `fallback` may be NULL: then a
 * record the DLQ rejects is LOST with KMQ_ERR_NO_FALLBACK. Returns NULL with
 * errstr filled on a bad configuration. */
kmq_dlq_t *kmq_dlq_new(const kmq_conf_t *conf, kmq_fallback_cb *fallback,
                       void *fallback_opaque, char *errstr,
                       size_t errstr_size);

/* Flushes outstanding records (bounded by kmq.flush.timeout.ms; what is left
 * then is purged and goes to the fallback hook, or is LOST), stops the
 * thread, frees. Every record sent has its outcome when it returns: one
 * whose purge report librdkafka never delivered is reported LOST (with
 * KMQ_ERR_TIMED_OUT) after the client is gone. Returns within the bound
 * plus the time to run the purged records' callbacks (at most 2 s, plus the
 * fallback hook's own time). No-op on NULL. */
void kmq_dlq_destroy(kmq_dlq_t *dlq);

/* kmq_dlq_destroy() with timeout_ms instead of kmq.flush.timeout.ms (an
 * owner that shares one shutdown bound among several clients). */
void kmq_dlq_destroy_within(kmq_dlq_t *dlq, int timeout_ms);

/* Queues the dead letter of rec (kmq_dlq_letter_build() with the DLQ
 * producer's message.max.bytes). `done` (may be NULL) is called exactly once
 * with the final outcome when KMQ_OK is returned, and never otherwise. A
 * record too large for even a truncated letter goes to the fallback hook
 * (or is LOST with KMQ_ERR_TOO_LARGE).
 * Errors: KMQ_ERR_INVALID_ARG, KMQ_ERR_NOMEM. */
kmq_err_t kmq_dlq_send(kmq_dlq_t *dlq, const kmq_dlq_record_t *rec,
                       kmq_dlq_done_cb *done, void *opaque);

/* Waits up to timeout_ms for every queued record to reach its outcome.
 * Returns KMQ_ERR_TIMED_OUT if some are still outstanding. */
kmq_err_t kmq_dlq_flush(kmq_dlq_t *dlq, int timeout_ms);

/* The DLQ topic name; valid as long as the DLQ. */
const char *kmq_dlq_topic(const kmq_dlq_t *dlq);

void kmq_dlq_stats(const kmq_dlq_t *dlq, kmq_dlq_stats_t *out);

/* Encodes the full (never truncated) JSON envelope of rec into a new string
 * the caller frees with free(); now_ms is the failure time. NULL when out of
 * memory. Its size is unbounded: kmq_dlq_letter_build() is what the DLQ
 * sends. Exposed for tools and tests. */
char *kmq_dlq_envelope(const kmq_dlq_record_t *rec, int64_t now_ms,
                       size_t *len);

/* Bytes of message.max.bytes that a dead letter leaves free for what is not
 * its key, value or headers: librdkafka's per-record framing (at most 36
 * bytes in its own size check at produce time) and the 61-byte record batch
 * header that the broker also counts against the topic's max.message.bytes
 * when the letter travels alone, with room to spare. */
#define KMQ_DLQ_RECORD_OVERHEAD 512

/* Longest key a truncated dead letter carries, as record key and in "key".
 * A user id is a few dozen bytes; this only bounds garbage keys. */
#define KMQ_DLQ_KEY_MAX 4096

/* A dead letter as the DLQ produces it. */
typedef struct kmq_dlq_letter_s {
  const void *key; /* rec->key (borrowed from rec), possibly cut */
  size_t key_len;
  char *value; /* the JSON envelope, NUL-terminated; owned */
  size_t value_len;
  rd_kafka_headers_t *headers; /* owned: the original headers (unless
                                * dropped) + dlq_timestamp, dlq_source,
                                * dlq_reason */
  int truncated; /* 0: value is byte for byte kmq_dlq_envelope()'s; 1: the
                  * truncated envelope (dlq.h's header comment) */
} kmq_dlq_letter_t;

/* Builds the dead letter of rec for a producer whose message.max.bytes is
 * max_bytes: key_len + value_len + the serialized headers stay within
 * max_bytes - KMQ_DLQ_RECORD_OVERHEAD. The full envelope when it fits,
 * otherwise the truncated one; max_bytes SIZE_MAX always gives the full
 * letter (what a fallback hook is offered). now_ms is the failure time
 * (failed_at, dlq_timestamp).
 * On KMQ_OK *out is filled and the caller owns value and headers: release
 * them with kmq_dlq_letter_clear() (or take them, e.g. produce with
 * RD_KAFKA_MSG_F_FREE, and set the fields to NULL); out->key borrows
 * rec->key. On error *out is zeroed, nothing is allocated and errstr says
 * why: KMQ_ERR_INVALID_ARG (rec NULL), KMQ_ERR_NOMEM, KMQ_ERR_TOO_LARGE
 * (max_bytes cannot hold even an envelope without payload). Any thread;
 * allocates (a failure path). */
kmq_err_t kmq_dlq_letter_build(const kmq_dlq_record_t *rec, int64_t now_ms,
                               size_t max_bytes, kmq_dlq_letter_t *out,
                               char *errstr, size_t errstr_size);

/* Frees what out owns and zeroes it. No-op on NULL or an already cleared
 * letter. */
void kmq_dlq_letter_clear(kmq_dlq_letter_t *out);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_DLQ_H */
