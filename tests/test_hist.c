/* Histogram: percentiles within the stated relative error of the exact
 * answer from a sorted copy. */
#include <check.h>
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

int main(void) {
  Suite *s = suite_create("hist");
  TCase *tc = tcase_create("hist");
  tcase_add_test(tc, percentiles_within_relative_error);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
