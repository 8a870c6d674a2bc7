/*
 * Logging and error hooks (kmq_conf_set_log_cb, kmq_conf_set_error_cb):
 * internal plumbing. A conf carries the hooks; each client copies them at
 * creation into a kmq__log_sink_t it owns, so that its log lines (kmq's and
 * librdkafka's) reach the application's callback, or stderr without one.
 * A sink is immutable after its owner's constructor: any thread may log
 * through it.
 */
#ifndef KMQ_LIB_LOG_H
#define KMQ_LIB_LOG_H

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"

typedef struct {
  kmq_log_cb *cb; /* NULL: stderr */
  void *opaque;
} kmq__log_sink_t;

typedef struct {
  kmq__log_sink_t log;
  kmq_error_cb *err_cb;
  void *err_opaque;
} kmq__conf_hooks_t;

/* The hooks set on conf (never NULL; fields NULL when unset). */
const kmq__conf_hooks_t *kmq__conf_hooks(const kmq_conf_t *conf);

/* Logs one line through sink (NULL or without a callback: stderr, as
 * kmq__log does). level: "ERROR", "WARN", "INFO" or "DEBUG". Formats into
 * a stack buffer (1 KiB, longer lines are cut): no allocation. Any thread. */
void kmq__log_to(const kmq__log_sink_t *sink, const char *level,
                 const char *who, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A librdkafka log line for sink (from a client's log_cb trampoline, which
 * finds its sink through rd_kafka_opaque). Any thread. */
void kmq__log_rdk(const kmq__log_sink_t *sink, int level, const char *fac,
                  const char *buf);

/* kmq__log_rdk() of librdkafka's own line about client rk, with rk's
 * secrets redacted first (lib/redact.h). Any thread. */
void kmq__log_rdk_rk(const kmq__log_sink_t *sink, const rd_kafka_t *rk,
                     int level, const char *fac, const char *buf);

#endif
