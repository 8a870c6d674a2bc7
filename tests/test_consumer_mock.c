/* The consumer's record slab on librdkafka's mock cluster: each record in
 * flight has an area of its own (hooks.record_size, kmq_ack_data), aligned
 * for any type, valid until its ack; a record reused after its ack has a
 * new generation, and the old handle is then a no-op (kmq_ack,
 * kmq_ack_data, kmq_ack_revoked). The plain style is an adapter over the
 * ack path: it uses the same records (one at a time here) and never runs
 * out of them. */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kmq/consumer.h"
#include "testutil.h"

#define N 20
#define INFLIGHT 4
#define AREA 40 /* not a multiple of alignof(max_align_t) */

typedef struct {
  rd_kafka_t *rk;
  rd_kafka_mock_cluster_t *mc;
  char topic[64];
} mock_t;

static void mock_up(mock_t *m) {
  char errstr[256];
  m->mc = kt_mock_cluster_new(1, &m->rk);
  kt_unique_name(m->topic, sizeof(m->topic), "slab");
  ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, m->topic, 1, 1), 0);
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  ck_assert_int_eq(rd_kafka_conf_set(pc, "bootstrap.servers",
                                     rd_kafka_mock_cluster_bootstraps(m->mc),
                                     errstr, sizeof(errstr)),
                   RD_KAFKA_CONF_OK);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  for (int i = 0; i < N; i++) {
    char v[16];
    snprintf(v, sizeof(v), "v%d", i);
    ck_assert_int_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(m->topic),
                                       RD_KAFKA_V_KEY("u", 1),
                                       RD_KAFKA_V_VALUE(v, strlen(v)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END),
                     0);
  }
  ck_assert_int_eq(rd_kafka_flush(p, 10000), 0);
  rd_kafka_destroy(p);
}

static void mock_down(mock_t *m) {
  rd_kafka_mock_cluster_destroy(m->mc);
  rd_kafka_destroy(m->rk);
}

static kmq_consumer_t *consumer(mock_t *m, const char *inflight,
                                size_t record_size) {
  char errstr[256], group[64];
  kt_unique_name(group, sizeof(group), "g");
  kmq_conf_t *conf = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(conf, "bootstrap.servers",
                                rd_kafka_mock_cluster_bootstraps(m->mc),
                                errstr, sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(conf, "group.id", group, errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(conf, "kmq.max.inflight", inflight, errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  kmq_consumer_hooks_t hooks = {.record_size = record_size};
  kmq_consumer_t *c = kmq_consumer_new(conf, &hooks, errstr, sizeof(errstr));
  ck_assert_msg(c, "%s", errstr);
  kmq_conf_destroy(conf);
  const char *topics[] = {m->topic};
  ck_assert_int_eq(kmq_consumer_subscribe(c, topics, 1), KMQ_OK);
  return c;
}

static int64_t stat_in_flight(kmq_consumer_t *c) {
  kmq_consumer_stats_t st;
  kmq_consumer_stats(c, &st);
  return st.in_flight;
}

typedef struct {
  kmq_ack_t acks[N];
  unsigned char *areas[N];
  int64_t offsets[N];
  int n;
  int ack_now; /* ack in the handler (after checking the area) */
  int null_area;
} taken_t;

static kmq_err_t take(const rd_kafka_message_t *m, kmq_ack_t ack,
                      void *opaque) {
  taken_t *t = opaque;
  ck_assert_int_lt(t->n, N);
  unsigned char *a = kmq_ack_data(ack);
  if (t->null_area) {
    ck_assert_ptr_null(a);
  } else {
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq((uintptr_t)a % alignof(max_align_t), 0);
    /* Every byte is ours until the ack. */
    memset(a, (int)(m->offset & 0x7f) + 1, AREA);
  }
  t->acks[t->n] = ack;
  t->areas[t->n] = a;
  t->offsets[t->n] = m->offset;
  t->n++;
  if (t->ack_now)
    kmq_ack(ack, 1);
  return KMQ_OK;
}

static int area_is(const unsigned char *a, int64_t offset) {
  for (int i = 0; i < AREA; i++)
    if (a[i] != (unsigned char)((offset & 0x7f) + 1))
      return 0;
  return 1;
}

START_TEST(each_record_has_its_own_area_until_its_ack) {
  mock_t m;
  mock_up(&m);
  kmq_consumer_t *c = consumer(&m, "4", AREA);
  taken_t t = {0};
  int64_t deadline = kt_now_ms() + 30000;
  while (t.n < INFLIGHT && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 100);
  ck_assert_int_eq(t.n, INFLIGHT);
  /* The budget is full: nothing more is taken while none is acked. */
  for (int i = 0; i < 5; i++)
    kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 20);
  ck_assert_int_eq(t.n, INFLIGHT);
  ck_assert_int_eq(stat_in_flight(c), INFLIGHT);
  /* One area per record, apart, each kept as its holder wrote it. */
  for (int i = 0; i < INFLIGHT; i++) {
    ck_assert(area_is(t.areas[i], t.offsets[i]));
    ck_assert_ptr_eq(kmq_ack_data(t.acks[i]), t.areas[i]);
    for (int j = 0; j < i; j++) {
      unsigned char *lo = t.areas[i] < t.areas[j] ? t.areas[i] : t.areas[j];
      unsigned char *hi = t.areas[i] < t.areas[j] ? t.areas[j] : t.areas[i];
      ck_assert(lo + AREA <= hi);
    }
  }

  /* Acked: the handle is no longer current. */
  kmq_ack_t old = t.acks[0];
  kmq_ack(old, 1);
  ck_assert_ptr_null(kmq_ack_data(old));
  /* The next poll frees the record and gives it to the next message:
   * same record (the free stack is LIFO), new generation. */
  deadline = kt_now_ms() + 10000;
  while (t.n < INFLIGHT + 1 && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 100);
  ck_assert_int_eq(t.n, INFLIGHT + 1);
  kmq_ack_t reused = t.acks[INFLIGHT];
  ck_assert_uint_eq(reused.slot, old.slot);
  ck_assert_uint_ne(reused.gen, old.gen);
  ck_assert_ptr_eq(t.areas[INFLIGHT], t.areas[0]);
  ck_assert(area_is(t.areas[INFLIGHT], t.offsets[INFLIGHT]));
  /* The stale handle touches nothing of the new record. */
  ck_assert_ptr_null(kmq_ack_data(old));
  ck_assert(kmq_ack_revoked(old));
  ck_assert(!kmq_ack_begin(old));
  kmq_ack(old, 1);
  kmq_ack_stuck(old, 1);
  kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 20);
  ck_assert_int_eq(stat_in_flight(c), INFLIGHT);
  ck_assert_ptr_eq(kmq_ack_data(reused), t.areas[INFLIGHT]);
  ck_assert(!kmq_ack_revoked(reused));

  /* The rest goes through acked in the handler. */
  for (int i = 1; i <= INFLIGHT; i++)
    kmq_ack(t.acks[i], 1);
  t.ack_now = 1;
  deadline = kt_now_ms() + 30000;
  while (t.n < N && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 100);
  ck_assert_int_eq(t.n, N);
  kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 0);
  kmq_consumer_stats_t st;
  kmq_consumer_stats(c, &st);
  ck_assert_int_eq(st.in_flight, 0);
  ck_assert_int_eq(st.finished, N);
  ck_assert_int_eq(st.unfinished, 0);
  ck_assert_int_eq(st.dispatched, N);
  kmq_consumer_destroy(c);
  mock_down(&m);
}
END_TEST

typedef struct {
  int n;
} plain_t;

static kmq_err_t plain(const rd_kafka_message_t *m, void *opaque) {
  plain_t *p = opaque;
  p->n++;
  return m->offset == 3 ? KMQ_ERR_INVALID_ARG : KMQ_OK;
}

START_TEST(the_plain_style_uses_the_records_and_never_runs_out) {
  mock_t m;
  mock_up(&m);
  /* One record for the whole batch: the plain handler's acks are drained
   * as soon as the record is needed again. No area asked for. */
  kmq_consumer_t *c = consumer(&m, "1", 0);
  plain_t p = {0};
  int64_t deadline = kt_now_ms() + 30000;
  while (p.n < N / 2 && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch(c, plain, &p, 100);
  ck_assert_int_ge(p.n, N / 2);
  ck_assert_int_eq(stat_in_flight(c), 0);
  taken_t t = {.ack_now = 1, .null_area = 1, .n = p.n};
  while (t.n < N && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 100);
  ck_assert_int_eq(t.n, N);
  kmq_consumer_poll_and_dispatch_with_ack(c, take, &t, 0);
  kmq_consumer_stats_t st;
  kmq_consumer_stats(c, &st);
  ck_assert_int_eq(st.dispatched, N);
  ck_assert_int_eq(st.finished, N - 1);
  ck_assert_int_eq(st.unfinished, 1);
  ck_assert_int_eq(st.in_flight, 0);
  ck_assert_int_eq(st.backpressured, 0);
  kmq_consumer_destroy(c);
  mock_down(&m);
}
END_TEST

START_TEST(an_area_too_large_fails_the_constructor) {
  char errstr[256];
  kmq_conf_t *conf = kmq_conf_new();
  kmq_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", errstr,
               sizeof(errstr));
  kmq_conf_set(conf, "group.id", "g", errstr, sizeof(errstr));
  kmq_consumer_hooks_t hooks = {.record_size = SIZE_MAX / 2};
  errstr[0] = '\0';
  ck_assert_ptr_null(kmq_consumer_new(conf, &hooks, errstr, sizeof(errstr)));
  ck_assert_ptr_nonnull(strstr(errstr, "record_size"));
  kmq_conf_destroy(conf);
  /* A handle of no consumer: no area. */
  kmq_ack_t none = {0};
  ck_assert_ptr_null(kmq_ack_data(none));
}
END_TEST

int main(void) {
  Suite *s = suite_create("consumer_mock");
  TCase *tc = tcase_create("records");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, each_record_has_its_own_area_until_its_ack);
  tcase_add_test(tc, the_plain_style_uses_the_records_and_never_runs_out);
  tcase_add_test(tc, an_area_too_large_fails_the_constructor);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
