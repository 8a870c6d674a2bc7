/*
 * Dead-letter queue.
 *
 * A record that cannot be delivered or processed is written to the DLQ topic
 * with the same key (external_userid) and the same partitioner as the main
 * topic, so one user's dead letters stay ordered in one partition. The value
 * is a JSON envelope (version 1):
 *   {"version":1, "original_topic", "original_partition", "original_offset"
 *    (null when unknown), "reason", "error", "kafka_error", "failed_at"
 *    (RFC 3339 UTC, ms), "source", "payload" (UTF-8 text) or "payload_base64"}
 * and the headers are the original ones plus dlq_timestamp (ms since epoch),
 * dlq_source and dlq_reason.
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
 * thread when the record could not even be queued.
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

/* What the fallback hook receives: the DLQ message exactly as it would have
 * been produced, so that a compensator can replay it verbatim. Borrowed for
 * the duration of the hook call. */
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
 * then goes to the fallback hook), stops the thread, frees. No-op on NULL. */
void kmq_dlq_destroy(kmq_dlq_t *dlq);

/* Queues a dead letter. `done` (may be NULL) is called exactly once with the
 * final outcome when KMQ_OK is returned, and never otherwise.
 * Errors: KMQ_ERR_INVALID_ARG, KMQ_ERR_NOMEM. */
kmq_err_t kmq_dlq_send(kmq_dlq_t *dlq, const kmq_dlq_record_t *rec,
                       kmq_dlq_done_cb *done, void *opaque);

/* Waits up to timeout_ms for every queued record to reach its outcome.
 * Returns KMQ_ERR_TIMED_OUT if some are still outstanding. */
kmq_err_t kmq_dlq_flush(kmq_dlq_t *dlq, int timeout_ms);

/* The DLQ topic name; valid as long as the DLQ. */
const char *kmq_dlq_topic(const kmq_dlq_t *dlq);

void kmq_dlq_stats(const kmq_dlq_t *dlq, kmq_dlq_stats_t *out);

/* Encodes the JSON envelope of rec into a new string the caller frees with
 * free(); now_ms is the failure time. NULL when out of memory. Exposed for
 * tools (replay) and tests. */
char *kmq_dlq_envelope(const kmq_dlq_record_t *rec, int64_t now_ms,
                       size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_DLQ_H */
