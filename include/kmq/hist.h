/*
 * Latency histogram with bounded relative error (HdrHistogram-style).
 *
 * Values (e.g. microseconds) fall into log-linear buckets: 2^KMQ_HIST_SUB
 * linear sub-buckets per power of two, so any recorded value is reported
 * within 1/2^KMQ_HIST_SUB (3.1%) of itself. Fixed size, no allocation after
 * kmq_hist_new(); kmq_hist_record() is one relaxed atomic add, safe from any
 * thread. Percentile queries read a racy but monotonic snapshot.
 */
#ifndef KMQ_HIST_H
#define KMQ_HIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMQ_HIST_SUB 5

typedef struct kmq_hist_s kmq_hist_t;

/* NULL when out of memory. Destroy with kmq_hist_destroy (NULL no-op). */
kmq_hist_t *kmq_hist_new(void);
void kmq_hist_destroy(kmq_hist_t *h);

/* Records one value (negative values count as 0). Any thread. */
void kmq_hist_record(kmq_hist_t *h, int64_t v);

/* The value at percentile p (0..100], within the relative error; 0 when
 * empty. */
int64_t kmq_hist_percentile(const kmq_hist_t *h, double p);
uint64_t kmq_hist_count(const kmq_hist_t *h);
int64_t kmq_hist_max(const kmq_hist_t *h);
double kmq_hist_mean(const kmq_hist_t *h);

/* Cumulative counts for a Prometheus histogram: counts[i] = values recorded
 * in buckets whose whole range is <= le[i] (le ascending), *total = every
 * value (the +Inf bucket), *sum = their sum. One pass over the buckets, so
 * counts[] never exceed *total even while other threads record; a value
 * within 3.1% below le[i] may be counted only in a later bound (the
 * histogram's resolution). Any thread; no allocation. */
void kmq_hist_cumulative(const kmq_hist_t *h, const int64_t *le, size_t n,
                         uint64_t *counts, uint64_t *total, uint64_t *sum);

/* Zeroes it. Not concurrently with record. */
void kmq_hist_reset(kmq_hist_t *h);

#ifdef __cplusplus
}
#endif
#endif
