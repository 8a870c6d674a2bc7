/* Dead-letter queue: own idempotent producer, fallback hook. The envelope
 * and its size bound are in dlq_envelope.c. */
#include "kmq/dlq.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/limits.h"
#include "lib/log.h"
#include "lib/redact.h"
#include "lib/util.h"

struct kmq_dlq_s {
  rd_kafka_t *rk;
  char *topic;
  kmq_fallback_cb *fallback;
  void *fallback_opaque;
  int64_t queue_full_ms;
  int64_t flush_ms;
  size_t max_bytes; /* the producer's message.max.bytes: letters fit it */
  kmq__poller_t poller;
  /* Records queued in librdkafka, so that destroy can report LOST for those
   * whose delivery report never came (librdkafka drops the reports of what
   * it still holds when it is destroyed): every record gets its outcome.
   * Under inflight_lock; the failure path only, never the hot path. */
  pthread_mutex_t inflight_lock;
  struct kmq__dlq_ctx_s *inflight;
  /* Counters are read by any thread for metrics; relaxed ordering suffices
   * because no other data is published through them. */
  atomic_llong sent, written, fallbacks, lost, outstanding;
  kmq__log_sink_t log; /* the conf's log hook: kmq's and librdkafka's */
};

/* librdkafka's log lines, from any of its threads, to the conf's hook. */
static void kmq__dlq_rdk_log(const rd_kafka_t *rk, int level, const char *fac,
                             const char *buf) {
  kmq_dlq_t *dlq = rd_kafka_opaque(rk);
  kmq__log_rdk_rk(&dlq->log, rk, level, fac, buf);
}

/* Per-record completion, allocated only on this (failure) path. */
typedef struct kmq__dlq_ctx_s {
  kmq_dlq_t *dlq;
  kmq_dlq_done_cb *done;
  void *opaque;
  /* The whole record is already in the fallback store and this is its
   * referencing truncated letter: if the DLQ refuses the letter, the
   * outcome is FALLBACK (kept), not a second hook call. */
  int stored;
  struct kmq__dlq_ctx_s *prev, *next; /* in dlq->inflight while queued */
} kmq__dlq_ctx_t;

static void kmq__dlq_link(kmq_dlq_t *dlq, kmq__dlq_ctx_t *ctx) {
  pthread_mutex_lock(&dlq->inflight_lock);
  ctx->prev = NULL;
  ctx->next = dlq->inflight;
  if (dlq->inflight)
    dlq->inflight->prev = ctx;
  dlq->inflight = ctx;
  pthread_mutex_unlock(&dlq->inflight_lock);
}

static void kmq__dlq_unlink(kmq_dlq_t *dlq, kmq__dlq_ctx_t *ctx) {
  pthread_mutex_lock(&dlq->inflight_lock);
  if (ctx->prev)
    ctx->prev->next = ctx->next;
  else
    dlq->inflight = ctx->next;
  if (ctx->next)
    ctx->next->prev = ctx->prev;
  pthread_mutex_unlock(&dlq->inflight_lock);
}

static void kmq__dlq_finish(kmq_dlq_t *dlq, kmq__dlq_ctx_t *ctx,
                            kmq_dlq_outcome_t outcome, kmq_err_t err) {
  switch (outcome) {
  case KMQ_DLQ_OUTCOME_DLQ:
    atomic_fetch_add_explicit(&dlq->written, 1, memory_order_relaxed);
    break;
  case KMQ_DLQ_OUTCOME_FALLBACK:
    atomic_fetch_add_explicit(&dlq->fallbacks, 1, memory_order_relaxed);
    break;
  case KMQ_DLQ_OUTCOME_LOST:
    atomic_fetch_add_explicit(&dlq->lost, 1, memory_order_relaxed);
    break;
  }
  if (ctx) {
    if (ctx->done)
      ctx->done(outcome, err, ctx->opaque);
    free(ctx);
  }
  /* Release: the done callback's effects happen before a flusher that sees
   * the count drop (acquire in kmq_dlq_flush). */
  atomic_fetch_sub_explicit(&dlq->outstanding, 1, memory_order_release);
}

/* The DLQ could not take the record: hand it to the fallback hook. */
static void kmq__dlq_fallback(kmq_dlq_t *dlq, kmq__dlq_ctx_t *ctx,
                              const kmq_fallback_record_t *fr) {
  kmq_err_t err = KMQ_ERR_NO_FALLBACK;
  if (dlq->fallback)
    err = dlq->fallback(fr, dlq->fallback_opaque);
  if (err == KMQ_OK) {
    kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_FALLBACK, KMQ_OK);
    return;
  }
  kmq__log_to(&dlq->log, "ERROR", "dlq",
              "record for key \"%.*s\" LOST: DLQ failed (%s) and fallback "
              "failed (%s)",
              (int)(fr->key_len > 64 ? 64 : fr->key_len),
              fr->key ? (const char *)fr->key : "", rd_kafka_err2str(fr->kafka_err),
              kmq_err2str(err));
  kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_LOST, err);
}

/* rec's full envelope does not fit the DLQ: offers it, whole key and
 * headers included, to the fallback hook, which may keep what the DLQ
 * cannot. Returns the hook's result (KMQ_ERR_NO_FALLBACK without one).
 * The offered record carries a "msg_id" header, the id kmq's store keys
 * its row by (kmq_fallback_hook): the original's own, else
 * "kmq-dlq:<topic>:<partition>:<offset>" (the same on every retry of the
 * record); it goes into ref (may be empty: no original coordinates) for
 * the truncated letter's fallback_message_id. @locality the sending
 * thread */
static kmq_err_t kmq__dlq_offer_full(kmq_dlq_t *dlq,
                                     const kmq_dlq_record_t *rec,
                                     int64_t now_ms, char *ref,
                                     size_t ref_size) {
  ref[0] = '\0';
  if (!dlq->fallback)
    return KMQ_ERR_NO_FALLBACK;
  char errstr[256];
  kmq_dlq_letter_t full;
  kmq_err_t err = kmq_dlq_letter_build(rec, now_ms, SIZE_MAX, &full, errstr,
                                       sizeof(errstr));
  if (err)
    return err;
  const void *v;
  size_t n;
  if (full.headers &&
      !rd_kafka_header_get_last(full.headers, "msg_id", &v, &n) && v) {
    snprintf(ref, ref_size, "%.*s", (int)n, (const char *)v);
  } else if (full.headers && rec->original_offset >= 0) {
    snprintf(ref, ref_size, "kmq-dlq:%s:%d:%lld",
             rec->original_topic ? rec->original_topic : "",
             (int)rec->original_partition, (long long)rec->original_offset);
    rd_kafka_header_add(full.headers, "msg_id", -1, ref, -1);
  }
  kmq_fallback_record_t fr = {dlq->topic,     full.key,
                              full.key_len,   full.value,
                              full.value_len, full.headers,
                              RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE};
  err = dlq->fallback(&fr, dlq->fallback_opaque);
  kmq_dlq_letter_clear(&full);
  return err;
}

/* @locality DLQ poll thread (or the destroying thread after it stopped). */
static void kmq__dlq_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  (void)rk;
  kmq_dlq_t *dlq = opaque;
  kmq__dlq_ctx_t *ctx = m->_private;
  if (ctx)
    kmq__dlq_unlink(dlq, ctx);
  if (!m->err) {
    kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_DLQ, KMQ_OK);
    return;
  }
  if (ctx && ctx->stored) { /* the whole record is in the store */
    kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_FALLBACK, KMQ_OK);
    return;
  }
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_message_headers(m, &hdrs);
  kmq_fallback_record_t fr = {dlq->topic, m->key,     m->key_len,
                              m->payload, m->len,     hdrs,
                              m->err};
  kmq__dlq_fallback(dlq, ctx, &fr);
}

kmq_dlq_t *kmq_dlq_new(const kmq_conf_t *conf, kmq_fallback_cb *fallback,
                       void *fallback_opaque, char *errstr,
                       size_t errstr_size) {
  kmq_dlq_t *dlq = calloc(1, sizeof(*dlq));
  if (!dlq) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  const char *t = kmq_conf_get(conf, "kmq.dlq.topic");
  const char *main_topic = kmq_conf_get(conf, "kmq.topic");
  if (t) {
    dlq->topic = strdup(t);
  } else if (main_topic) {
    size_t n = strlen(main_topic) + 5;
    dlq->topic = malloc(n);
    if (dlq->topic)
      snprintf(dlq->topic, n, "%s.dlq", main_topic);
  } else {
    snprintf(errstr, errstr_size,
             "no DLQ topic: set kmq.dlq.topic or kmq.topic");
    goto fail_topic;
  }
  if (!dlq->topic) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail_topic;
  }
  dlq->fallback = fallback;
  dlq->fallback_opaque = fallback_opaque;
  pthread_mutex_init(&dlq->inflight_lock, NULL);
  dlq->log = kmq__conf_hooks(conf)->log;
  dlq->queue_full_ms = kmq_conf_get_int(conf, "kmq.queue.full.timeout.ms");
  dlq->flush_ms = kmq_conf_get_int(conf, "kmq.flush.timeout.ms");

  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_PRODUCER, errstr, errstr_size);
  if (!rc)
    goto fail_conf;
  rd_kafka_conf_set_opaque(rc, dlq);
  rd_kafka_conf_set_dr_msg_cb(rc, kmq__dlq_dr);
  if (dlq->log.cb)
    rd_kafka_conf_set_log_cb(rc, kmq__dlq_rdk_log);
  dlq->rk = kmq__rdk_new(RD_KAFKA_PRODUCER, rc, errstr, errstr_size);
  if (!dlq->rk) {
    rd_kafka_conf_destroy(rc);
    goto fail_conf;
  }
  /* Read back from the client rather than from conf: the value librdkafka
   * enforces at produce time, whether set (producer.message.max.bytes or a
   * bare message.max.bytes) or defaulted. */
  char mmb[32];
  size_t mmb_size = sizeof(mmb);
  if (rd_kafka_conf_get(rd_kafka_conf(dlq->rk), "message.max.bytes", mmb,
                        &mmb_size) != RD_KAFKA_CONF_OK ||
      (dlq->max_bytes = strtoull(mmb, NULL, 10)) == 0) {
    snprintf(errstr, errstr_size, "cannot read the DLQ producer's "
                                  "message.max.bytes");
    goto fail_thread;
  }
  if (kmq__poller_start(&dlq->poller, dlq->rk)) {
    snprintf(errstr, errstr_size, "cannot start the DLQ poll thread");
    goto fail_thread;
  }
  return dlq;

fail_thread:
  rd_kafka_destroy(dlq->rk);
fail_conf:
  pthread_mutex_destroy(&dlq->inflight_lock);
  free(dlq->topic);
fail_topic:
  free(dlq);
  return NULL;
}

kmq_dlq_record_t kmq_dlq_record_of(const rd_kafka_message_t *m,
                                   const char *reason, const char *error,
                                   const char *source) {
  rd_kafka_headers_t *hdrs = NULL;
  rd_kafka_message_headers(m, &hdrs); /* none: stays NULL */
  return (kmq_dlq_record_t){
      .original_topic = rd_kafka_topic_name(m->rkt),
      .original_partition = m->partition,
      .original_offset = m->offset,
      .key = m->key,
      .key_len = m->key_len,
      .payload = m->payload,
      .payload_len = m->len,
      .headers = hdrs,
      .reason = reason,
      .error = error,
      .kafka_err = RD_KAFKA_RESP_ERR_NO_ERROR,
      .source = source,
  };
}

kmq_err_t kmq_dlq_send(kmq_dlq_t *dlq, const kmq_dlq_record_t *rec,
                       kmq_dlq_done_cb *done, void *opaque) {
  if (!dlq || !rec)
    return KMQ_ERR_INVALID_ARG;
  int64_t now = kmq__wall_ms();
  char errstr[256];
  kmq_dlq_letter_t l;
  kmq_err_t lerr =
      kmq_dlq_letter_build(rec, now, dlq->max_bytes, &l, errstr, sizeof(errstr));
  if (lerr && lerr != KMQ_ERR_TOO_LARGE)
    return lerr; /* NOMEM */
  kmq__dlq_ctx_t *ctx = malloc(sizeof(*ctx));
  if (!ctx) {
    kmq_dlq_letter_clear(&l);
    return KMQ_ERR_NOMEM;
  }
  *ctx = (kmq__dlq_ctx_t){dlq, done, opaque, 0, NULL, NULL};
  atomic_fetch_add_explicit(&dlq->sent, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&dlq->outstanding, 1, memory_order_relaxed);

  if (lerr || l.truncated) {
    /* The full envelope does not fit the DLQ: a fallback store can keep the
     * whole record; without one (or if it fails) the truncated letter goes
     * to the DLQ, so that the record's offset still finishes. */
    char ref[192];
    kmq_err_t ferr = kmq__dlq_offer_full(dlq, rec, now, ref, sizeof(ref));
    if (ferr == KMQ_OK && (lerr || !l.headers || !ref[0])) {
      kmq_dlq_letter_clear(&l);
      kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_FALLBACK, KMQ_OK);
      return KMQ_OK;
    }
    if (ferr == KMQ_OK) {
      /* Stored whole; the DLQ still gets the truncated letter, pointing at
       * the row, so that an operator reading the DLQ finds the record. */
      /* At most ~220 bytes with its framing: within what
       * KMQ_DLQ_RECORD_OVERHEAD keeps spare beyond librdkafka's framing. */
      rd_kafka_header_add(l.headers, "fallback_message_id", -1, ref, -1);
      ctx->stored = 1;
    }
    if (lerr) {
      kmq__log_to(&dlq->log, "ERROR", "dlq",
                  "record for key \"%.*s\" LOST: too large for a dead letter "
                  "(%s) and fallback failed (%s)",
                  (int)(rec->key_len > 64 ? 64 : rec->key_len),
                  rec->key ? (const char *)rec->key : "", errstr,
                  kmq_err2str(ferr));
      kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_LOST,
                      ferr == KMQ_ERR_NO_FALLBACK ? lerr : ferr);
      return KMQ_OK;
    }
    if (ferr != KMQ_OK && ferr != KMQ_ERR_NO_FALLBACK)
      kmq__log_to(&dlq->log, "WARN", "dlq",
                  "fallback failed (%s): the DLQ gets a truncated dead letter "
                  "of %zu bytes",
                  kmq_err2str(ferr), l.value_len);
  }

  int64_t deadline = kmq__mono_ms() + dlq->queue_full_ms;
  rd_kafka_resp_err_t err;
  kmq__dlq_link(dlq, ctx); /* before: its report may come at once */
  for (;;) {
    /* RD_KAFKA_MSG_F_FREE: librdkafka frees the envelope after delivery. */
    err = rd_kafka_producev(
        dlq->rk, RD_KAFKA_V_TOPIC(dlq->topic),
        RD_KAFKA_V_KEY(l.key, l.key_len), RD_KAFKA_V_VALUE(l.value, l.value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_HEADERS(l.headers),
        RD_KAFKA_V_OPAQUE(ctx), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || kmq__mono_ms() >= deadline)
      break;
    rd_kafka_poll(dlq->rk, 10); /* serve delivery reports to make room */
  }
  if (!err)
    return KMQ_OK; /* librdkafka owns value and headers now */
  kmq__dlq_unlink(dlq, ctx);

  if (ctx->stored) { /* not queued, but the whole record is stored */
    kmq_dlq_letter_clear(&l);
    kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_FALLBACK, KMQ_OK);
    return KMQ_OK;
  }
  /* Not even queued: the fallback hook gets it now, on this thread. */
  kmq_fallback_record_t fr = {dlq->topic, l.key,     l.key_len, l.value,
                              l.value_len, l.headers, err};
  kmq__dlq_fallback(dlq, ctx, &fr);
  kmq_dlq_letter_clear(&l);
  return KMQ_OK;
}

kmq_err_t kmq_dlq_flush(kmq_dlq_t *dlq, int timeout_ms) {
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  /* rd_kafka_flush waits for librdkafka's queue; the counter also covers
   * delivery reports still being served by the poll thread. */
  for (;;) {
    if (atomic_load_explicit(&dlq->outstanding, memory_order_acquire) == 0)
      return KMQ_OK;
    int64_t left = deadline - kmq__mono_ms();
    if (left <= 0)
      return KMQ_ERR_TIMED_OUT;
    if (rd_kafka_flush(dlq->rk, (int)(left < 100 ? left : 100)) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      /* librdkafka's queue is empty but a report is being served on the
       * poll thread: wait for it without spinning. */
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
}

void kmq_dlq_destroy(kmq_dlq_t *dlq) {
  if (dlq)
    kmq_dlq_destroy_within(dlq, (int)dlq->flush_ms);
}

void kmq_dlq_destroy_within(kmq_dlq_t *dlq, int timeout_ms) {
  if (!dlq)
    return;
  kmq__poller_stop(&dlq->poller);
  /* What is still undelivered at the deadline is purged: each gets a
   * delivery report with an error, which sends it to the fallback hook (or
   * LOST) instead of dropping it. */
  kmq__flush_then_purge(dlq->rk, kmq__mono_ms() + timeout_ms);
  rd_kafka_destroy(dlq->rk);
  /* No report comes after rd_kafka_destroy: what is still listed never got
   * one. Not known to be durable, so LOST (its owner keeps it
   * unfinished). */
  int64_t n = 0;
  for (kmq__dlq_ctx_t *ctx = dlq->inflight, *next; ctx; ctx = next) {
    next = ctx->next;
    kmq__dlq_finish(dlq, ctx, KMQ_DLQ_OUTCOME_LOST, KMQ_ERR_TIMED_OUT);
    n++;
  }
  if (n)
    kmq__log_to(&dlq->log, "ERROR", "dlq",
                "%lld records had no delivery report at destroy: LOST",
                (long long)n);
  pthread_mutex_destroy(&dlq->inflight_lock);
  free(dlq->topic);
  free(dlq);
}

const char *kmq_dlq_topic(const kmq_dlq_t *dlq) { return dlq->topic; }

void kmq_dlq_stats(const kmq_dlq_t *dlq, kmq_dlq_stats_t *out) {
  out->sent = atomic_load_explicit(&dlq->sent, memory_order_relaxed);
  out->written = atomic_load_explicit(&dlq->written, memory_order_relaxed);
  out->fallback = atomic_load_explicit(&dlq->fallbacks, memory_order_relaxed);
  out->lost = atomic_load_explicit(&dlq->lost, memory_order_relaxed);
}

size_t kmq__dlq_max_bytes(const kmq_dlq_t *dlq) { return dlq->max_bytes; }

rd_kafka_t *kmq__dlq_rk(const kmq_dlq_t *dlq) { return dlq->rk; }

int kmq__limits_check(size_t msg_max, size_t producer_max, char *errstr,
                      size_t errstr_size) {
  if (msg_max <= producer_max && producer_max - msg_max >= KMQ_MSG_ROOM_BYTES)
    return 0;
  snprintf(errstr, errstr_size,
           "kmq.msg.max.bytes=%zu does not fit the producers' "
           "message.max.bytes=%zu: a record kmq accepts must be producible "
           "again (compensator, replay) with its key and headers, so "
           "kmq.msg.max.bytes + %d must not exceed message.max.bytes; lower "
           "kmq.msg.max.bytes to at most %zu or raise "
           "producer.message.max.bytes (and the topics' max.message.bytes, "
           "kmq.topic.max.message.bytes)",
           msg_max, producer_max, KMQ_MSG_ROOM_BYTES,
           producer_max > KMQ_MSG_ROOM_BYTES ? producer_max - KMQ_MSG_ROOM_BYTES
                                             : 0);
  return -1;
}
