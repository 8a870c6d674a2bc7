/*
 * Secrets never leave kmq in a text (internal; kmq__ prefix).
 *
 * A property holds a secret when kmq__conf_is_secret() says so: by its name
 * (password, secret, token, aes_key anywhere in it, so that a new key such as
 * kmq.wecom.token or kmq.wecom.aes_key is covered the day it is added) or by
 * a short list of librdkafka keys whose names do not say it (ssl.key.pem,
 * sasl.oauthbearer.config). Its value is replaced by "[redacted]":
 *   - in kmq_conf_dump() and in kmq_conf_set() / kmq_conf_build_rdkafka()
 *     errors, which would otherwise quote it (conf.c);
 *   - in every text librdkafka writes about a client kmq built, since
 *     librdkafka quotes values back (a bad sasl.oauthbearer.config is logged
 *     from "beginning at: <the rest of it>"): its errors when the client is
 *     created (kmq__rdk_new), its log lines (kmq__rdk_log, installed by
 *     kmq_conf_build_rdkafka; kmq__log_rdk_rk in lib/log.h for a client
 *     with the conf's log hook) and the error reasons kmq logs or keeps
 *     (kmq__rdk_conf_redact before kmq__log_to).
 * kmq_conf_redact() (conf.h) does the same for an application's own texts.
 * The values are looked up where the text is made, in the kmq_conf_t or in
 * the client's own rd_kafka_conf_t: no copy of a secret is kept for this.
 * A value is redacted whole, and so is each word of it of 4 characters or
 * more (librdkafka quotes the part of a multi-word value it stopped at).
 */
#ifndef KMQ_LIB_REDACT_H
#define KMQ_LIB_REDACT_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"

#define KMQ__REDACTED "[redacted]"

/* 1 when the property (kmq, librdkafka, with or without a "producer." or
 * "consumer." prefix) holds a secret. Case-insensitive. */
int kmq__conf_is_secret(const char *name);

/* Replaces, in the NUL-terminated text buf of size bytes, every occurrence
 * of value and of each of its words of 4 characters or more with
 * KMQ__REDACTED; what no longer fits in size is cut. No-op for an empty or
 * NULL value. */
void kmq__redact(char *buf, size_t size, const char *value);

/* kmq__redact() with every secret property of a librdkafka configuration,
 * e.g. rd_kafka_conf(rk) of a live client. */
void kmq__rdk_conf_redact(const rd_kafka_conf_t *rc, char *buf, size_t size);

/* rd_kafka_new() whose errstr is redacted with rc's secrets. As with
 * rd_kafka_new(), rc belongs to the client on success and to the caller on
 * failure. */
rd_kafka_t *kmq__rdk_new(rd_kafka_type_t type, rd_kafka_conf_t *rc,
                         char *errstr, size_t errstr_size);

/* librdkafka's log callback for every client kmq builds: librdkafka's own
 * format on stderr ("%level|sec.ms|fac|name| text"), redacted. @locality
 * any librdkafka thread */
void kmq__rdk_log(const rd_kafka_t *rk, int level, const char *fac,
                  const char *buf);


#endif
