/*
 * The runtime's observability, internal to runtime/ (kmq__ prefix):
 *   metrics.c         the kmq__obs_t object: errors (hook, counts, fatal
 *                     flag), DLQ reasons, sampling schedule, the endpoint's
 *                     life, and the public API on top of it;
 *   metrics_snap.c    the snapshot the poll thread samples (partitions,
 *                     stalls, deepest mailboxes) and readers copy;
 *   metrics_render.c  what /metrics and /stuck contain;
 *   metrics_expo.c    the exposition and JSON writers;
 *   metrics_http.c    the HTTP server.
 * Threads: counters are atomics (relaxed: each is exact on its own, they
 * publish nothing); the snapshot is written by the poll thread at most every
 * kmq.metrics.interval.ms under a mutex that readers take to copy it; the
 * HTTP thread renders from those and from the other modules' atomic stats.
 * Nothing here runs per message except kmq__obs_dlq (on the DLQ path).
 */
#ifndef KMQ_RUNTIME_METRICS_INT_H
#define KMQ_RUNTIME_METRICS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kmq/dlq.h"
#include "kmq/hist.h"
#include "kmq/runtime.h"
#include "kmq/sched.h"
#include "lib/log.h"
#include "runtime/metrics_http.h"

/* ---- the stall state of a job (job.c writes, the sampler reads) ----
 * One word per job: state in the low 3 bits, attempts begun above. A
 * relaxed store at each transition (a plain store on x86): the sampler
 * reads a value the job had, and nothing is published through it. */
#define KMQ__DIAG(state, attempts) ((int)(state) | (attempts) << 3)
#define KMQ__DIAG_STATE(d) ((kmq_stall_state_t)((d) & 7))
#define KMQ__DIAG_ATTEMPTS(d) ((d) >> 3)

/* For each job in flight (a record of the consumer's slab taken by the
 * runtime, not yet acked): its message and diag word. One walk over the
 * consumer's kmq.max.inflight records. @locality poll thread (runtime.c) */
typedef void(kmq__job_visit_cb)(const rd_kafka_message_t *m, int diag,
                                void *opaque);
void kmq__runtime_each_job(kmq_runtime_t *rt, kmq__job_visit_cb *cb,
                           void *opaque);

/* ---- snapshot (metrics_snap.c) ---- */
typedef struct {
  kmq_runtime_partition_t p;
  int64_t since_ms; /* when a sample first saw p.blocking_offset block */
} kmq__spart_t;

typedef struct {
  /* @locality poll thread */
  kmq__spart_t *cur, *prev;
  size_t ncur, nprev, cap;
  int64_t now_ms;
  kmq_sched_mailbox_t top[KMQ_TOP_MAILBOXES];
  /* Published: @locks_required lock */
  pthread_mutex_t lock;
  kmq_runtime_partition_t *pub;
  size_t npub, pubcap;
  kmq_runtime_mailbox_t pubtop[KMQ_TOP_MAILBOXES];
  size_t npubtop;
} kmq__snap_t;

void kmq__snap_init(kmq__snap_t *s);
void kmq__snap_free(kmq__snap_t *s);
/* Samples and publishes. @locality poll thread */
void kmq__snap_sample(kmq__snap_t *s, kmq_runtime_t *rt, kmq_consumer_t *c,
                      kmq_sched_t *sched, int64_t now_ms);
/* Copies the published sample. Any thread. */
size_t kmq__snap_partitions(kmq__snap_t *s, kmq_runtime_partition_t *out,
                            size_t max);
size_t kmq__snap_top(kmq__snap_t *s, kmq_runtime_mailbox_t *out, size_t max);

/* ---- the observability object (metrics.c) ---- */
enum {
  KMQ__ERRT_UNKNOWN_TOPIC,
  KMQ__ERRT_ALL_BROKERS_DOWN,
  KMQ__ERRT_TRANSPORT,
  KMQ__ERRT_AUTH,
  KMQ__ERRT_FATAL,
  KMQ__ERRT_OTHER,
};

typedef struct kmq__obs_s {
  kmq__log_sink_t log;
  kmq_error_cb *err_cb;
  void *err_opaque;
  char *listen; /* NULL: no endpoint */
  int64_t interval_ms;
  int64_t next_ms; /* @locality poll thread */
  atomic_llong errors[KMQ_ERROR_TYPES];
  atomic_llong dlq_reason[KMQ_DLQ_REASONS];
  atomic_int fatal;
  /* kmq_runtime_set_producer's: the mutex makes a detach wait for a
   * render that reads it, so the application may destroy it afterwards. */
  pthread_mutex_t prod_lock;
  kmq_producer_t *producer; /* @locks_required prod_lock */
  /* The fallback stores' stats (the runtime's and the attached producer's):
   * a store query is a disk read or a MariaDB round trip, so a render asks
   * at most every interval_ms and serves the cached values in between;
   * never per message, never on the poll thread. Lock order: store_lock,
   * then prod_lock. */
  pthread_mutex_t store_lock;
  int64_t store_at_ms; /* @locks_required store_lock; 0: query next time */
  int store_has[2];    /* runtime, producer */
  kmq_fallback_stats_t store_stats[2];
  /* Set by kmq__obs_start; immutable afterwards. */
  kmq_runtime_t *rt;
  kmq_consumer_t *consumer;
  kmq_sched_t *sched;
  kmq_hist_t *lat;
  kmq__snap_t snap;
  kmq__http_t *http;
} kmq__obs_t;

/* Reads the conf's hooks and kmq.metrics.*. NULL when out of memory. */
kmq__obs_t *kmq__obs_new(const kmq_conf_t *conf);
/* Starts the endpoint when kmq.metrics.listen is set. -1 with errstr filled
 * when it cannot listen. */
int kmq__obs_start(kmq__obs_t *o, kmq_runtime_t *rt, kmq_consumer_t *c,
                   kmq_sched_t *sched, kmq_hist_t *lat, char *errstr,
                   size_t errstr_size);
/* Stops the endpoint: no render runs after it returns. Idempotent. */
void kmq__obs_stop(kmq__obs_t *o);
/* Stops the endpoint, then frees. No-op on NULL. */
void kmq__obs_destroy(kmq__obs_t *o);
/* The consumer's on_error hook (opaque: the obs). @locality poll thread */
void kmq__obs_on_error(rd_kafka_resp_err_t err, const char *reason,
                       void *opaque);
/* A record goes to the DLQ for `reason`. Any thread. */
void kmq__obs_dlq(kmq__obs_t *o, const char *reason);
/* Samples when due. @locality poll thread */
void kmq__obs_tick(kmq__obs_t *o, int64_t now_ms);
/* KMQ_ERR_FATAL once a fatal error was reported, else KMQ_OK. */
kmq_err_t kmq__obs_fatal(const kmq__obs_t *o);
/* Adds errors and DLQ reasons to a metrics read. Any thread. */
void kmq__obs_fill(const kmq__obs_t *o, kmq_runtime_metrics_t *out);
/* The runtime's obs (runtime.c). */
kmq__obs_t *kmq__runtime_obs(const kmq_runtime_t *rt);
/* The runtime's own fallback store, NULL when none (runtime.c). Valid
 * while the endpoint runs: destroy stops the endpoint first. */
kmq_fallback_t *kmq__runtime_store(const kmq_runtime_t *rt);

/* ---- rendering (metrics_render.c), on the HTTP thread ---- */
void kmq__render_metrics(kmq__sb_t *sb, void *obs);
void kmq__render_stuck(kmq__sb_t *sb, void *obs);
const char *kmq__stall_name(kmq_stall_state_t st);

#endif
