/*
 * kmq error codes.
 *
 * Contract: every kmq function that can fail returns a kmq_err_t (KMQ_OK = 0,
 * errors are negative) or NULL plus an errstr buffer filled by the callee.
 * There is no global "last error": threads never share an error channel.
 * Where a failure comes from librdkafka, the rd_kafka_resp_err_t is carried
 * next to the kmq code (see kmq_delivery_t, kmq_dlq_record_t) instead of being
 * flattened into it. A function that returns an error never invokes the
 * callback it was given (libuv's rule).
 */
#ifndef KMQ_ERR_H
#define KMQ_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description) */
#define KMQ_ERR_LIST(X)                                                        \
  X(OK, 0, "Success")                                                          \
  X(INVALID_ARG, -1, "Invalid argument")                                       \
  X(NOMEM, -2, "Out of memory")                                                \
  X(CONF_UNKNOWN, -3, "Unknown configuration property")                        \
  X(CONF_INVALID, -4, "Invalid configuration value")                           \
  X(KAFKA, -5, "Kafka client error (see the carried rd_kafka_resp_err_t)")     \
  X(QUEUE_FULL, -6, "Queue full after bounded wait")                           \
  X(TIMED_OUT, -7, "Operation timed out")                                      \
  X(FATAL, -8, "Fatal producer error; the producer must be reset")             \
  X(GATE_WINDOW, -9, "Offset is beyond the commit gate window")                \
  X(GATE_STALE, -10, "Offset is below the gate start (already committable)")   \
  X(DUPLICATE, -11, "Already done")                                            \
  X(NO_FALLBACK, -12, "No fallback store configured; record not persisted")    \
  X(FALLBACK, -13, "Fallback store failed")                                    \
  X(STATE, -14, "Operation not valid in the current state")                    \
  X(BACKPRESSURE, -15, "Bounded capacity reached; retry later")                \
  X(NOT_FOUND, -16, "Not found")                                               \
  X(BAD_JSON, -17, "Malformed JSON")                                           \
  X(MISSING_USER, -18, "Missing or empty external_userid")                     \
  X(TOO_LARGE, -19, "Message exceeds the size limit")                          \
  X(BAD_FIELD, -20, "Missing or invalid field")                                \
  X(BAD_UTF8, -21, "Invalid UTF-8")                                            \
  X(PROCESSOR, -22, "Processor failed")                                        \
  X(BAD_SIGNATURE, -23, "Signature verification failed")                       \
  X(IO, -24, "I/O error")                                                      \
  X(SHUTDOWN, -25, "Shutting down")                                            \
  X(UNKNOWN_TYPE, -26, "Unknown message type")

typedef enum {
#define KMQ__ERR_ENUM(name, value, desc) KMQ_ERR_##name = value,
  KMQ_ERR_LIST(KMQ__ERR_ENUM)
#undef KMQ__ERR_ENUM
} kmq_err_t;

#define KMQ_OK KMQ_ERR_OK

/* Human-readable description. Returns a static string; never NULL. */
const char *kmq_err2str(kmq_err_t err);

/* Symbolic name without the prefix, e.g. "QUEUE_FULL". Static; never NULL. */
const char *kmq_err_name(kmq_err_t err);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_ERR_H */
