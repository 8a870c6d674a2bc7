/*
 * Producer: WeCom messages into Kafka, keyed by external_userid.
 *
 * Built on an idempotent librdkafka producer (acks=all, lz4, murmur2_random
 * so a key lands on the partition the Java client picks). kmq_producer_send()
 * is asynchronous; every message ends in exactly one delivery report to the
 * application's callback with its final status:
 *   DELIVERED  written to the topic;
 *   DLQ        delivery failed; the record is in the DLQ with the same key,
 *              headers and the reason;
 *   FALLBACK   the DLQ failed too; the fallback hook or the fallback
 *              store (below) persisted it;
 *   LOST       the DLQ failed and neither the hook nor the store took it:
 *              counted and logged.
 *
 * Fallback store (kmq.fallback.backend = sqlite | mysql; fallback.h): when
 * one is configured the producer owns it, and
 *   - a message whose delivery failed and that the DLQ could not take either
 *     is written to the store as the original message (its topic, key, value
 *     and headers; created_at = its send time), for the compensator to
 *     replay to its topic: FALLBACK, and LOST only when the store failed too;
 *   - order, sticky per user: from a user's first failed delivery (or, at
 *     start, while the store holds live rows of the user), every new
 *     kmq_producer_send() of that user is written to the store instead of
 *     Kafka and reported FALLBACK at once, on the sending thread; if the
 *     store fails, send returns KMQ_ERR_FALLBACK (nothing stored, no
 *     report). Once the compensator has replayed all the user's rows, the
 *     user produces directly again. A failure the DLQ absorbed releases the
 *     user at once when the store has no rows of theirs.
 *   - at least once: a message whose delivery timed out while in flight may
 *     have been written after all; its stored copy is replayed too (a
 *     duplicate, never a loss);
 *   - with kmq.fallback.compensator=on the producer runs a compensator
 *     (compensator.h) on its own thread. It is off by default, and only this
 *     producer's own compensator releases a sticky user: with it off, every
 *     later send of a sticky user goes to the store for good (a restart
 *     reloads such users from the store as sticky again). Turn it on
 *     whenever a store is configured.
 * Guarantee for messages sent after their user's first failed delivery: they
 * reach the topic (through the store) in send order, after everything of the
 * user that the store holds. NOT guaranteed: messages that were already
 * queued inside librdkafka when the outage began. Each of them still ends in
 * exactly one outcome (delivered, DLQ, stored or LOST), and one that fails is
 * stored with its send time, so it sorts before its user's later rows and is
 * replayed in order if it is stored before the compensator passes them
 * (the user is not released while such a failure is on its way through the
 * DLQ). But one still queued when Kafka comes back is delivered directly,
 * possibly before older rows of its user that the store replays, and one
 * that fails only after its user was released is replayed after newer
 * messages. The acceptance test (tests/test_fallback_accept_broker.c,
 * README) measures these reorderings: 0 when the outage outlasts
 * message.timeout.ms, as every queued message has failed by then.
 *
 * A fatal idempotent-producer error (rd_kafka_fatal_error(), e.g. sequence
 * desynchronisation) is detected from the error callback: the next send
 * purges the dead instance (its undelivered messages fail through the path
 * above, so none is lost), builds a new one and goes on; the event is
 * counted in fatal_resets and its reason kept for kmq_producer_last_fatal().
 *
 * Threads: kmq_producer_send() may be called from any number of threads. A
 * producer-owned thread serves delivery reports; the application's delivery
 * callback runs on it (or on the DLQ's thread for DLQ/FALLBACK/LOST) and must
 * not block. kmq_producer_destroy() flushes, bounded by kmq.flush.timeout.ms.
 */
#ifndef KMQ_PRODUCER_H
#define KMQ_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/compensator.h"
#include "kmq/conf.h"
#include "kmq/dlq.h"
#include "kmq/fallback.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_producer_s kmq_producer_t;

/* One message to send. Every pointer is borrowed for the duration of the
 * call: key, value and header strings are copied. */
typedef struct {
  const char *topic;  /* NULL: kmq.topic */
  const void *key;    /* external_userid (required, non-empty) */
  size_t key_len;
  const void *value;
  size_t value_len;
  const char *msg_type; /* header "msg_type"; may be NULL */
  const char *msg_id;   /* header "msg_id"; may be NULL */
  void *opaque;         /* handed back in the delivery report */
} kmq_produce_msg_t;

typedef enum {
  KMQ_DELIVERY_DELIVERED,
  KMQ_DELIVERY_DLQ,
  KMQ_DELIVERY_FALLBACK,
  KMQ_DELIVERY_LOST,
} kmq_delivery_status_t;

typedef struct {
  kmq_delivery_status_t status;
  rd_kafka_resp_err_t kafka_err; /* the original delivery error, if any */
  kmq_err_t err;                 /* for LOST: what failed last */
  int32_t partition;             /* DELIVERED: where it went, else -1 */
  int64_t offset;                /* DELIVERED: its offset, else -1 */
  void *opaque;                  /* kmq_produce_msg_t.opaque */
} kmq_delivery_t;

/* Valid only during the call. */
typedef void(kmq_delivery_cb)(const kmq_delivery_t *d, void *opaque);

typedef struct {
  int64_t produced;     /* accepted by send */
  int64_t delivered;    /* DELIVERED */
  int64_t failed;       /* delivery reports with an error */
  int64_t dlq;          /* DLQ */
  int64_t fallback;     /* FALLBACK */
  int64_t lost;         /* LOST */
  int64_t queue_full;   /* sends refused after the bounded wait */
  int64_t fatal_resets; /* instances replaced after a fatal error */
  int64_t outstanding;  /* sent, delivery report not yet given: the queue
                           depth (librdkafka's queue and in flight) */
} kmq_producer_stats_t;

/* Creates a producer and its DLQ from conf. dr_cb may be NULL; fallback may
 * be NULL (see kmq_dlq_new). Unknown or invalid librdkafka keys are refused
 * here with librdkafka's message in errstr. Returns NULL on error. */
kmq_producer_t *kmq_producer_new(const kmq_conf_t *conf, kmq_delivery_cb *dr_cb,
                                 void *dr_opaque, kmq_fallback_cb *fallback,
                                 void *fallback_opaque, char *errstr,
                                 size_t errstr_size);

/* Flushes, stops threads, frees. Bounded: within kmq.flush.timeout.ms the
 * main instance delivers what it can (half of the bound at most) and the DLQ
 * takes its failures; what is undelivered at the deadline is purged, so
 * every message sent ends in exactly one outcome (DELIVERED, DLQ, FALLBACK
 * or LOST, reported to the delivery callback) before this returns. Running
 * the purged messages' callbacks may add up to 2 s per client, plus the
 * fallback hook's own time. No-op on NULL. */
void kmq_producer_destroy(kmq_producer_t *p);

/* Queues msg. On KMQ_OK exactly one delivery report follows (for a user on
 * the store path it has already run, FALLBACK, when this returns); on error
 * none. Errors: KMQ_ERR_FALLBACK (the user is on the store path and the
 * store failed), KMQ_ERR_INVALID_ARG (no key or topic), KMQ_ERR_QUEUE_FULL (local
 * queue still full after kmq.queue.full.timeout.ms), KMQ_ERR_FATAL (the
 * instance could not be replaced after a fatal error), KMQ_ERR_KAFKA (other
 * librdkafka refusals, e.g. message too large; *kafka_err says which).
 * kafka_err may be NULL. */
kmq_err_t kmq_producer_send(kmq_producer_t *p, const kmq_produce_msg_t *msg,
                            rd_kafka_resp_err_t *kafka_err);

/* Waits until every sent message has its delivery report (DLQ included).
 * KMQ_ERR_TIMED_OUT if some are still outstanding after timeout_ms. */
kmq_err_t kmq_producer_flush(kmq_producer_t *p, int timeout_ms);

void kmq_producer_stats(const kmq_producer_t *p, kmq_producer_stats_t *out);

/* Send-to-delivery latency of delivered messages in milliseconds (from
 * the message's produce timestamp to its delivery report), for metrics.
 * Owned by the producer, valid until destroy; any thread may read it. */
struct kmq_hist_s;
const struct kmq_hist_s *kmq_producer_latency(const kmq_producer_t *p);

/* Reason of the last fatal error into buf; KMQ_ERR_NOT_FOUND when none. */
kmq_err_t kmq_producer_last_fatal(kmq_producer_t *p, char *buf, size_t size);

/* The underlying DLQ (owned by the producer; valid until destroy). */
kmq_dlq_t *kmq_producer_dlq(kmq_producer_t *p);

/* The producer's fallback store and compensator (owned by the producer,
 * valid until destroy), NULL when not configured: for stats
 * (kmq_fallback_stats, kmq_compensator_stats). */
kmq_fallback_t *kmq_producer_fallback(kmq_producer_t *p);
kmq_compensator_t *kmq_producer_compensator(kmq_producer_t *p);

/* The current librdkafka handle, for tests and tools (e.g. to trigger
 * rd_kafka_test_fatal_error). Valid until the next fatal reset or destroy. */
rd_kafka_t *kmq_producer_rk(kmq_producer_t *p);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_PRODUCER_H */
