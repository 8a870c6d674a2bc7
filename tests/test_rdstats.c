/* librdkafka's statistics JSON into the metrics snapshot (lib/rdstats.h):
 * which brokers and partitions are kept, the unit conversion, and that bad
 * JSON publishes nothing. The JSON is a trimmed copy of librdkafka 2.0.2's
 * (STATISTICS.md field names). */
#include <check.h>
#include <string.h>

#include "lib/rdstats.h"
#include "testutil.h"

static const char *stats =
    "{\"name\":\"rdkafka#consumer-1\",\"type\":\"consumer\",\"txmsgs\":0,"
    "\"rxmsgs\":1234,"
    "\"brokers\":{"
    " \"127.0.0.1:9092/bootstrap\":{\"name\":\"127.0.0.1:9092/bootstrap\","
    "  \"nodeid\":-1,\"source\":\"configured\",\"rtt\":{\"avg\":0}},"
    " \"GroupCoordinator\":{\"name\":\"GroupCoordinator\",\"nodeid\":1,"
    "  \"source\":\"logical\",\"rtt\":{\"avg\":999}},"
    " \"127.0.0.1:9092/1\":{\"name\":\"127.0.0.1:9092/1\",\"nodeid\":1,"
    "  \"source\":\"learned\",\"rtt\":{\"avg\":2500,\"p99\":9000},"
    "  \"int_latency\":{\"avg\":10},\"outbuf_latency\":{\"avg\":40}}},"
    "\"topics\":{\"wecom-kf\":{\"partitions\":{"
    " \"0\":{\"partition\":0,\"consumer_lag\":17},"
    " \"1\":{\"partition\":1,\"consumer_lag\":-1},"
    " \"-1\":{\"partition\":-1,\"consumer_lag\":-1}}}}}";

START_TEST(key_figures_kept) {
  kmq__rdstats_t st;
  kmq__rdstats_init(&st);
  kmq__rdstats_snap_t s;
  kmq__rdstats_read(&st, &s);
  ck_assert_int_eq(s.updates, 0);
  ck_assert_int_eq(kmq__rdstats_update(&st, stats, strlen(stats)), 0);
  kmq__rdstats_read(&st, &s);
  ck_assert_int_eq(s.updates, 1);
  ck_assert_int_eq(s.rxmsgs, 1234);
  ck_assert_int_eq(s.txmsgs, 0);
  /* The bootstrap entry (nodeid -1) and the logical coordinator alias are
   * left out: only the real broker remains. */
  ck_assert_int_eq(s.nbrokers, 1);
  ck_assert_str_eq(s.brokers[0].name, "127.0.0.1:9092/1");
  ck_assert_double_eq_tol(s.brokers[0].rtt_avg_s, 0.0025, 1e-12);
  ck_assert_double_eq_tol(s.brokers[0].int_latency_avg_s, 0.00001, 1e-12);
  ck_assert_double_eq_tol(s.brokers[0].outbuf_latency_avg_s, 0.00004, 1e-12);
  /* Partition -1 (internal) and a lag of -1 (not consumed) are left out. */
  ck_assert_int_eq(s.nparts, 1);
  ck_assert_str_eq(s.parts[0].topic, "wecom-kf");
  ck_assert_int_eq(s.parts[0].partition, 0);
  ck_assert_int_eq(s.parts[0].consumer_lag, 17);

  /* Bad JSON: refused, the last figures stay published. */
  ck_assert_int_eq(kmq__rdstats_update(&st, "{\"rxmsgs\":", 10), -1);
  kmq__rdstats_read(&st, &s);
  ck_assert_int_eq(s.updates, 1);
  ck_assert_int_eq(s.rxmsgs, 1234);
  kmq__rdstats_free(&st);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rdstats");
  TCase *tc = tcase_create("rdstats");
  tcase_add_test(tc, key_figures_kept);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
