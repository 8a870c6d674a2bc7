/* Producer on a real broker: every message delivered, read back with its
 * key, headers and value intact, on the partition murmur2 (Java's
 * partitioner) picks for its key. */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmq/producer.h"
#include "testutil.h"

#define N 2000
#define NPART 4

typedef struct {
  atomic_int delivered;
  atomic_int bad;
  int32_t partition_of[N];
  int seen[N];
  rd_kafka_topic_t *rkt; /* for the reference partitioner */
} state_t;

static void dr(const kmq_delivery_t *d, void *opaque) {
  state_t *st = opaque;
  int i = (int)(intptr_t)d->opaque;
  if (d->status != KMQ_DELIVERY_DELIVERED || d->offset < 0) {
    atomic_fetch_add(&st->bad, 1);
    return;
  }
  st->partition_of[i] = d->partition;
  atomic_fetch_add(&st->delivered, 1);
}

static void check_msg(const rd_kafka_message_t *m, void *opaque) {
  state_t *st = opaque;
  char key[64], h[128], want[128];
  snprintf(key, sizeof(key), "%.*s", (int)m->key_len, (const char *)m->key);
  int i;
  ck_assert_int_eq(sscanf(key, "wm用户-%d", &i), 1);
  ck_assert(i >= 0 && i < N);
  st->seen[i]++;
  ck_assert_int_eq(m->partition, st->partition_of[i]);
  ck_assert_int_eq(m->partition,
                   rd_kafka_msg_partitioner_murmur2_random(
                       st->rkt, m->key, m->key_len, NPART, NULL, NULL));
  ck_assert_str_eq(kt_header(m, "user_id", h, sizeof(h)), key);
  ck_assert_str_eq(kt_header(m, "msg_type", h, sizeof(h)), "text");
  snprintf(want, sizeof(want), "msg-%d", i);
  ck_assert_str_eq(kt_header(m, "msg_id", h, sizeof(h)), want);
  snprintf(want, sizeof(want), "{\"i\":%d,\"text\":\"消息 %d\"}", i, i);
  ck_assert_int_eq(m->len, strlen(want));
  ck_assert(!memcmp(m->payload, want, m->len));
}

/* kmq_admin_create_topic returns only once every partition serves: one
 * ListOffsets per partition, right after it, succeeds at the first try (on
 * a fresh topic the leaders create their logs a little after CreateTopics
 * returns, and answer NOT_LEADER_OR_FOLLOWER until then). */
START_TEST(created_topic_serves_at_once) {
  char topic[96], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-admin");
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  const int nparts = 12;
  ck_assert_msg(!kmq_admin_create_topic(c, topic, nparts, 1, NULL, 0, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  ck_assert_int_eq(rd_kafka_conf_set(rc, "bootstrap.servers", kt_bootstrap(),
                                     errstr, sizeof(errstr)),
                   RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  for (int p = 0; p < nparts; p++) {
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000);
    ck_assert_msg(!err, "%s [%d]: %s", topic, p, rd_kafka_err2str(err));
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 0);
  }
  rd_kafka_destroy(rk);
  /* Again: an error unless exist_ok. */
  ck_assert_int_eq(kmq_admin_create_topic(c, topic, nparts, 1, NULL, 0, 30000,
                                          errstr, sizeof(errstr)),
                   KMQ_ERR_KAFKA);
  ck_assert_ptr_nonnull(strstr(errstr, "TOPIC_ALREADY_EXISTS"));
  ck_assert_msg(!kmq_admin_create_topic(c, topic, nparts, 1, NULL, 1, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(all_delivered_headers_intact) {
  char topic[96], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-prod");
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr));
  ck_assert_msg(!kmq_admin_create_topic(c, topic, NPART, 1, NULL, 0, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  state_t *st = calloc(1, sizeof(*st));
  kmq_producer_t *p =
      kmq_producer_new(c, dr, st, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  st->rkt = rd_kafka_topic_new(kmq_producer_rk(p), topic, NULL);
  for (int i = 0; i < N; i++) {
    char key[64], val[128], id[32];
    snprintf(key, sizeof(key), "wm用户-%d", i);
    snprintf(val, sizeof(val), "{\"i\":%d,\"text\":\"消息 %d\"}", i, i);
    snprintf(id, sizeof(id), "msg-%d", i);
    kmq_produce_msg_t m = {.key = key, .key_len = strlen(key), .value = val,
                           .value_len = strlen(val), .msg_type = "text",
                           .msg_id = id, .opaque = (void *)(intptr_t)i};
    ck_assert_int_eq(kmq_producer_send(p, &m, NULL), KMQ_OK);
  }
  /* A message without a key is refused: the key is the ordering unit. */
  kmq_produce_msg_t nokey = {.value = "x", .value_len = 1};
  ck_assert_int_eq(kmq_producer_send(p, &nokey, NULL), KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_producer_flush(p, 60000), KMQ_OK);
  ck_assert_int_eq(atomic_load(&st->delivered), N);
  ck_assert_int_eq(atomic_load(&st->bad), 0);
  kmq_producer_stats_t ps;
  kmq_producer_stats(p, &ps);
  ck_assert_int_eq(ps.produced, N);
  ck_assert_int_eq(ps.delivered, N);
  ck_assert_int_eq(ps.dlq + ps.lost + ps.failed, 0);
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), topic, N, 60000, check_msg,
                                 st),
                   N);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(st->seen[i], 1);
  rd_kafka_topic_destroy(st->rkt);
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
  free(st);
}
END_TEST

int main(void) {
  Suite *s = suite_create("producer_broker");
  TCase *tc = tcase_create("broker");
  tcase_set_timeout(tc, 180);
  tcase_add_test(tc, all_delivered_headers_intact);
  tcase_add_test(tc, created_topic_serves_at_once);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
