/* The exposition and JSON writers of the metrics endpoint
 * (runtime/metrics_expo.h): label and help escaping, UTF-8 repair,
 * cumulative histogram buckets from a kmq_hist, and promtool's verdict on a
 * document written with them. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmq/hist.h"
#include "runtime/metrics_expo.h"
#include "testutil.h"

START_TEST(label_values_are_escaped) {
  kmq__sb_t sb = {0};
  kmq__label_t l[] = {{"user", "a\"b\\c\nd"}, {"topic", "t"}, {NULL, NULL}};
  kmq__expo_int(&sb, "kmq_x", l, 42);
  ck_assert_str_eq(sb.buf, "kmq_x{user=\"a\\\"b\\\\c\\nd\",topic=\"t\"} 42\n");
  free(sb.buf);
}
END_TEST

START_TEST(utf8_kept_and_invalid_bytes_replaced) {
  kmq__sb_t sb = {0};
  /* 客服 (valid), then a lone continuation byte and a truncated sequence. */
  kmq__label_t l[] = {{"u", "\xE5\xAE\xA2\xE6\x9C\x8D-\x80-\xE5\xAE"},
                      {NULL, NULL}};
  kmq__expo_int(&sb, "m", l, 1);
  ck_assert_str_eq(sb.buf, "m{u=\"\xE5\xAE\xA2\xE6\x9C\x8D-\xEF\xBF\xBD-"
                           "\xEF\xBF\xBD\xEF\xBF\xBD\"} 1\n");
  free(sb.buf);
}
END_TEST

START_TEST(help_escapes_backslash_and_newline_not_quotes) {
  kmq__sb_t sb = {0};
  kmq__expo_family(&sb, "kmq_y_total", "counter", "a \"q\" b\\c\nd");
  ck_assert_str_eq(sb.buf, "# HELP kmq_y_total a \"q\" b\\\\c\\nd\n"
                           "# TYPE kmq_y_total counter\n");
  free(sb.buf);
}
END_TEST

START_TEST(json_strings_are_escaped) {
  kmq__sb_t sb = {0};
  kmq__json_str(&sb, "u\"1\\\n\x01", 6);
  ck_assert_str_eq(sb.buf, "\"u\\\"1\\\\\\n\\u0001\"");
  free(sb.buf);
}
END_TEST

START_TEST(doubles_and_specials) {
  kmq__sb_t sb = {0};
  kmq__expo_double(&sb, "a", NULL, 0.25);
  kmq__expo_double(&sb, "b", NULL, 1.0 / 0.0);
  ck_assert_str_eq(sb.buf, "a 0.25\nb +Inf\n");
  free(sb.buf);
}
END_TEST

START_TEST(histogram_buckets_are_cumulative) {
  kmq_hist_t *h = kmq_hist_new();
  /* µs: three of 100 µs, two of 2 ms, one of 50 ms, one of 20 s. */
  int64_t v[] = {100, 100, 100, 2000, 2000, 50000, 20000000};
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
    kmq_hist_record(h, v[i]);
  const double le_s[] = {0.0005, 0.001, 0.01, 0.1, 10};
  int64_t le[5];
  for (int i = 0; i < 5; i++)
    le[i] = (int64_t)(le_s[i] * 1e6 + 0.5);
  uint64_t counts[5], total, sum;
  kmq_hist_cumulative(h, le, 5, counts, &total, &sum);
  ck_assert_uint_eq(counts[0], 3);
  ck_assert_uint_eq(counts[1], 3);
  ck_assert_uint_eq(counts[2], 5);
  ck_assert_uint_eq(counts[3], 6);
  ck_assert_uint_eq(counts[4], 6);
  ck_assert_uint_eq(total, 7);
  ck_assert_uint_eq(sum, 300 + 4000 + 50000 + 20000000);

  kmq__sb_t sb = {0};
  kmq__expo_family(&sb, "kmq_d_seconds", "histogram", "d");
  kmq__label_t l[] = {{"k", "v"}, {NULL, NULL}};
  kmq__expo_histogram(&sb, "kmq_d_seconds", l, le_s, counts, 5, total,
                      (double)sum / 1e6);
  ck_assert_ptr_nonnull(
      strstr(sb.buf, "kmq_d_seconds_bucket{k=\"v\",le=\"0.0005\"} 3\n"));
  ck_assert_ptr_nonnull(
      strstr(sb.buf, "kmq_d_seconds_bucket{k=\"v\",le=\"0.01\"} 5\n"));
  ck_assert_ptr_nonnull(
      strstr(sb.buf, "kmq_d_seconds_bucket{k=\"v\",le=\"+Inf\"} 7\n"));
  ck_assert_ptr_nonnull(strstr(sb.buf, "kmq_d_seconds_count{k=\"v\"} 7\n"));
  ck_assert_ptr_nonnull(
      strstr(sb.buf, "kmq_d_seconds_sum{k=\"v\"} 20.054300000000001\n"));
  /* Every bucket line is >= the one before it. */
  unsigned long long prev = 0;
  int buckets = 0;
  for (const char *p = strstr(sb.buf, "_bucket"); p;
       p = strstr(p + 1, "_bucket")) {
    unsigned long long c = strtoull(strchr(p, '}') + 2, NULL, 10);
    ck_assert_uint_ge(c, prev);
    prev = c;
    buckets++;
  }
  ck_assert_int_eq(buckets, 6);
  free(sb.buf);
  kmq_hist_destroy(h);
}
END_TEST

START_TEST(promtool_accepts_a_document) {
  kmq__sb_t sb = {0};
  kmq__expo_family(&sb, "kmq_things_total", "counter", "Things");
  kmq__label_t l[] = {{"user", "wm\"x\\y\nz\xff"}, {NULL, NULL}};
  kmq__expo_int(&sb, "kmq_things_total", l, 3);
  kmq__expo_family(&sb, "kmq_depth", "gauge", "Depth \"now\"");
  kmq__expo_double(&sb, "kmq_depth", NULL, 1.5);
  kmq_hist_t *h = kmq_hist_new();
  kmq_hist_record(h, 1500);
  const double le_s[] = {0.001, 0.01};
  const int64_t le[] = {1000, 10000};
  uint64_t counts[2], total, sum;
  kmq_hist_cumulative(h, le, 2, counts, &total, &sum);
  kmq__expo_family(&sb, "kmq_lat_seconds", "histogram", "Latency");
  kmq__expo_histogram(&sb, "kmq_lat_seconds", NULL, le_s, counts, 2, total,
                      (double)sum / 1e6);
  kmq_hist_destroy(h);
  ck_assert(!sb.oom);
  char path[] = "/tmp/kmq-expo-unit-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, sb.buf, sb.len), (ssize_t)sb.len);
  close(fd);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "%s check metrics < %s", KMQ_PROMTOOL, path);
  int st = system(cmd);
  unlink(path);
  ck_assert_msg(st == 0, "promtool rejected:\n%s", sb.buf);
  free(sb.buf);
}
END_TEST

int main(void) {
  Suite *s = suite_create("metrics_expo");
  TCase *tc = tcase_create("expo");
  tcase_add_test(tc, label_values_are_escaped);
  tcase_add_test(tc, utf8_kept_and_invalid_bytes_replaced);
  tcase_add_test(tc, help_escapes_backslash_and_newline_not_quotes);
  tcase_add_test(tc, json_strings_are_escaped);
  tcase_add_test(tc, doubles_and_specials);
  tcase_add_test(tc, histogram_buckets_are_cumulative);
  tcase_add_test(tc, promtool_accepts_a_document);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
