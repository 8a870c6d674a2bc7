/* Histogram: percentiles within the stated relative error of the exact
 * answer from a sorted copy. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>

#include "kmq/hist.h"

#include "testutil.h"

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

START_TEST(percentiles_within_relative_error) {
  enum { N = 100000 };
  int64_t *v = malloc(N * sizeof(*v));
  kmq_hist_t *h = kmq_hist_new();
  uint64_t s = 88172645463325252ull;
  for (int i = 0; i < N; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    /* Wide range: 0 .. ~10^9, skewed low like latencies. */
    v[i] = (int64_t)((s % 1000) * (s % 1000) * (s % 1000));
    kmq_hist_record(h, v[i]);
  }
  qsort(v, N, sizeof(*v), cmp);
  const double ps[] = {50, 90, 99, 99.9, 100};
  for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
    int64_t exact = v[(size_t)((ps[k] / 100.0) * N + 0.5) - 1];
    int64_t got = kmq_hist_percentile(h, ps[k]);
    double err = exact ? (double)llabs(got - exact) / (double)exact : got;
    ck_assert_msg(err <= 1.0 / (1 << KMQ_HIST_SUB),
                  "p%.1f: exact %lld, got %lld", ps[k], (long long)exact,
                  (long long)got);
  }
  ck_assert_uint_eq(kmq_hist_count(h), N);
  ck_assert_int_eq(kmq_hist_max(h), v[N - 1]);
  kmq_hist_reset(h);
  ck_assert_int_eq(kmq_hist_percentile(h, 50), 0);
  kmq_hist_destroy(h);
  free(v);
}
END_TEST

enum { T_THREADS = 6, T_PER_THREAD = 20000 };

static void *record_many(void *arg) {
  kmq_hist_t *h = arg;
  for (int64_t i = 1; i <= T_PER_THREAD; i++)
    kmq_hist_record(h, i);
  return NULL;
}

/* Threads record at once (the runtime's workers do): nothing is lost,
 * readers see a monotonic count while they record, never above the final
 * one, and exact figures after. */
START_TEST(threads_add_up) {
  kmq_hist_t *h = kmq_hist_new();
  pthread_t t[T_THREADS];
  for (int i = 0; i < T_THREADS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, record_many, h), 0);
  uint64_t last = 0;
  for (int k = 0; k < 100; k++) {
    uint64_t n = kmq_hist_count(h);
    ck_assert_uint_ge(n, last);
    ck_assert_uint_le(n, (uint64_t)T_THREADS * T_PER_THREAD);
    last = n;
  }
  for (int i = 0; i < T_THREADS; i++)
    pthread_join(t[i], NULL);
  ck_assert_uint_eq(kmq_hist_count(h), (uint64_t)T_THREADS * T_PER_THREAD);
  ck_assert_int_eq(kmq_hist_max(h), T_PER_THREAD);
  /* Each thread recorded 1..T_PER_THREAD: the mean is its midpoint, the
   * median too (within the resolution). */
  ck_assert(kmq_hist_mean(h) == (T_PER_THREAD + 1) / 2.0);
  int64_t p50 = kmq_hist_percentile(h, 50);
  ck_assert_msg(llabs(p50 - T_PER_THREAD / 2) <=
                    T_PER_THREAD / 2 / (1 << KMQ_HIST_SUB),
                "p50 %lld", (long long)p50);
  const int64_t le[] = {T_PER_THREAD / 4, 2 * T_PER_THREAD};
  uint64_t counts[2], total, sum;
  kmq_hist_cumulative(h, le, 2, counts, &total, &sum);
  ck_assert_uint_eq(total, (uint64_t)T_THREADS * T_PER_THREAD);
  ck_assert_uint_eq(counts[1], total);
  ck_assert_uint_eq(sum, (uint64_t)T_THREADS * T_PER_THREAD *
                             (T_PER_THREAD + 1) / 2);
  kmq_hist_destroy(h);
}
END_TEST

int main(void) {
  Suite *s = suite_create("hist");
  TCase *tc = tcase_create("hist");
  tcase_add_test(tc, percentiles_within_relative_error);
  tcase_add_test(tc, threads_add_up);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
