/*
 * Dual-write: the migration's phase 1 sender (README, "Migration"). An
 * application that already processes WeCom messages its own way keeps that
 * path and, beside it, hands each message to kmq_dual_write(). That call
 * never blocks on Kafka and never fails the caller's path: it returns at
 * once, whatever the brokers do.
 *
 * What happens to a message:
 *   - queued to librdkafka (no wait on a full queue: the writer's producer
 *     runs with kmq.queue.full.timeout.ms = 0), then it ends like any kmq
 *     send: DELIVERED, DLQ, FALLBACK (the fallback hook) or LOST;
 *   - refused at once by librdkafka (queue full, too large, no instance
 *     after a fatal error): dead-lettered with reason "dual_write_refused"
 *     (then DLQ, FALLBACK or LOST as above).
 * Every message ends in exactly one of those outcomes, counted in
 * kmq_dual_write_stats(); none is dropped silently.
 *
 * One exception to "never waits": with a fallback store configured
 * (kmq.fallback.backend), a user whose delivery failed is sticky
 * (producer.h) and their sends are written to the store on the caller's
 * thread, a durable database write (an fsync on SQLite, a commit on
 * MariaDB). Leave the store off for a dual writer whose caller must never
 * wait on a disk.
 *
 * Ownership: the conf is copied; the fallback opaque is borrowed and must
 * outlive the writer. Threads: kmq_dual_write() and kmq_dual_write_stats()
 * from any thread; _new and _destroy from the owning thread.
 * kmq_dual_writer_destroy() is bounded as kmq_producer_destroy() is
 * (kmq.flush.timeout.ms): every message written has its outcome when it
 * returns.
 */
#ifndef KMQ_DUAL_WRITE_H
#define KMQ_DUAL_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/dlq.h"
#include "kmq/err.h"
#include "kmq/producer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_dual_writer_s kmq_dual_writer_t;

typedef struct {
  int64_t written;   /* kmq_dual_write calls with a valid message */
  int64_t queued;    /* taken by librdkafka */
  int64_t refused;   /* refused at once, handed to the DLQ */
  int64_t delivered; /* outcomes: DELIVERED */
  int64_t dlq;       /* DLQ (delivery failed, or refused) */
  int64_t fallback;  /* FALLBACK */
  int64_t lost;      /* LOST: DLQ and fallback failed */
} kmq_dual_write_stats_t;

/* A writer with its own producer (kmq_producer_new) from conf, with
 * kmq.queue.full.timeout.ms forced to 0. fallback may be NULL. NULL with
 * the reason in errstr on a bad conf. */
kmq_dual_writer_t *kmq_dual_writer_new(const kmq_conf_t *conf,
                                       kmq_fallback_cb *fallback,
                                       void *fallback_opaque, char *errstr,
                                       size_t errstr_size);

/* Flushes within kmq.flush.timeout.ms (then purges: every message has its
 * outcome), frees. No-op on NULL. */
void kmq_dual_writer_destroy(kmq_dual_writer_t *dw);

/* Hands msg to Kafka without waiting (see the contract above). Returns
 * KMQ_ERR_INVALID_ARG only for a message kmq cannot send at all (NULL, no
 * key): nothing is counted then. Otherwise KMQ_OK, whatever Kafka does.
 * msg->opaque is not used. Any thread. */
kmq_err_t kmq_dual_write(kmq_dual_writer_t *dw, const kmq_produce_msg_t *msg);

/* Waits up to timeout_ms until every message written has its outcome.
 * KMQ_ERR_TIMED_OUT otherwise. Not from a delivery callback. */
kmq_err_t kmq_dual_write_flush(kmq_dual_writer_t *dw, int timeout_ms);

/* Counters; outcomes (delivered + dlq + fallback + lost) reach written
 * once every message has its outcome. Any thread. */
void kmq_dual_write_stats(const kmq_dual_writer_t *dw,
                          kmq_dual_write_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
