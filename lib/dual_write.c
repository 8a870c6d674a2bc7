/* Dual-write (kmq/dual_write.h): a kmq producer that never makes its caller
 * wait, with an immediate refusal turned into a dead letter instead of an
 * error. */
#include "kmq/dual_write.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/util.h"

struct kmq_dual_writer_s {
  kmq_producer_t *p;
  kmq__log_sink_t log; /* the conf's log hook */
  char topic[256]; /* kmq.topic: the dead letter's original topic */
  /* Relaxed counters: statistics only. */
  atomic_llong written, queued, refused, delivered, dlq, fallback, lost;
};

#define KMQ__DW_INC(dw, f)                                                     \
  atomic_fetch_add_explicit(&(dw)->f, 1, memory_order_relaxed)

/* @locality the producer's delivery thread or the DLQ's */
static void kmq__dw_delivered(const kmq_delivery_t *d, void *opaque) {
  kmq_dual_writer_t *dw = opaque;
  switch (d->status) {
  case KMQ_DELIVERY_DELIVERED: KMQ__DW_INC(dw, delivered); break;
  case KMQ_DELIVERY_DLQ: KMQ__DW_INC(dw, dlq); break;
  case KMQ_DELIVERY_FALLBACK: KMQ__DW_INC(dw, fallback); break;
  case KMQ_DELIVERY_LOST: KMQ__DW_INC(dw, lost); break;
  }
}

/* Outcome of a refused message's dead letter. @locality the DLQ's thread,
 * or the writer's caller when the DLQ decides at once */
static void kmq__dw_refused_done(kmq_dlq_outcome_t outcome, kmq_err_t err,
                                 void *opaque) {
  kmq_dual_writer_t *dw = opaque;
  (void)err;
  switch (outcome) {
  case KMQ_DLQ_OUTCOME_DLQ: KMQ__DW_INC(dw, dlq); break;
  case KMQ_DLQ_OUTCOME_FALLBACK: KMQ__DW_INC(dw, fallback); break;
  case KMQ_DLQ_OUTCOME_LOST: KMQ__DW_INC(dw, lost); break;
  }
}

kmq_dual_writer_t *kmq_dual_writer_new(const kmq_conf_t *conf,
                                       kmq_fallback_cb *fallback,
                                       void *fallback_opaque, char *errstr,
                                       size_t errstr_size) {
  if (!conf) {
    snprintf(errstr, errstr_size, "dual-write: conf is required");
    return NULL;
  }
  kmq_dual_writer_t *dw = calloc(1, sizeof(*dw));
  kmq_conf_t *c = kmq_conf_dup(conf);
  if (!dw || !c) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  /* The one difference from a plain producer: never wait for room. */
  if (kmq_conf_set(c, "kmq.queue.full.timeout.ms", "0", errstr, errstr_size))
    goto fail;
  dw->log = kmq__conf_hooks(conf)->log;
  const char *topic = kmq_conf_get(c, "kmq.topic");
  snprintf(dw->topic, sizeof(dw->topic), "%s", topic ? topic : "");
  dw->p = kmq_producer_new(c, kmq__dw_delivered, dw, fallback, fallback_opaque,
                           errstr, errstr_size);
  if (!dw->p)
    goto fail;
  kmq_conf_destroy(c);
  return dw;
fail:
  kmq_conf_destroy(c);
  free(dw);
  return NULL;
}

void kmq_dual_writer_destroy(kmq_dual_writer_t *dw) {
  if (!dw)
    return;
  kmq_producer_destroy(dw->p); /* bounded; its DLQ too */
  free(dw);
}

kmq_err_t kmq_dual_write(kmq_dual_writer_t *dw, const kmq_produce_msg_t *msg) {
  if (!dw || !msg || !msg->key || !msg->key_len)
    return KMQ_ERR_INVALID_ARG;
  KMQ__DW_INC(dw, written);
  kmq_produce_msg_t m = *msg;
  m.opaque = NULL;
  rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
  kmq_err_t err = kmq_producer_send(dw->p, &m, &kerr);
  if (err == KMQ_OK) {
    KMQ__DW_INC(dw, queued);
    return KMQ_OK;
  }
  /* Refused at once: the caller's path must go on, so the message goes to
   * the DLQ (then the fallback hook) like a failed delivery. */
  KMQ__DW_INC(dw, refused);
  rd_kafka_headers_t *h = rd_kafka_headers_new(3);
  if (msg->msg_type)
    rd_kafka_header_add(h, "msg_type", -1, msg->msg_type, -1);
  if (msg->msg_id)
    rd_kafka_header_add(h, "msg_id", -1, msg->msg_id, -1);
  rd_kafka_header_add(h, "user_id", -1, msg->key, (ssize_t)msg->key_len);
  char detail[160];
  snprintf(detail, sizeof(detail), "kmq_producer_send refused it: %s%s%s",
           kmq_err_name(err), kerr ? " / " : "",
           kerr ? rd_kafka_err2name(kerr) : "");
  kmq_dlq_record_t rec = {
      .original_topic = msg->topic ? msg->topic : dw->topic,
      .original_partition = -1,
      .original_offset = -1,
      .key = msg->key,
      .key_len = msg->key_len,
      .payload = msg->value,
      .payload_len = msg->value_len,
      .headers = h,
      .reason = "dual_write_refused",
      .error = detail,
      .kafka_err = kerr,
      .source = "producer",
  };
  if (kmq_dlq_send(kmq_producer_dlq(dw->p), &rec, kmq__dw_refused_done, dw)) {
    /* Not even queued to the DLQ (out of memory): counted, logged. */
    KMQ__DW_INC(dw, lost);
    kmq__log_to(&dw->log, "ERROR", "dual-write", "message of user %.*s LOST: neither the "
             "topic nor the DLQ took it (%s)",
             (int)(msg->key_len > 64 ? 64 : msg->key_len),
             (const char *)msg->key, detail);
  }
  rd_kafka_headers_destroy(h);
  return KMQ_OK;
}

kmq_err_t kmq_dual_write_flush(kmq_dual_writer_t *dw, int timeout_ms) {
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  if (kmq_producer_flush(dw->p, timeout_ms))
    return KMQ_ERR_TIMED_OUT;
  int64_t left = deadline - kmq__mono_ms();
  return kmq_dlq_flush(kmq_producer_dlq(dw->p), left > 0 ? (int)left : 0);
}

void kmq_dual_write_stats(const kmq_dual_writer_t *dw,
                          kmq_dual_write_stats_t *out) {
#define KMQ__DW_LD(f) atomic_load_explicit(&dw->f, memory_order_relaxed)
  out->written = KMQ__DW_LD(written);
  out->queued = KMQ__DW_LD(queued);
  out->refused = KMQ__DW_LD(refused);
  out->delivered = KMQ__DW_LD(delivered);
  out->dlq = KMQ__DW_LD(dlq);
  out->fallback = KMQ__DW_LD(fallback);
  out->lost = KMQ__DW_LD(lost);
#undef KMQ__DW_LD
}
