/* Log-linear histogram: bucket = (exponent, top KMQ_HIST_SUB mantissa bits). */
#include "kmq/hist.h"

#include <stdatomic.h>
#include <stdlib.h>

#define SUBS (1 << KMQ_HIST_SUB)
/* Exponents 0..63 of a 64-bit value, SUBS slots each. */
#define NBUCKETS (64 * SUBS)

struct kmq_hist_s {
  /* Relaxed: counters are independent; readers accept a racy snapshot. */
  atomic_ullong b[NBUCKETS];
  atomic_ullong count, sum;
  atomic_llong max;
};

kmq_hist_t *kmq_hist_new(void) { return calloc(1, sizeof(kmq_hist_t)); }
void kmq_hist_destroy(kmq_hist_t *h) { free(h); }

static inline int kmq__bucket(uint64_t v) {
  if (v < SUBS)
    return (int)v; /* exact below SUBS */
  int e = 63 - __builtin_clzll(v); /* e >= KMQ_HIST_SUB */
  int shift = e - KMQ_HIST_SUB;
  int sub = (int)((v >> shift) & (SUBS - 1));
  return (shift + 1) * SUBS + sub;
}

/* Upper bound of a bucket's range: the value reported for it. */
static inline int64_t kmq__bucket_value(int i) {
  if (i < SUBS)
    return i;
  int shift = i / SUBS - 1;
  uint64_t sub = (uint64_t)(i % SUBS);
  uint64_t lo = ((uint64_t)SUBS | sub) << shift;
  return (int64_t)(lo + ((uint64_t)1 << shift) - 1);
}

void kmq_hist_record(kmq_hist_t *h, int64_t v) {
  if (v < 0)
    v = 0;
  atomic_fetch_add_explicit(&h->b[kmq__bucket((uint64_t)v)], 1,
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum, (unsigned long long)v,
                            memory_order_relaxed);
  long long m = atomic_load_explicit(&h->max, memory_order_relaxed);
  while (v > m && !atomic_compare_exchange_weak_explicit(
                      &h->max, &m, v, memory_order_relaxed,
                      memory_order_relaxed))
    ;
}

uint64_t kmq_hist_count(const kmq_hist_t *h) {
  return atomic_load_explicit(&h->count, memory_order_relaxed);
}

int64_t kmq_hist_max(const kmq_hist_t *h) {
  return atomic_load_explicit(&h->max, memory_order_relaxed);
}

double kmq_hist_mean(const kmq_hist_t *h) {
  uint64_t n = kmq_hist_count(h);
  return n ? (double)atomic_load_explicit(&h->sum, memory_order_relaxed) /
                 (double)n
           : 0.0;
}

int64_t kmq_hist_percentile(const kmq_hist_t *h, double p) {
  uint64_t total = 0;
  for (int i = 0; i < NBUCKETS; i++)
    total += atomic_load_explicit(&h->b[i], memory_order_relaxed);
  if (!total)
    return 0;
  uint64_t rank = (uint64_t)((p / 100.0) * (double)total + 0.5);
  if (rank < 1)
    rank = 1;
  if (rank > total)
    rank = total;
  uint64_t seen = 0;
  for (int i = 0; i < NBUCKETS; i++) {
    seen += atomic_load_explicit(&h->b[i], memory_order_relaxed);
    if (seen >= rank) {
      int64_t v = kmq__bucket_value(i), mx = kmq_hist_max(h);
      return v < mx ? v : mx;
    }
  }
  return kmq_hist_max(h);
}

void kmq_hist_reset(kmq_hist_t *h) {
  for (int i = 0; i < NBUCKETS; i++)
    atomic_store_explicit(&h->b[i], 0, memory_order_relaxed);
  atomic_store(&h->count, 0);
  atomic_store(&h->sum, 0);
  atomic_store(&h->max, 0);
}

void kmq_hist_cumulative(const kmq_hist_t *h, const int64_t *le, size_t n,
                         uint64_t *counts, uint64_t *total, uint64_t *sum) {
  uint64_t seen = 0;
  size_t j = 0;
  for (int i = 0; i < NBUCKETS; i++) {
    int64_t top = kmq__bucket_value(i);
    /* Bucket values grow with i: every bound below this bucket's top is
     * complete. */
    while (j < n && top > le[j])
      counts[j++] = seen;
    seen += atomic_load_explicit(&h->b[i], memory_order_relaxed);
  }
  while (j < n)
    counts[j++] = seen;
  *total = seen;
  *sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
}
