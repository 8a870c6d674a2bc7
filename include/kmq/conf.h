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
 * sasl.oauthbearer.client.secret, and kmq keys such as kmq.wecom.token), and
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

#ifdef __cplusplus
}
#endif
#endif /* KMQ_CONF_H */
