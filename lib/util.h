/* Internal helpers of the Kafka layer (kmq__ prefix: not public API). */
#ifndef KMQ_LIB_UTIL_H
#define KMQ_LIB_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

/* Wall clock, ms since the epoch. */
int64_t kmq__wall_ms(void);
/* The cache line size that structs written by several threads align
 * their groups of fields to. */
#define KMQ__CACHELINE 64
/* size bytes, zeroed, aligned to KMQ__CACHELINE (the size rounded up to
 * it, as aligned_alloc wants): for a struct with _Alignas(KMQ__CACHELINE)
 * members. NULL when out of memory; free() frees it. */
void *kmq__zalloc_lines(size_t size);
/* Monotonic clock, ms. */
int64_t kmq__mono_ms(void);
/* *ts = CLOCK_MONOTONIC now + ms (ms >= 0): the deadline of a
 * pthread_cond_timedwait on a condition variable set to that clock. */
struct timespec;
void kmq__mono_deadline(struct timespec *ts, int64_t ms);
/* RFC 3339 UTC with milliseconds into buf (at least 32 bytes). */
void kmq__rfc3339(int64_t wall_ms, char *buf, size_t size);
/* Base64 (RFC 4648, padded) of in into a new NUL-terminated string the caller
 * frees; NULL when out of memory. */
char *kmq__base64(const void *in, size_t len, size_t *out_len);
/* Decodes base64 into a new buffer the caller frees (*out_len bytes); NULL
 * on a character outside the alphabet or out of memory. */
unsigned char *kmq__unbase64(const char *in, size_t *out_len);

/* A thread that serves one client's callbacks with rd_kafka_poll() until
 * stopped: delivery reports, errors and statistics. */
typedef struct {
  rd_kafka_t *rk;
  pthread_t thread;
  atomic_int stop;
  int running;
} kmq__poller_t;

int kmq__poller_start(kmq__poller_t *p, rd_kafka_t *rk);

/* Hands every message still queued in rk its delivery report within what
 * is left until deadline_ms (monotonic): flushes until then, then purges
 * what is left (queued and in flight: each gets an error report) and
 * serves those reports. Serving purged reports is not cut short by the
 * deadline (it costs one callback each, no network wait), but is capped at
 * KMQ__PURGE_SERVE_MS. @locality the owner, after its poller stopped */
#define KMQ__PURGE_SERVE_MS 2000
void kmq__flush_then_purge(rd_kafka_t *rk, int64_t deadline_ms);
/* Joins the thread; callbacks are served by the caller from then on. */
void kmq__poller_stop(kmq__poller_t *p);

/* Logs "%KMQ|<level>|<who>: <message>" to stderr, like librdkafka's default
 * logger, so that both interleave readably. */
void kmq__log(const char *level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
