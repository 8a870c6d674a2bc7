/*
 * kmq configuration.
 *
 * A kmq_conf_t is a bag of string properties owned by the application. Three
 * namespaces live in it:
 *   - "kmq.*"            kmq's own settings, checked against a table of known
 *                        keys with their types and ranges;
 *   - "producer.<key>" / "consumer.<key>"
 *                        a librdkafka property for one client type only;
 *   - "<key>"            a librdkafka property for every client kmq creates.
 * librdkafka keys are validated on set by librdkafka itself, so an unknown key
 * or a bad value is an error at the call that introduced it, never ignored.
 * Clients start from kmq's baselines (acks=all, idempotence, cooperative-sticky,
 * manual offset store, ...), then bare keys, then the client-specific keys.
 *
 * Secrets: a property whose name contains "password", "secret", "token" or
 * "aes_key" (any case; sasl.password, ssl.key.password,
 * sasl.oauthbearer.client.secret, and any kmq key named that way later), and
 * ssl.key.pem and sasl.oauthbearer.config, holds a secret. Its value never
 * appears in a text kmq makes: kmq_conf_dump(), the errors of kmq_conf_set(),
 * kmq_conf_build_rdkafka() and of every kmq_*_new() that builds a client,
 * kmq's log lines and librdkafka's log lines for the clients kmq builds
 * show "[redacted]" instead. kmq_conf_get() still returns it: it is the
 * application's.
 *
 * Threads: a conf is not synchronised. Fill it on one thread, then hand it to
 * constructors, which copy what they need: the conf may be destroyed or reused
 * after kmq_*_new() returns.
 */
#ifndef KMQ_CONF_H
#define KMQ_CONF_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_conf_s kmq_conf_t;

typedef enum {
  KMQ_CLIENT_PRODUCER,
  KMQ_CLIENT_CONSUMER,
} kmq_client_type_t;

/* New empty configuration (baselines are applied when a client is built).
 * Returns NULL only when out of memory. Destroy with kmq_conf_destroy(). */
kmq_conf_t *kmq_conf_new(void);

/* Deep copy. Returns NULL when out of memory. */
kmq_conf_t *kmq_conf_dup(const kmq_conf_t *conf);

/* No-op on NULL. */
void kmq_conf_destroy(kmq_conf_t *conf);

/* Sets (or replaces) a property; name and value are copied.
 * Returns KMQ_ERR_CONF_UNKNOWN for a key neither kmq nor librdkafka knows,
 * KMQ_ERR_CONF_INVALID for a value out of range or of the wrong type, with the
 * reason in errstr (a secret's value redacted). On error the conf is
 * unchanged. */
kmq_err_t kmq_conf_set(kmq_conf_t *conf, const char *name, const char *value,
                       char *errstr, size_t errstr_size);

/* Value of a property as set, or NULL. For "kmq.*" keys an unset property
 * yields its documented default. The pointer is valid until the property is
 * set again or the conf is destroyed. */
const char *kmq_conf_get(const kmq_conf_t *conf, const char *name);

/* Typed read of a "kmq.*" property (its default when unset). */
int64_t kmq_conf_get_int(const kmq_conf_t *conf, const char *name);

/* Log hook: every log line of kmq and of the librdkafka clients kmq builds
 * from this conf (consumer, DLQ producer, kmq_producer: librdkafka's
 * log_cb; the runtime, dual-write, fallback store, compensator and WeCom
 * puller built from it) goes here instead of stderr. (The admin tool's
 * short-lived clients keep librdkafka's default logger; the WeCom callback
 * endpoint has its own hook in its options.) level is syslog's (3 error,
 * 4 warning, 6 info, 7 debug), facility kmq's module ("consumer",
 * "committer", "runtime", "metrics", "compensator", ...) or librdkafka's
 * facility ("FAIL", "CGRPOP", ...), message one line without a newline.
 * Called from any thread (librdkafka's own threads included),
 * concurrently: it must be thread-safe and must not block for long nor
 * call back into kmq. Secrets never reach it: kmq redacts them
 * (kmq_conf_is_secret) in its own lines and in librdkafka's. */
typedef void(kmq_log_cb)(int level, const char *facility, const char *message,
                         void *opaque);

/* What went wrong, for the error hook. Every pointer is valid during the
 * call only. */
typedef struct {
  /* "unknown_topic" (the topic or partition does not exist),
   * "all_brokers_down", "transport" (a broker connection failed or timed
   * out), "auth" (authentication or authorization), "fatal" (librdkafka
   * raised a fatal error: the client cannot continue), "other". The same
   * word labels kmq_errors_total{type=...}. */
  const char *type;
  rd_kafka_resp_err_t kafka_err; /* librdkafka's code (the original one for
                                    a fatal error) */
  int fatal;                     /* 1: the runtime stops (kmq_runtime_run
                                    returns KMQ_ERR_FATAL) */
  const char *reason;            /* librdkafka's text */
} kmq_error_t;

/* Error hook. @locality the runtime's poll thread (kmq_runtime_run or
 * kmq_runtime_poll), so it must not block; it must not call
 * kmq_runtime_destroy. */
typedef void(kmq_error_cb)(const kmq_error_t *err, void *opaque);

/* Sets (cb NULL: clears) the log and error hooks. They travel with the conf
 * (kmq_conf_dup copies them) into every client built from it afterwards;
 * opaque is borrowed and must outlive those clients. Without a log hook
 * logs go to stderr as "%KMQ|LEVEL|facility: message" (and librdkafka's
 * own default logger); without an error hook errors are still logged and
 * counted. */
void kmq_conf_set_log_cb(kmq_conf_t *conf, kmq_log_cb *cb, void *opaque);
void kmq_conf_set_error_cb(kmq_conf_t *conf, kmq_error_cb *cb, void *opaque);

/* Builds a librdkafka configuration for a client of the given type: kmq's
 * baseline, then bare librdkafka keys, then "producer."/"consumer." keys.
 * Its log callback is kmq's: librdkafka's format on stderr with secrets
 * redacted (replace it with rd_kafka_conf_set_log_cb() to log elsewhere; the
 * texts librdkafka passes it are not redacted). Returns a new
 * rd_kafka_conf_t the caller owns (pass it to rd_kafka_new or
 * rd_kafka_conf_destroy it), or NULL with errstr filled. */
rd_kafka_conf_t *kmq_conf_build_rdkafka(const kmq_conf_t *conf,
                                        kmq_client_type_t type, char *errstr,
                                        size_t errstr_size);

/* Replaces, in the NUL-terminated text buf of size bytes, the value of every
 * secret property set in conf (and each word of it of 4 characters or more)
 * with "[redacted]"; what no longer fits is cut. For the texts kmq does not
 * make: e.g. rd_kafka_new()'s error for a configuration from
 * kmq_conf_build_rdkafka(). */
void kmq_conf_redact(const kmq_conf_t *conf, char *buf, size_t buf_size);

/* Calls cb for every kmq.* key with its current (or default) value and its
 * description, in table order, then for every other property the
 * application set, in the order set: for --help output and startup logs.
 * A secret's value is given as "[redacted]" (an unset one as ""). */
void kmq_conf_dump(const kmq_conf_t *conf,
                   void (*cb)(const char *name, const char *value,
                              const char *desc, void *opaque),
                   void *opaque);

/* 1 when name (bare, or with a "producer."/"consumer." prefix) holds a
 * secret: any name containing password, secret, token or aes_key
 * (case-insensitive), ssl.key.pem, sasl.oauthbearer.config. kmq never
 * prints such a value (kmq_conf_dump, errors, logs); tools print a
 * placeholder instead. */
int kmq_conf_is_secret(const char *name);

/*
 * Topic profiles: kmq.topic.* settings (partitions, replication factor,
 * min.insync.replicas, retention, compression, max.message.bytes) and
 * kmq.dlq.retention.ms, which `kmqctl topics bootstrap` creates topics with
 * and checks them against. Built in:
 *   development (dev):  4 partitions, RF 1, min.insync.replicas 1
 *   production (prod): 12 partitions, RF 3, min.insync.replicas 2
 */

/* The canonical profile name for a name or alias ("dev" -> "development"),
 * NULL when it is not a built-in profile. Static string. */
const char *kmq_conf_profile_name(const char *profile);

/* Sets the built-in profile's kmq.topic.* keys. KMQ_ERR_NOT_FOUND with
 * errstr filled for an unknown profile (nothing changed). */
kmq_err_t kmq_conf_set_profile(kmq_conf_t *conf, const char *profile,
                               char *errstr, size_t errstr_size);

/* Reads a YAML configuration file (config/kafka.yaml shows the shape) into
 * conf:
 *   kafka:    {<librdkafka key>: value, ...}   bare keys (every client)
 *   producer: {...}  consumer: {...}           producer.<key>, consumer.<key>
 *   kmq:      {topic: wecom-kf, ...}           kmq.<key>
 *   profile:  development                      the default profile
 *   profiles: {<name>: {topic: {...}, dlq: {...}, kafka: ..., producer: ...,
 *                       consumer: ..., kmq: ...}}
 * Nested maps are joined with dots (ssl: {ca: {location: x}} is
 * ssl.ca.location). Every scalar value may hold ${VAR} (the environment
 * variable, an error when unset) or ${VAR:default}; "$$" is a literal "$".
 * The profile applied is `profile` (NULL: the file's "profile" key; none
 * when that is absent too): first the built-in one of that name if there is
 * one, then the file's section of that name over it; a name neither built
 * in nor in the file is an error. Top-level keys are set first, the
 * profile's after them, so a profile overrides.
 * Every key goes through kmq_conf_set: an unknown key or a bad value is an
 * error "<path>:<line>:<column>: <key>: <reason>" (the value itself is not
 * repeated for secrets). On error conf may hold the keys set before the bad
 * one: discard it. Errors: KMQ_ERR_IO (cannot open or read), KMQ_ERR_BAD_FIELD
 * (YAML syntax or shape, unset variable, unknown profile),
 * KMQ_ERR_CONF_UNKNOWN / KMQ_ERR_CONF_INVALID (kmq_conf_set's). */
kmq_err_t kmq_conf_load_file(kmq_conf_t *conf, const char *path,
                             const char *profile, char *errstr,
                             size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_CONF_H */
