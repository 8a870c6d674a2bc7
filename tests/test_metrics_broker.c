/* Metrics are read from any thread (issue 10, item 5): a reader thread
 * calls kmq_runtime_metrics() and kmq_consumer_stats() as fast as it can
 * while a runtime consumes on the real broker; the cumulative counts it sees
 * must only grow, and the run must be clean under ASan+UBSan and
 * ThreadSanitizer (the TSan pass; librdkafka's C11 threads, which TSan does
 * not intercept, are started through pthread_create there: tests/
 * tsan_c11.c). Every counter these calls read is an atomic written with a
 * relaxed store or add (lib/consumer_int.h, lib/committer.h,
 * runtime/runtime_int.h, scheduler/sched_int.h). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "kmq/runtime.h"
#include "brokerutil.h"
#include "testutil.h"
#include "traffic.h"

#define USERS 50
#define PER 20

static char topic[96], group[64];

typedef struct {
  kmq_runtime_t *rt;
  atomic_int stop;
  atomic_llong reads;
  atomic_int went_back; /* a cumulative counter decreased between reads */
} reader_t;

static void *reader_main(void *arg) {
  reader_t *r = arg;
  kmq_runtime_metrics_t prev;
  memset(&prev, 0, sizeof(prev));
  while (!atomic_load(&r->stop)) {
    kmq_runtime_metrics_t mx;
    kmq_runtime_metrics(r->rt, &mx);
    kmq_consumer_stats_t cs;
    kmq_consumer_stats(kmq_runtime_consumer(r->rt), &cs);
    if (mx.processed < prev.processed || mx.dispatched < prev.dispatched ||
        mx.committed_offsets < prev.committed_offsets)
      atomic_store(&r->went_back, 1);
    prev = mx;
    atomic_fetch_add(&r->reads, 1);
  }
  return NULL;
}

static kmq_proc_result_t count(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                               void *opaque) {
  (void)msg;
  (void)ctx;
  atomic_fetch_add((atomic_int *)opaque, 1);
  return KMQ_PROC_OK;
}

START_TEST(metrics_read_while_the_pipeline_runs) {
  char errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-metrics");
  kt_unique_name(group, sizeof(group), "kmq-metrics");
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", kt_bootstrap()}, {"kmq.topic", topic},
      {"group.id", group},                   {"kmq.sched.workers", "2"},
      {"kmq.commit.interval.ms", "50"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                  "%s", errstr);
  kt_create_topics(topic, 2, NULL);
  kt_produce_traffic(topic, USERS, PER);

  atomic_int processed = 0;
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, count, &processed), KMQ_OK);
  kmq_runtime_t *rt =
      kmq_runtime_new(c, reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  reader_t r = {.rt = rt};
  pthread_t th;
  pthread_create(&th, NULL, reader_main, &r);
  int64_t deadline = kt_now_ms() + 120000;
  kmq_runtime_metrics_t mx;
  do {
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
    kmq_runtime_metrics(rt, &mx);
  } while (mx.processed < USERS * PER && kt_now_ms() < deadline);
  atomic_store(&r.stop, 1);
  pthread_join(th, NULL);
  ck_assert_int_eq(mx.processed, USERS * PER);
  ck_assert_int_gt(atomic_load(&r.reads), 0);
  ck_assert_int_eq(atomic_load(&r.went_back), 0);
  kmq_runtime_destroy(rt);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("metrics_broker");
  TCase *tc = tcase_create("metrics");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, metrics_read_while_the_pipeline_runs);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
