/* Producer: idempotent librdkafka producer, DLQ on failed delivery, reset
 * after a fatal error. */
#include "kmq/producer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/hist.h"
#include "lib/limits.h"
#include "lib/log.h"
#include "lib/redact.h"
#include "lib/producer_store.h"
#include "lib/util.h"

struct kmq_producer_s {
  kmq_conf_t *conf; /* copy, to rebuild the instance after a fatal error */
  /* rk is replaced only under the write lock; senders hold the read lock so
   * the instance they produce to cannot be destroyed under them. */
  pthread_rwlock_t lock;
  rd_kafka_t *rk;
  kmq__poller_t poller;
  kmq_dlq_t *dlq;
  kmq__pstore_t *store; /* fallback store; NULL when not configured */
  char *topic; /* kmq.topic; may be NULL */
  kmq_delivery_cb *dr_cb;
  void *dr_opaque;
  int64_t queue_full_ms, flush_ms;
  /* Set by the error callback on the poll thread, read by senders. Release/
   * acquire so that fatal_reason, written before, is visible to the reader. */
  atomic_int fatal;
  pthread_mutex_t fatal_lock;
  char fatal_reason[512];
  int has_fatal_reason;
  /* Relaxed counters: metrics only, no data published through them, except
   * outstanding (see kmq__finish). */
  atomic_llong produced, delivered, failed, dlq_n, fallback, lost, queue_full,
      fatal_resets, outstanding;
  /* Send to delivery report of delivered messages, ms (metrics). */
  kmq_hist_t *lat;
  kmq__log_sink_t log; /* the conf's log hook: kmq's and librdkafka's */
};

/* librdkafka's log lines, from any of its threads, to the conf's hook,
 * redacted. */
static void kmq__producer_rdk_log(const rd_kafka_t *rk, int level,
                                  const char *fac, const char *buf) {
  kmq_producer_t *p = rd_kafka_opaque(rk);
  kmq__log_rdk_rk(&p->log, rk, level, fac, buf);
}

/* A failed message on its way through the DLQ, allocated on failure only. */
typedef struct {
  kmq_producer_t *p;
  void *opaque;
  rd_kafka_resp_err_t kafka_err;
  kmq__pstore_msg_t *copy; /* for the store if the DLQ fails; may be NULL */
} kmq__failed_t;

static void kmq__finish(kmq_producer_t *p, kmq_delivery_status_t status,
                        rd_kafka_resp_err_t kerr, kmq_err_t err, int32_t part,
                        int64_t off, void *opaque) {
  atomic_llong *c = status == KMQ_DELIVERY_DELIVERED ? &p->delivered
                    : status == KMQ_DELIVERY_DLQ     ? &p->dlq_n
                    : status == KMQ_DELIVERY_FALLBACK ? &p->fallback
                                                      : &p->lost;
  atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
  if (p->dr_cb) {
    kmq_delivery_t d = {status, kerr, err, part, off, opaque};
    p->dr_cb(&d, p->dr_opaque);
  }
  /* Release: the report's effects precede a flusher's acquire of 0. */
  atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_release);
}

/* @locality DLQ poll thread, or the thread that failed to queue to the DLQ */
static void kmq__dlq_done(kmq_dlq_outcome_t outcome, kmq_err_t err,
                          void *opaque) {
  kmq__failed_t *f = opaque;
  kmq_delivery_status_t st = outcome == KMQ_DLQ_OUTCOME_DLQ ? KMQ_DELIVERY_DLQ
                             : outcome == KMQ_DLQ_OUTCOME_FALLBACK
                                 ? KMQ_DELIVERY_FALLBACK
                                 : KMQ_DELIVERY_LOST;
  if (f->copy) {
    /* The third level: the original message, replayable to its topic. */
    if (st == KMQ_DELIVERY_LOST) {
      kmq_err_t serr = kmq__pstore_put_failed(f->p->store, f->copy);
      if (!serr)
        st = KMQ_DELIVERY_FALLBACK, err = KMQ_OK;
      else
        err = serr;
    }
    kmq__pstore_failed_done(f->p->store, f->copy);
    kmq__pstore_msg_free(f->copy);
  }
  kmq__finish(f->p, st, f->kafka_err, err, -1, -1, f->opaque);
  free(f);
}

/* @locality producer poll thread (or a thread flushing after it stopped) */
static void kmq__dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  kmq_producer_t *p = opaque;
  if (!m->err) {
    /* The message's timestamp is librdkafka's wall clock at produce time:
     * no per-message state needed for the latency. */
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    if (ts > 0)
      kmq_hist_record(p->lat, kmq__wall_ms() - ts);
    kmq__finish(p, KMQ_DELIVERY_DELIVERED, 0, KMQ_OK, m->partition, m->offset,
                m->_private);
    return;
  }
  atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_message_headers(m, &hdrs);
  kmq_dlq_record_t rec = {
      .original_topic = rd_kafka_topic_name(m->rkt),
      .original_partition = m->partition,
      .original_offset = -1,
      .key = m->key,
      .key_len = m->key_len,
      .payload = m->payload,
      .payload_len = m->len,
      .headers = hdrs,
      .reason = "delivery_failed",
      .error = rd_kafka_err2str(m->err),
      .kafka_err = m->err,
      .source = "producer",
  };
  kmq__failed_t *f = malloc(sizeof(*f));
  kmq_err_t err = KMQ_ERR_NOMEM;
  if (f) {
    *f = (kmq__failed_t){p, m->_private, m->err, NULL};
    if (p->store)
      f->copy = kmq__pstore_failed(p->store, m); /* the user turns sticky */
    err = kmq_dlq_send(p->dlq, &rec, kmq__dlq_done, f);
  }
  if (err && f && f->copy && !kmq__pstore_put_failed(p->store, f->copy)) {
    kmq__pstore_failed_done(p->store, f->copy);
    kmq__pstore_msg_free(f->copy);
    free(f);
    kmq__finish(p, KMQ_DELIVERY_FALLBACK, m->err, KMQ_OK, -1, -1,
                m->_private);
    return;
  }
  if (err) {
    if (f && f->copy) {
      kmq__pstore_failed_done(p->store, f->copy);
      kmq__pstore_msg_free(f->copy);
    }
    free(f);
    kmq__log_to(&p->log, "ERROR", "producer",
                "message LOST: cannot queue to DLQ: %s", kmq_err2str(err));
    kmq__finish(p, KMQ_DELIVERY_LOST, m->err, err, -1, -1, m->_private);
  }
}

static void kmq__error_cb(rd_kafka_t *rk, int err, const char *reason,
                          void *opaque) {
  kmq_producer_t *p = opaque;
  if (err != RD_KAFKA_RESP_ERR__FATAL) {
    /* librdkafka recovers from these by itself (broker down, ...). */
    char r[512];
    snprintf(r, sizeof(r), "%s", reason ? reason : "");
    kmq__rdk_conf_redact(rd_kafka_conf(rk), r, sizeof(r));
    kmq__log_to(&p->log, "WARN", "producer", "%s: %s",
                rd_kafka_err2name((rd_kafka_resp_err_t)err), r);
    return;
  }
  char buf[400];
  rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
  /* Kept for kmq_producer_last_fatal() and logged: redacted once here. */
  kmq__rdk_conf_redact(rd_kafka_conf(rk), buf, sizeof(buf));
  pthread_mutex_lock(&p->fatal_lock);
  snprintf(p->fatal_reason, sizeof(p->fatal_reason), "%s: %s",
           rd_kafka_err2name(orig), buf);
  p->has_fatal_reason = 1;
  pthread_mutex_unlock(&p->fatal_lock);
  kmq__log_to(&p->log, "ERROR", "producer",
              "fatal error %s: %s; the instance will be replaced on the next "
              "send", rd_kafka_err2name(orig), buf);
  atomic_store_explicit(&p->fatal, 1, memory_order_release);
}

static rd_kafka_t *kmq__new_rk(kmq_producer_t *p, char *errstr,
                               size_t errstr_size) {
  rd_kafka_conf_t *rc = kmq_conf_build_rdkafka(p->conf, KMQ_CLIENT_PRODUCER,
                                               errstr, errstr_size);
  if (!rc)
    return NULL;
  rd_kafka_conf_set_opaque(rc, p);
  rd_kafka_conf_set_dr_msg_cb(rc, kmq__dr);
  rd_kafka_conf_set_error_cb(rc, kmq__error_cb);
  if (p->log.cb)
    rd_kafka_conf_set_log_cb(rc, kmq__producer_rdk_log);
  rd_kafka_t *rk = kmq__rdk_new(RD_KAFKA_PRODUCER, rc, errstr, errstr_size);
  if (!rk)
    rd_kafka_conf_destroy(rc);
  return rk;
}

kmq_producer_t *kmq_producer_new(const kmq_conf_t *conf, kmq_delivery_cb *dr_cb,
                                 void *dr_opaque, kmq_fallback_cb *fallback,
                                 void *fallback_opaque, char *errstr,
                                 size_t errstr_size) {
  kmq_producer_t *p = calloc(1, sizeof(*p));
  if (!p) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  p->conf = kmq_conf_dup(conf);
  if (!p->conf) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_conf;
  }
  const char *t = kmq_conf_get(conf, "kmq.topic");
  if (t && !(p->topic = strdup(t))) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_topic;
  }
  p->dr_cb = dr_cb;
  p->dr_opaque = dr_opaque;
  p->log = kmq__conf_hooks(conf)->log;
  p->queue_full_ms = kmq_conf_get_int(conf, "kmq.queue.full.timeout.ms");
  p->flush_ms = kmq_conf_get_int(conf, "kmq.flush.timeout.ms");
  pthread_rwlock_init(&p->lock, NULL);
  pthread_mutex_init(&p->fatal_lock, NULL);
  if (!(p->lat = kmq_hist_new())) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_lat;
  }
  if (kmq__pstore_new(conf, &p->store, errstr, errstr_size))
    goto fail_lat;
  p->dlq = kmq_dlq_new(conf, fallback, fallback_opaque, errstr, errstr_size);
  if (!p->dlq)
    goto fail_dlq;
  p->rk = kmq__new_rk(p, errstr, errstr_size);
  if (!p->rk)
    goto fail_rk;
  /* Both clients read producer.*; the smaller limit is the one that
   * binds (lib/limits.h). */
  char mmb[32];
  size_t mmb_size = sizeof(mmb), pmax = kmq__dlq_max_bytes(p->dlq);
  if (rd_kafka_conf_get(rd_kafka_conf(p->rk), "message.max.bytes", mmb,
                        &mmb_size) == RD_KAFKA_CONF_OK &&
      strtoull(mmb, NULL, 10) < pmax)
    pmax = strtoull(mmb, NULL, 10);
  if (kmq__limits_check((size_t)kmq_conf_get_int(conf, "kmq.msg.max.bytes"),
                        pmax, errstr, errstr_size))
    goto fail_thread;
  if (kmq__poller_start(&p->poller, p->rk)) {
    snprintf(errstr, errstr_size, "cannot start the producer poll thread");
    goto fail_thread;
  }
  return p;

fail_thread:
  rd_kafka_destroy(p->rk);
fail_rk:
  kmq_dlq_destroy(p->dlq);
fail_dlq:
  kmq__pstore_destroy(p->store);
fail_lat:
  kmq_hist_destroy(p->lat);
  pthread_mutex_destroy(&p->fatal_lock);
  pthread_rwlock_destroy(&p->lock);
  free(p->topic);
fail_topic:
  kmq_conf_destroy(p->conf);
fail_conf:
  free(p);
  return NULL;
}

/* Retires an instance: whatever it still holds fails through the delivery
 * report path into the DLQ, so nothing is dropped.
 * @locks_required write lock, or sole ownership (destroy) */
static void kmq__retire_rk(kmq_producer_t *p, int flush_ms) {
  kmq__poller_stop(&p->poller);
  kmq__flush_then_purge(p->rk, kmq__mono_ms() + flush_ms);
  rd_kafka_destroy(p->rk);
  p->rk = NULL;
}

/* @locks_required write lock */
static kmq_err_t kmq__reset(kmq_producer_t *p) {
  if (!atomic_load_explicit(&p->fatal, memory_order_acquire))
    return KMQ_OK; /* another sender already replaced it */
  /* A fatal instance cannot deliver anything: don't wait for it. */
  kmq__retire_rk(p, 0);
  char errstr[512];
  p->rk = kmq__new_rk(p, errstr, sizeof(errstr));
  if (!p->rk || kmq__poller_start(&p->poller, p->rk)) {
    kmq__log_to(&p->log, "ERROR", "producer",
                "cannot replace the producer: %s", errstr);
    if (p->rk)
      rd_kafka_destroy(p->rk);
    p->rk = NULL;
    return KMQ_ERR_FATAL;
  }
  atomic_fetch_add_explicit(&p->fatal_resets, 1, memory_order_relaxed);
  atomic_store_explicit(&p->fatal, 0, memory_order_release);
  return KMQ_OK;
}

kmq_err_t kmq_producer_send(kmq_producer_t *p, const kmq_produce_msg_t *msg,
                            rd_kafka_resp_err_t *kafka_err) {
  if (kafka_err)
    *kafka_err = RD_KAFKA_RESP_ERR_NO_ERROR;
  const char *topic = msg && msg->topic ? msg->topic : p ? p->topic : NULL;
  if (!p || !msg || !topic || !msg->key || !msg->key_len)
    return KMQ_ERR_INVALID_ARG;

  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(3);
  if (msg->msg_type)
    rd_kafka_header_add(hdrs, "msg_type", -1, msg->msg_type, -1);
  if (msg->msg_id)
    rd_kafka_header_add(hdrs, "msg_id", -1, msg->msg_id, -1);
  rd_kafka_header_add(hdrs, "user_id", -1, msg->key, (ssize_t)msg->key_len);

  /* A user with messages in the store joins them there, behind the older
   * ones (producer_store.h): reported FALLBACK at once, on this thread. */
  kmq_err_t serr;
  if (kmq__pstore_send(p->store, topic, msg, hdrs, &serr)) {
    rd_kafka_headers_destroy(hdrs);
    if (serr)
      return KMQ_ERR_FALLBACK; /* nothing stored, no report */
    atomic_fetch_add_explicit(&p->produced, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
    kmq__finish(p, KMQ_DELIVERY_FALLBACK, RD_KAFKA_RESP_ERR_NO_ERROR, KMQ_OK,
                -1, -1, msg->opaque);
    return KMQ_OK;
  }

  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__FATAL;
  /* Two attempts: librdkafka can refuse with ERR__FATAL before our error
   * callback has run; then this thread flags and replaces the instance. */
  for (int attempt = 0; attempt < 2 && err == RD_KAFKA_RESP_ERR__FATAL;
       attempt++) {
    if (atomic_load_explicit(&p->fatal, memory_order_acquire)) {
      pthread_rwlock_wrlock(&p->lock);
      kmq_err_t rerr = kmq__reset(p);
      pthread_rwlock_unlock(&p->lock);
      if (rerr) {
        rd_kafka_headers_destroy(hdrs);
        return rerr;
      }
    }
    pthread_rwlock_rdlock(&p->lock);
    if (!p->rk) {
      pthread_rwlock_unlock(&p->lock);
      rd_kafka_headers_destroy(hdrs);
      return KMQ_ERR_FATAL;
    }
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
    int64_t deadline = -1; /* read the clock only when the queue is full */
    for (;;) {
      err = rd_kafka_producev(
          p->rk, RD_KAFKA_V_TOPIC(topic),
          RD_KAFKA_V_KEY(msg->key, msg->key_len),
          RD_KAFKA_V_VALUE((void *)msg->value, msg->value_len),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
          RD_KAFKA_V_OPAQUE(msg->opaque), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || p->queue_full_ms == 0)
        break; /* 0: never wait (dual-write) */
      if (deadline < 0)
        deadline = kmq__mono_ms() + p->queue_full_ms;
      else if (kmq__mono_ms() >= deadline)
        break;
      /* Bounded wait: serve delivery reports, which is what frees room. */
      rd_kafka_poll(p->rk, 10);
    }
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
      atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_relaxed);
      atomic_store_explicit(&p->fatal, 1, memory_order_release);
    }
    pthread_rwlock_unlock(&p->lock);
  }
  if (err == RD_KAFKA_RESP_ERR__FATAL) /* outstanding already taken back */
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
  if (!err) {
    atomic_fetch_add_explicit(&p->produced, 1, memory_order_relaxed);
    return KMQ_OK;
  }
  atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_relaxed);
  rd_kafka_headers_destroy(hdrs); /* not taken on failure */
  if (kafka_err)
    *kafka_err = err;
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
    atomic_fetch_add_explicit(&p->queue_full, 1, memory_order_relaxed);
    return KMQ_ERR_QUEUE_FULL;
  }
  if (err == RD_KAFKA_RESP_ERR__FATAL)
    return KMQ_ERR_FATAL;
  return KMQ_ERR_KAFKA;
}

kmq_err_t kmq_producer_flush(kmq_producer_t *p, int timeout_ms) {
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  for (;;) {
    if (atomic_load_explicit(&p->outstanding, memory_order_acquire) == 0)
      return KMQ_OK;
    int64_t left = deadline - kmq__mono_ms();
    if (left <= 0)
      return KMQ_ERR_TIMED_OUT;
    int slice = (int)(left < 100 ? left : 100);
    pthread_rwlock_rdlock(&p->lock);
    if (p->rk)
      rd_kafka_flush(p->rk, slice);
    pthread_rwlock_unlock(&p->lock);
    /* Failed deliveries finish on the DLQ's thread. */
    if (kmq_dlq_flush(p->dlq, slice) == KMQ_OK &&
        atomic_load_explicit(&p->outstanding, memory_order_acquire) != 0) {
      /* Both queues empty yet reports in progress on a poll thread: wait
       * for it without spinning. */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
}

void kmq_producer_destroy(kmq_producer_t *p) {
  if (!p)
    return;
  /* One bound for both clients: the main instance may use half of
   * kmq.flush.timeout.ms to deliver; what it could not deliver fails into
   * the DLQ, which gets the rest (the DLQ goes after the main instance: its
   * last failures are queued to it). */
  int64_t deadline = kmq__mono_ms() + p->flush_ms;
  if (p->rk)
    kmq__retire_rk(p, (int)(p->flush_ms / 2));
  int64_t left = deadline - kmq__mono_ms();
  kmq_dlq_destroy_within(p->dlq, left > 0 ? (int)left : 0);
  if (atomic_load(&p->outstanding) != 0)
    kmq__log_to(&p->log, "ERROR", "producer",
                "%lld messages without a delivery report",
                (long long)atomic_load(&p->outstanding));
  kmq_hist_destroy(p->lat);
  kmq__pstore_destroy(p->store); /* after the DLQ: its last LOST are stored */
  pthread_mutex_destroy(&p->fatal_lock);
  pthread_rwlock_destroy(&p->lock);
  free(p->topic);
  kmq_conf_destroy(p->conf);
  free(p);
}

void kmq_producer_stats(const kmq_producer_t *p, kmq_producer_stats_t *out) {
#define KMQ__LD(f) atomic_load_explicit(&p->f, memory_order_relaxed)
  out->produced = KMQ__LD(produced);
  out->delivered = KMQ__LD(delivered);
  out->failed = KMQ__LD(failed);
  out->dlq = KMQ__LD(dlq_n);
  out->fallback = KMQ__LD(fallback);
  out->lost = KMQ__LD(lost);
  out->queue_full = KMQ__LD(queue_full);
  out->fatal_resets = KMQ__LD(fatal_resets);
  out->outstanding = KMQ__LD(outstanding);
#undef KMQ__LD
}

const kmq_hist_t *kmq_producer_latency(const kmq_producer_t *p) {
  return p->lat;
}

kmq_err_t kmq_producer_last_fatal(kmq_producer_t *p, char *buf, size_t size) {
  pthread_mutex_lock(&p->fatal_lock);
  int has = p->has_fatal_reason;
  if (has)
    snprintf(buf, size, "%s", p->fatal_reason);
  pthread_mutex_unlock(&p->fatal_lock);
  return has ? KMQ_OK : KMQ_ERR_NOT_FOUND;
}

kmq_dlq_t *kmq_producer_dlq(kmq_producer_t *p) { return p->dlq; }
kmq_fallback_t *kmq_producer_fallback(kmq_producer_t *p) {
  return p->store ? kmq__pstore_fb(p->store) : NULL;
}
kmq_compensator_t *kmq_producer_compensator(kmq_producer_t *p) {
  return p->store ? kmq__pstore_comp(p->store) : NULL;
}
rd_kafka_t *kmq_producer_rk(kmq_producer_t *p) { return p->rk; }
