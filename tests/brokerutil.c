/* Runtime-test helpers on the real broker (brokerutil.h). */
#include "brokerutil.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "testutil.h"
#include "traffic.h"

void kt_create_topics(const char *topic, int partitions,
                      const char *dlq_topic) {
  char errstr[512];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(),
                                errstr, sizeof(errstr)),
                   KMQ_OK);
  ck_assert_msg(!kmq_admin_create_topic(c, topic, partitions, 1, NULL, 0,
                                        30000, errstr, sizeof(errstr)),
                "%s", errstr);
  if (dlq_topic)
    ck_assert_msg(!kmq_admin_create_topic(c, dlq_topic, 1, 1, NULL, 0, 30000,
                                          errstr, sizeof(errstr)),
                  "%s", errstr);
  kmq_conf_destroy(c);
}

rd_kafka_t *kt_producer_new(void) {
  char errstr[256];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  ck_assert_int_eq(rd_kafka_conf_set(rc, "bootstrap.servers", kt_bootstrap(),
                                     errstr, sizeof(errstr)),
                   RD_KAFKA_CONF_OK);
  ck_assert_int_eq(rd_kafka_conf_set(rc, "enable.idempotence", "true",
                                     errstr, sizeof(errstr)),
                   RD_KAFKA_CONF_OK);
  ck_assert_int_eq(
      rd_kafka_conf_set(rc, "linger.ms", "5", errstr, sizeof(errstr)),
      RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  return rk;
}

void kt_producer_done(rd_kafka_t *rk) {
  ck_assert_int_eq(rd_kafka_flush(rk, 30000), 0);
  rd_kafka_destroy(rk);
}

void kt_send_env(rd_kafka_t *rk, const char *topic, int32_t partition, int u,
                 int seq) {
  char buf[1024], user[16];
  int n = kmq_traffic_envelope(u, seq, buf, sizeof(buf));
  kmq_traffic_user(u, user, sizeof(user));
  ck_assert_int_eq(
      rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                        RD_KAFKA_V_PARTITION(partition),
                        RD_KAFKA_V_KEY(user, strlen(user)),
                        RD_KAFKA_V_VALUE(buf, (size_t)n),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_END),
      0);
}

void kt_produce_traffic(const char *topic, int users, int per) {
  rd_kafka_t *rk = kt_producer_new();
  for (int s = 0; s < per; s++)
    for (int u = 0; u < users; u++)
      kt_send_env(rk, topic, RD_KAFKA_PARTITION_UA, u, s);
  kt_producer_done(rk);
}

void kt_produce_quotes(const char *topic, const char *key, size_t n) {
  rd_kafka_t *rk = kt_producer_new();
  char *v = malloc(n);
  ck_assert_ptr_nonnull(v);
  memset(v, '"', n);
  ck_assert_int_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                     RD_KAFKA_V_KEY(key, strlen(key)),
                                     RD_KAFKA_V_VALUE(v, n),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_END),
                   0);
  free(v);
  kt_producer_done(rk);
}

bool kt_runtime_partition(kmq_runtime_t *rt, int32_t part,
                          kmq_runtime_partition_t *out) {
  kmq_runtime_partition_t ps[64];
  size_t n = kmq_runtime_partitions(rt, ps, 64);
  for (size_t i = 0; i < n && i < 64; i++)
    if (ps[i].partition == part) {
      *out = ps[i];
      return true;
    }
  return false;
}
