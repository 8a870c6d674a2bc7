/* The runtime's observability object and its public API
 * (runtime/metrics_int.h, include/kmq/runtime.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/consumer.h"
#include "lib/util.h"
#include "runtime/metrics_int.h"

static const char *const kmq__errt_names[KMQ_ERROR_TYPES] = {
    "unknown_topic", "all_brokers_down", "transport", "auth", "fatal",
    "other"};

static const char *const kmq__dlq_names[KMQ_DLQ_REASONS] = {
    "bad_json",         "missing_user",      "key_mismatch", "too_large",
    "bad_utf8",         "bad_field",         "no_processor",
    "processor_failed", "retries_exhausted", "other"};

const char *kmq_runtime_error_type(int i) {
  return i >= 0 && i < KMQ_ERROR_TYPES ? kmq__errt_names[i] : NULL;
}

const char *kmq_runtime_dlq_reason(int i) {
  return i >= 0 && i < KMQ_DLQ_REASONS ? kmq__dlq_names[i] : NULL;
}

kmq__obs_t *kmq__obs_new(const kmq_conf_t *conf) {
  kmq__obs_t *o = calloc(1, sizeof(*o));
  if (!o)
    return NULL;
  const kmq__conf_hooks_t *h = kmq__conf_hooks(conf);
  o->log = h->log;
  o->err_cb = h->err_cb;
  o->err_opaque = h->err_opaque;
  const char *l = kmq_conf_get(conf, "kmq.metrics.listen");
  if (l && *l && !(o->listen = strdup(l))) {
    free(o);
    return NULL;
  }
  o->interval_ms = kmq_conf_get_int(conf, "kmq.metrics.interval.ms");
  kmq__snap_init(&o->snap);
  pthread_mutex_init(&o->prod_lock, NULL);
  pthread_mutex_init(&o->store_lock, NULL);
  return o;
}

static const kmq__http_route_t kmq__routes[] = {
    {"/metrics", "text/plain; version=0.0.4; charset=utf-8",
     kmq__render_metrics},
    {"/stuck", "application/json", kmq__render_stuck},
};

int kmq__obs_start(kmq__obs_t *o, kmq_runtime_t *rt, kmq_consumer_t *c,
                   kmq_sched_t *sched, kmq_hist_t *lat, char *errstr,
                   size_t errstr_size) {
  o->rt = rt;
  o->consumer = c;
  o->sched = sched;
  o->lat = lat;
  if (!o->listen)
    return 0;
  o->http = kmq__http_start(o->listen, kmq__routes,
                            sizeof(kmq__routes) / sizeof(kmq__routes[0]), o,
                            &o->log, errstr, errstr_size);
  if (!o->http)
    return -1;
  kmq__log_to(&o->log, "INFO", "metrics", "serving /metrics and /stuck on "
              "%s (port %d)", o->listen, kmq__http_port(o->http));
  return 0;
}

void kmq__obs_stop(kmq__obs_t *o) {
  kmq__http_stop(o->http);
  o->http = NULL;
}

void kmq__obs_destroy(kmq__obs_t *o) {
  if (!o)
    return;
  kmq__obs_stop(o);
  kmq__snap_free(&o->snap);
  pthread_mutex_destroy(&o->prod_lock);
  pthread_mutex_destroy(&o->store_lock);
  free(o->listen);
  free(o);
}

static int kmq__errt(rd_kafka_resp_err_t err) {
  switch (err) {
  case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
  case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
  case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    return KMQ__ERRT_UNKNOWN_TOPIC;
  case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    return KMQ__ERRT_ALL_BROKERS_DOWN;
  case RD_KAFKA_RESP_ERR__TRANSPORT:
  case RD_KAFKA_RESP_ERR__RESOLVE:
  case RD_KAFKA_RESP_ERR__TIMED_OUT:
  case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    return KMQ__ERRT_TRANSPORT;
  case RD_KAFKA_RESP_ERR__AUTHENTICATION:
  case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
  case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    return KMQ__ERRT_AUTH;
  case RD_KAFKA_RESP_ERR__FATAL:
    return KMQ__ERRT_FATAL;
  default:
    return KMQ__ERRT_OTHER;
  }
}

void kmq__obs_on_error(rd_kafka_resp_err_t err, const char *reason,
                       void *opaque) {
  kmq__obs_t *o = opaque;
  int t = kmq__errt(err);
  atomic_fetch_add_explicit(&o->errors[t], 1, memory_order_relaxed);
  kmq_error_t e = {kmq__errt_names[t], err, t == KMQ__ERRT_FATAL, reason};
  char buf[512];
  if (e.fatal) {
    /* The error callback says only _FATAL: the original code and text are
     * librdkafka's to tell. */
    e.kafka_err = rd_kafka_fatal_error(kmq_consumer_rk(o->consumer), buf,
                                       sizeof(buf));
    if (e.kafka_err)
      e.reason = buf;
    kmq__log_to(&o->log, "ERROR", "runtime", "fatal consumer error %s: %s; "
                "kmq_runtime_run returns KMQ_ERR_FATAL",
                rd_kafka_err2name(e.kafka_err), e.reason);
    /* Relaxed: read by the same poll thread (kmq__obs_fatal) or, in
     * kmq_runtime_metrics, as a count. */
    atomic_store_explicit(&o->fatal, 1, memory_order_relaxed);
  }
  if (o->err_cb)
    o->err_cb(&e, o->err_opaque);
}

void kmq__obs_dlq(kmq__obs_t *o, const char *reason) {
  int i = 0;
  while (i < KMQ_DLQ_REASONS - 1 && strcmp(kmq__dlq_names[i], reason))
    i++;
  atomic_fetch_add_explicit(&o->dlq_reason[i], 1, memory_order_relaxed);
}

void kmq__obs_tick(kmq__obs_t *o, int64_t now_ms) {
  if (now_ms < o->next_ms)
    return;
  o->next_ms = now_ms + o->interval_ms;
  kmq__snap_sample(&o->snap, o->rt, o->consumer, o->sched, now_ms);
}

kmq_err_t kmq__obs_fatal(const kmq__obs_t *o) {
  return atomic_load_explicit(&o->fatal, memory_order_relaxed)
             ? KMQ_ERR_FATAL
             : KMQ_OK;
}

void kmq__obs_fill(const kmq__obs_t *o, kmq_runtime_metrics_t *out) {
  for (int i = 0; i < KMQ_ERROR_TYPES; i++)
    out->errors[i] = atomic_load_explicit(&o->errors[i], memory_order_relaxed);
  for (int i = 0; i < KMQ_DLQ_REASONS; i++)
    out->dlq_by_reason[i] =
        atomic_load_explicit(&o->dlq_reason[i], memory_order_relaxed);
}

size_t kmq_runtime_partitions(const kmq_runtime_t *rt,
                              kmq_runtime_partition_t *out, size_t max) {
  return kmq__snap_partitions(&kmq__runtime_obs(rt)->snap, out, max);
}

size_t kmq_runtime_top_mailboxes(const kmq_runtime_t *rt,
                                 kmq_runtime_mailbox_t *out, size_t max) {
  return kmq__snap_top(&kmq__runtime_obs(rt)->snap, out, max);
}

int kmq_runtime_metrics_port(const kmq_runtime_t *rt) {
  return kmq__http_port(kmq__runtime_obs(rt)->http);
}

void kmq_runtime_set_producer(kmq_runtime_t *rt, kmq_producer_t *p) {
  kmq__obs_t *o = kmq__runtime_obs(rt);
  pthread_mutex_lock(&o->store_lock);
  pthread_mutex_lock(&o->prod_lock);
  o->producer = p;
  o->store_at_ms = 0; /* no cached stats of a store that changed */
  pthread_mutex_unlock(&o->prod_lock);
  pthread_mutex_unlock(&o->store_lock);
}
