/*
 * Compensator: replays the fallback store (fallback.h) into Kafka once Kafka
 * is back.
 *
 * A round claims up to kmq.fallback.batch due heads (at most one row per
 * user: fallback.h), produces each to its row's topic with its key, value
 * and headers (the partitioner puts it where the original would have gone),
 * and waits for every delivery report. A row becomes success only on a
 * successful report. A failed one counts an attempt and is due again after
 * kmq.fallback.backoff.ms doubled per attempt, capped at
 * kmq.fallback.backoff.max.ms, with jitter (a uniformly drawn delay between
 * half and all of it, so that many compensators do not retry in lock step);
 * at kmq.fallback.max.retries attempts it is failed: kept for a person and
 * counted. So one user's rows are delivered strictly one after the other, in
 * created order (row n+1 is claimed only after row n's report said
 * delivered), while users go in parallel.
 *
 * Crash safety: claims are leases of kmq.fallback.claim.ms. A compensator
 * killed mid-round leaves its rows claimed; once the lease ends, any
 * compensator (this process restarted, or another) claims them again. A row
 * delivered but not yet marked when the process died is delivered again: the
 * replay is at least once, never lost. Several compensators may share one
 * store (claims never overlap).
 *
 * Threads: either kmq_compensator_start() runs rounds on a thread of its own
 * (rounds back to back while there is work, else every
 * kmq.fallback.interval.ms), or a tool calls kmq_compensator_run_once() on
 * its thread; not both at once. The row callback runs on the thread that
 * runs the round. The compensator borrows the store: it must outlive it.
 */
#ifndef KMQ_COMPENSATOR_H
#define KMQ_COMPENSATOR_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/err.h"
#include "kmq/fallback.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_compensator_s kmq_compensator_t;

/* Called after row e was delivered and marked success (the producer uses it
 * to let a drained user produce directly again). e is valid during the call
 * only. Must not call back into the compensator. */
typedef void(kmq_compensator_row_cb)(const kmq_fallback_entry_t *e,
                                     void *opaque);

typedef struct {
  int64_t rounds;    /* rounds that claimed something */
  int64_t claimed;   /* rows claimed */
  int64_t delivered; /* rows delivered and marked success */
  int64_t retried;   /* failed attempts (backoff) */
  int64_t failed;    /* rows given up (max retries) */
  int64_t lost_claims; /* marks refused: the lease had ended and another
                        * compensator took the row (it is replayed again) */
} kmq_compensator_stats_t;

/* Creates a compensator on store fb (borrowed) with its own librdkafka
 * producer built from conf (bootstrap.servers, producer keys). cb may be
 * NULL. Returns NULL with errstr filled on a bad configuration. */
kmq_compensator_t *kmq_compensator_new(const kmq_conf_t *conf,
                                       kmq_fallback_t *fb,
                                       kmq_compensator_row_cb *cb,
                                       void *opaque, char *errstr,
                                       size_t errstr_size);

/* Starts the background thread. KMQ_ERR_STATE if already started. */
kmq_err_t kmq_compensator_start(kmq_compensator_t *c);

/* Runs rounds on the calling thread until a round finds nothing due, or
 * timeout_ms passed (then KMQ_ERR_TIMED_OUT; the round in progress still
 * finishes, so this can overrun by one round: at most the producer's
 * message.timeout.ms). Rows in backoff are not waited for. KMQ_ERR_STATE
 * while the thread runs; KMQ_ERR_FALLBACK when the store failed. */
kmq_err_t kmq_compensator_run_once(kmq_compensator_t *c, int timeout_ms);

/* Asks the thread for a round now (e.g. Kafka is known to be back). Any
 * thread. */
void kmq_compensator_wake(kmq_compensator_t *c);

void kmq_compensator_stats(const kmq_compensator_t *c,
                           kmq_compensator_stats_t *out);

/* Stops the thread (after its round), flushes and frees. Claimed rows not
 * yet marked keep their lease and are replayed later. No-op on NULL. */
void kmq_compensator_destroy(kmq_compensator_t *c);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_COMPENSATOR_H */
