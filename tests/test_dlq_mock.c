/* kmq_dlq_send with a record whose full envelope exceeds the DLQ producer's
 * message.max.bytes, on librdkafka's mock cluster: without a fallback hook
 * the truncated letter is written (outcome DLQ, never LOST); a hook is
 * offered the full envelope first, with a msg_id header, and when it keeps
 * it the truncated letter still goes to the DLQ with fallback_message_id
 * naming that id (outcome DLQ); when the hook fails the truncated letter
 * still reaches the DLQ. */
#include <check.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/dlq.h"
#include "testutil.h"

#define BIG (10 * 1000 * 1000)

typedef struct {
  rd_kafka_t *rk;
  rd_kafka_mock_cluster_t *mc;
  char topic[64], dlq[72];
  kmq_conf_t *conf;
} mock_t;

static void mock_up(mock_t *m) {
  char errstr[256];
  m->mc = kt_mock_cluster_new(1, &m->rk);
  kt_unique_name(m->topic, sizeof(m->topic), "main");
  snprintf(m->dlq, sizeof(m->dlq), "%s.dlq", m->topic);
  ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, m->dlq, 2, 1), 0);
  m->conf = kmq_conf_new();
  kmq_conf_set(m->conf, "bootstrap.servers",
               rd_kafka_mock_cluster_bootstraps(m->mc), errstr,
               sizeof(errstr));
  kmq_conf_set(m->conf, "kmq.topic", m->topic, errstr, sizeof(errstr));
}

static void mock_down(mock_t *m) {
  kmq_conf_destroy(m->conf);
  rd_kafka_mock_cluster_destroy(m->mc);
  rd_kafka_destroy(m->rk);
}

typedef struct {
  atomic_int outcome; /* kmq_dlq_outcome_t + 1; 0 = none yet */
  atomic_int hook_calls;
  kmq_err_t hook_result;
  size_t hook_value_len;
  rd_kafka_resp_err_t hook_err;
  char hook_msg_id[128];
} track_t;

static void done_cb(kmq_dlq_outcome_t outcome, kmq_err_t err, void *opaque) {
  (void)err;
  track_t *t = opaque;
  int prev = atomic_exchange(&t->outcome, (int)outcome + 1);
  ck_assert_msg(prev == 0, "two outcomes for one record");
}

static kmq_err_t hook(const kmq_fallback_record_t *r, void *opaque) {
  track_t *t = opaque;
  atomic_fetch_add(&t->hook_calls, 1);
  const void *v;
  size_t n;
  if (r->headers && !rd_kafka_header_get_last(r->headers, "msg_id", &v, &n))
    snprintf(t->hook_msg_id, sizeof(t->hook_msg_id), "%.*s", (int)n,
             (const char *)v);
  t->hook_value_len = r->value_len;
  t->hook_err = r->kafka_err;
  return t->hook_result;
}

/* Sends a 10 MB record (not UTF-8) through a DLQ with or without hook;
 * returns its outcome + 1 after the flush. */
static int send_big(mock_t *m, track_t *t, int with_hook) {
  char errstr[256];
  kmq_dlq_t *dlq =
      kmq_dlq_new(m->conf, with_hook ? hook : NULL, with_hook ? t : NULL,
                  errstr, sizeof(errstr));
  ck_assert_msg(dlq, "%s", errstr);
  unsigned char *v = malloc(BIG);
  memset(v, 0xfe, BIG);
  kmq_dlq_record_t rec = {.original_topic = m->topic,
                          .original_partition = 0,
                          .original_offset = 7,
                          .key = "wm000001",
                          .key_len = 8,
                          .payload = v,
                          .payload_len = BIG,
                          .reason = "too_large",
                          .source = "consumer"};
  ck_assert_int_eq(kmq_dlq_send(dlq, &rec, done_cb, t), KMQ_OK);
  free(v); /* borrowed only for the call */
  ck_assert_int_eq(kmq_dlq_flush(dlq, 20000), KMQ_OK);
  kmq_dlq_stats_t st;
  kmq_dlq_stats(dlq, &st);
  ck_assert_int_eq(st.sent, 1);
  ck_assert_int_eq(st.lost, 0);
  kmq_dlq_destroy(dlq);
  return atomic_load(&t->outcome);
}

static void on_letter(const rd_kafka_message_t *m, void *opaque) {
  (void)opaque;
  ck_assert_uint_le(m->len, 1000000);
  ck_assert_uint_eq(m->key_len, 8);
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  ck_assert(json_is_true(json_object_get(j, "payload_truncated")));
  ck_assert_int_eq(json_integer_value(json_object_get(j, "payload_size")),
                   BIG);
  ck_assert(json_is_string(json_object_get(j, "payload_base64")));
  json_decref(j);
}

START_TEST(without_hook_the_truncated_letter_is_written) {
  mock_t m;
  mock_up(&m);
  track_t t = {0};
  ck_assert_int_eq(send_big(&m, &t, 0), KMQ_DLQ_OUTCOME_DLQ + 1);
  ck_assert_int_eq(kt_read_topic(rd_kafka_mock_cluster_bootstraps(m.mc),
                                 m.dlq, 1, 10000, on_letter, NULL),
                   1);
  mock_down(&m);
}
END_TEST

static void on_ref_letter(const rd_kafka_message_t *m, void *opaque) {
  on_letter(m, NULL);
  char ref[128];
  kt_header(m, "fallback_message_id", ref, sizeof(ref));
  ck_assert_str_eq(ref, opaque);
}

START_TEST(a_hook_is_offered_the_full_envelope_first) {
  mock_t m;
  mock_up(&m);
  track_t t = {.hook_result = KMQ_OK};
  ck_assert_int_eq(send_big(&m, &t, 1), KMQ_DLQ_OUTCOME_DLQ + 1);
  ck_assert_int_eq(atomic_load(&t.hook_calls), 1);
  ck_assert_int_eq(t.hook_err, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  ck_assert_uint_gt(t.hook_value_len, BIG); /* whole payload, in base64 */
  /* No msg_id of its own: the original's coordinates. */
  char want[128];
  snprintf(want, sizeof(want), "kmq-dlq:%s:0:7", m.topic);
  ck_assert_str_eq(t.hook_msg_id, want);
  ck_assert_int_eq(kt_read_topic(rd_kafka_mock_cluster_bootstraps(m.mc),
                                 m.dlq, 1, 10000, on_ref_letter, want),
                   1);
  mock_down(&m);
}
END_TEST

START_TEST(a_failing_hook_still_gets_the_truncated_letter_written) {
  mock_t m;
  mock_up(&m);
  track_t t = {.hook_result = KMQ_ERR_IO};
  ck_assert_int_eq(send_big(&m, &t, 1), KMQ_DLQ_OUTCOME_DLQ + 1);
  ck_assert_int_eq(atomic_load(&t.hook_calls), 1);
  ck_assert_int_eq(kt_read_topic(rd_kafka_mock_cluster_bootstraps(m.mc),
                                 m.dlq, 1, 10000, on_letter, NULL),
                   1);
  mock_down(&m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("dlq_mock");
  TCase *tc = tcase_create("too_large");
  tcase_add_test(tc, without_hook_the_truncated_letter_is_written);
  tcase_add_test(tc, a_hook_is_offered_the_full_envelope_first);
  tcase_add_test(tc, a_failing_hook_still_gets_the_truncated_letter_written);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
