/* Producer fault injection on librdkafka's mock cluster: every failed
 * delivery is in the DLQ with its key, headers and reason; a DLQ failure
 * reaches the fallback hook; a fatal idempotence error replaces the instance
 * without losing a message. The main topic's partitions are led by broker 1
 * and the DLQ's by broker 2, so faults hit one and not the other. */
#include <check.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/producer.h"
#include "testutil.h"

#define NMSG 200
#define NPART 4

typedef struct {
  rd_kafka_t *rk;
  rd_kafka_mock_cluster_t *mc;
  const char *bs;
  char topic[64], dlq[72];
} mock_t;

static void mock_up(mock_t *m) {
  m->mc = kt_mock_cluster_new(2, &m->rk);
  m->bs = rd_kafka_mock_cluster_bootstraps(m->mc);
  kt_unique_name(m->topic, sizeof(m->topic), "main");
  snprintf(m->dlq, sizeof(m->dlq), "%s.dlq", m->topic);
  ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, m->topic, NPART, 1), 0);
  ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, m->dlq, NPART, 1), 0);
  for (int p = 0; p < NPART; p++) {
    rd_kafka_mock_partition_set_leader(m->mc, m->topic, p, 1);
    rd_kafka_mock_partition_set_leader(m->mc, m->dlq, p, 2);
  }
}

static void mock_down(mock_t *m) {
  rd_kafka_mock_cluster_destroy(m->mc);
  rd_kafka_destroy(m->rk);
}

typedef struct {
  atomic_int status[NMSG]; /* kmq_delivery_status_t + 1; 0 = none yet */
  atomic_int reports;
  atomic_int fallback_calls;
  int fallback_fails;
  char fallback_keys[NMSG][32];
} track_t;

static void dr_cb(const kmq_delivery_t *d, void *opaque) {
  track_t *t = opaque;
  int i = (int)(intptr_t)d->opaque;
  /* Exactly one report per message. */
  int prev = atomic_exchange(&t->status[i], (int)d->status + 1);
  ck_assert_msg(prev == 0, "message %d reported twice", i);
  atomic_fetch_add(&t->reports, 1);
}

static kmq_err_t fallback_cb(const kmq_fallback_record_t *r, void *opaque) {
  track_t *t = opaque;
  int n = atomic_fetch_add(&t->fallback_calls, 1);
  if (t->fallback_fails)
    return KMQ_ERR_IO;
  ck_assert_int_lt(n, NMSG);
  snprintf(t->fallback_keys[n], sizeof(t->fallback_keys[n]), "%.*s",
           (int)r->key_len, (const char *)r->key);
  /* The fallback gets the full DLQ envelope, replayable as is. */
  json_t *j = json_loadb(r->value, r->value_len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  ck_assert_str_eq(json_string_value(json_object_get(j, "reason")),
                   "delivery_failed");
  json_decref(j);
  return KMQ_OK;
}

static kmq_conf_t *make_conf(const mock_t *m, int timeout_ms) {
  char errstr[256], v[32];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(c, "bootstrap.servers", m->bs, errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.topic", m->topic, errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  snprintf(v, sizeof(v), "%d", timeout_ms);
  ck_assert_int_eq(kmq_conf_set(c, "message.timeout.ms", v, errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.flush.timeout.ms", "20000", errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  return c;
}

/* A producer reporting into t; with_fallback: fallback_cb stores into t. */
static kmq_producer_t *new_producer(const kmq_conf_t *c, track_t *t,
                                    int with_fallback) {
  char errstr[512];
  kmq_producer_t *p =
      kmq_producer_new(c, dr_cb, t, with_fallback ? fallback_cb : NULL,
                       with_fallback ? t : NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  return p;
}

static void send_all(kmq_producer_t *p, int from, int to) {
  for (int i = from; i < to; i++) {
    char key[32], val[64], id[32];
    snprintf(key, sizeof(key), "wm-user-%03d", i);
    snprintf(val, sizeof(val), "{\"seq\":%d,\"text\":\"你好 %d\"}", i, i);
    snprintf(id, sizeof(id), "msg-%d", i);
    kmq_produce_msg_t msg = {.key = key, .key_len = strlen(key),
                             .value = val, .value_len = strlen(val),
                             .msg_type = "text", .msg_id = id,
                             .opaque = (void *)(intptr_t)i};
    ck_assert_int_eq(kmq_producer_send(p, &msg, NULL), KMQ_OK);
  }
}

typedef struct {
  int seen[NMSG];
  const char *topic;
  const char *expect_kafka_error;
} dlq_check_t;

static void check_dlq_msg(const rd_kafka_message_t *m, void *opaque) {
  dlq_check_t *dc = opaque;
  char key[64], h[128];
  snprintf(key, sizeof(key), "%.*s", (int)m->key_len, (const char *)m->key);
  int i;
  ck_assert_int_eq(sscanf(key, "wm-user-%d", &i), 1);
  ck_assert(i >= 0 && i < NMSG);
  dc->seen[i]++;
  /* Original headers kept, DLQ headers added. */
  ck_assert_str_eq(kt_header(m, "msg_type", h, sizeof(h)), "text");
  char id[32];
  snprintf(id, sizeof(id), "msg-%d", i);
  ck_assert_str_eq(kt_header(m, "msg_id", h, sizeof(h)), id);
  ck_assert_str_eq(kt_header(m, "user_id", h, sizeof(h)), key);
  ck_assert_str_eq(kt_header(m, "dlq_reason", h, sizeof(h)),
                   "delivery_failed");
  ck_assert_str_eq(kt_header(m, "dlq_source", h, sizeof(h)), "producer");
  ck_assert_int_gt(atoll(kt_header(m, "dlq_timestamp", h, sizeof(h))), 0);
  json_error_t je;
  json_t *j = json_loadb(m->payload, m->len, 0, &je);
  ck_assert_msg(j, "DLQ value is not JSON: %s", je.text);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "version")), 1);
  ck_assert_str_eq(json_string_value(json_object_get(j, "original_topic")),
                   dc->topic);
  ck_assert_str_eq(json_string_value(json_object_get(j, "reason")),
                   "delivery_failed");
  ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "error")));
  ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "failed_at")));
  ck_assert(json_is_null(json_object_get(j, "original_offset")));
  if (dc->expect_kafka_error)
    ck_assert_str_eq(json_string_value(json_object_get(j, "kafka_error")),
                     dc->expect_kafka_error);
  char val[64];
  snprintf(val, sizeof(val), "{\"seq\":%d,\"text\":\"你好 %d\"}", i, i);
  ck_assert_str_eq(json_string_value(json_object_get(j, "payload")), val);
  json_decref(j);
}

static void assert_all_in_dlq(const mock_t *m, const char *kerr, int n) {
  dlq_check_t *dc = calloc(1, sizeof(*dc));
  dc->topic = m->topic;
  dc->expect_kafka_error = kerr;
  int got = kt_read_topic(m->bs, m->dlq, n, 30000, check_dlq_msg, dc);
  ck_assert_int_eq(got, n);
  for (int i = 0; i < n; i++)
    ck_assert_msg(dc->seen[i] == 1, "message %d seen %d times in the DLQ", i,
                  dc->seen[i]);
  free(dc);
}

START_TEST(produce_errors_go_to_dlq) {
  mock_t m;
  mock_up(&m);
  /* Permanent errors on every Produce request broker 1 gets. */
  for (int i = 0; i < 400; i++)
    rd_kafka_mock_broker_push_request_error_rtts(
        m.mc, 1, KT_API_PRODUCE, 1,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 0);
  kmq_conf_t *c = make_conf(&m, 10000);
  track_t *t = calloc(1, sizeof(*t));
  kmq_producer_t *p = new_producer(c, t, 0);
  send_all(p, 0, NMSG);
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  ck_assert_int_eq(st.produced, NMSG);
  ck_assert_int_eq(st.failed, NMSG);
  ck_assert_int_eq(st.dlq, NMSG);
  ck_assert_int_eq(st.lost, 0);
  for (int i = 0; i < NMSG; i++)
    ck_assert_int_eq(atomic_load(&t->status[i]), KMQ_DELIVERY_DLQ + 1);
  kmq_producer_destroy(p);
  assert_all_in_dlq(&m, "TOPIC_AUTHORIZATION_FAILED", NMSG);
  kmq_conf_destroy(c);
  free(t);
  mock_down(&m);
}
END_TEST

START_TEST(broker_down_until_timeout_goes_to_dlq) {
  mock_t m;
  mock_up(&m);
  rd_kafka_mock_broker_set_down(m.mc, 1);
  kmq_conf_t *c = make_conf(&m, 3000);
  track_t *t = calloc(1, sizeof(*t));
  kmq_producer_t *p = new_producer(c, t, 0);
  send_all(p, 0, NMSG);
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  ck_assert_int_eq(st.dlq, NMSG);
  ck_assert_int_eq(st.delivered, 0);
  kmq_producer_destroy(p);
  assert_all_in_dlq(&m, "_MSG_TIMED_OUT", NMSG);
  kmq_conf_destroy(c);
  free(t);
  mock_down(&m);
}
END_TEST

START_TEST(dlq_down_goes_to_fallback) {
  mock_t m;
  mock_up(&m);
  rd_kafka_mock_broker_set_down(m.mc, 1);
  rd_kafka_mock_broker_set_down(m.mc, 2);
  kmq_conf_t *c = make_conf(&m, 2000);
  track_t *t = calloc(1, sizeof(*t));
  kmq_producer_t *p = new_producer(c, t, 1);
  send_all(p, 0, NMSG);
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  ck_assert_int_eq(st.fallback, NMSG);
  ck_assert_int_eq(st.lost, 0);
  ck_assert_int_eq(atomic_load(&t->fallback_calls), NMSG);
  for (int i = 0; i < NMSG; i++)
    ck_assert_int_eq(atomic_load(&t->status[i]), KMQ_DELIVERY_FALLBACK + 1);
  /* Every key reached the hook once. */
  int found[NMSG] = {0};
  for (int i = 0; i < NMSG; i++) {
    int k;
    ck_assert_int_eq(sscanf(t->fallback_keys[i], "wm-user-%d", &k), 1);
    found[k]++;
  }
  for (int i = 0; i < NMSG; i++)
    ck_assert_int_eq(found[i], 1);
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
  free(t);
  mock_down(&m);
}
END_TEST

START_TEST(no_fallback_is_reported_lost) {
  mock_t m;
  mock_up(&m);
  rd_kafka_mock_broker_set_down(m.mc, 1);
  rd_kafka_mock_broker_set_down(m.mc, 2);
  kmq_conf_t *c = make_conf(&m, 1500);
  track_t *t = calloc(1, sizeof(*t));
  kmq_producer_t *p = new_producer(c, t, 0);
  send_all(p, 0, 20);
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  /* Not silent: each one is reported LOST to the application and counted. */
  ck_assert_int_eq(st.lost, 20);
  for (int i = 0; i < 20; i++)
    ck_assert_int_eq(atomic_load(&t->status[i]), KMQ_DELIVERY_LOST + 1);
  kmq_dlq_stats_t ds;
  kmq_dlq_stats(kmq_producer_dlq(p), &ds);
  ck_assert_int_eq(ds.lost, 20);
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
  free(t);
  mock_down(&m);
}
END_TEST

/* kmq_producer_destroy() is bounded by kmq.flush.timeout.ms as a whole
 * (main instance and DLQ together), and every message has its outcome when
 * it returns, even with nothing reachable. Before issue 10 the main flush
 * and the DLQ flush each took the whole bound (60 s for 30 s). */
START_TEST(destroy_is_bounded_with_broker_unreachable) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      /* Nothing listens on port 1. */
      {"bootstrap.servers", "127.0.0.1:1"},
      {"kmq.topic", "unreachable"},
      {"message.timeout.ms", "300000"},
      {"kmq.flush.timeout.ms", "4000"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                  "%s", errstr);
  track_t *t = calloc(1, sizeof(*t));
  kmq_producer_t *p = new_producer(c, t, 0);
  send_all(p, 0, 20);
  int64_t t0 = kt_now_ms();
  kmq_producer_destroy(p);
  int64_t took = kt_now_ms() - t0;
  fprintf(stderr, "[destroy] took %lld ms with kmq.flush.timeout.ms=4000\n",
          (long long)took);
  /* The bound, plus the documented time to run purged callbacks (2 s per
   * client at most; here they take milliseconds). */
  ck_assert_msg(took < 4000 + 1500, "destroy took %lld ms", (long long)took);
  ck_assert_int_eq(atomic_load(&t->reports), 20);
  for (int i = 0; i < 20; i++)
    ck_assert_int_eq(atomic_load(&t->status[i]), KMQ_DELIVERY_LOST + 1);
  kmq_conf_destroy(c);
  free(t);
}
END_TEST

static bool fatal_seen(void *p) {
  char buf[256];
  return kmq_producer_last_fatal(p, buf, sizeof(buf)) == KMQ_OK;
}

START_TEST(fatal_error_replaces_instance_without_loss) {
  mock_t m;
  mock_up(&m);
  kmq_conf_t *c = make_conf(&m, 10000);
  track_t *t = calloc(1, sizeof(*t));
  char errstr[512];
  kmq_producer_t *p = new_producer(c, t, 0);
  send_all(p, 0, NMSG / 2);
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
  ck_assert_int_eq(kmq_producer_last_fatal(p, errstr, sizeof(errstr)),
                   KMQ_ERR_NOT_FOUND);
  ck_assert_int_eq(
      rd_kafka_test_fatal_error(kmq_producer_rk(p),
                                RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                "injected by test"),
      0);
  /* The error callback runs on the poll thread: wait for it to be seen. */
  ck_assert(kt_wait_until(fatal_seen, p, 10000));
  ck_assert_int_eq(kmq_producer_last_fatal(p, errstr, sizeof(errstr)), KMQ_OK);
  ck_assert_msg(strstr(errstr, "OUT_OF_ORDER_SEQUENCE_NUMBER"), "%s", errstr);
  send_all(p, NMSG / 2, NMSG);
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  ck_assert_int_eq(st.fatal_resets, 1);
  ck_assert_int_eq(st.produced, NMSG);
  ck_assert_int_eq(st.delivered + st.dlq, NMSG);
  ck_assert_int_eq(st.lost, 0);
  ck_assert_int_eq(atomic_load(&t->reports), NMSG);
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
  free(t);
  mock_down(&m);
}
END_TEST

START_TEST(bad_configuration_is_refused) {
  char errstr[512];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(c, "no.such.property", "1", errstr,
                                sizeof(errstr)),
                   KMQ_ERR_CONF_UNKNOWN);
  ck_assert_msg(strstr(errstr, "no.such.property"), "%s", errstr);
  ck_assert_int_eq(kmq_conf_set(c, "acks", "banana", errstr, sizeof(errstr)),
                   KMQ_ERR_CONF_INVALID);
  ck_assert_int_eq(kmq_conf_set(c, "producer.linger.ms", "-5", errstr,
                                sizeof(errstr)),
                   KMQ_ERR_CONF_INVALID);
  /* No topic: the DLQ cannot be named. */
  ck_assert_ptr_null(
      kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr, sizeof(errstr)));
  ck_assert_msg(strstr(errstr, "kmq.topic"), "%s", errstr);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("producer_mock");
  TCase *tc = tcase_create("mock");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, produce_errors_go_to_dlq);
  tcase_add_test(tc, broker_down_until_timeout_goes_to_dlq);
  tcase_add_test(tc, dlq_down_goes_to_fallback);
  tcase_add_test(tc, no_fallback_is_reported_lost);
  tcase_add_test(tc, fatal_error_replaces_instance_without_loss);
  tcase_add_test(tc, bad_configuration_is_refused);
  tcase_add_test(tc, destroy_is_bounded_with_broker_unreachable);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
