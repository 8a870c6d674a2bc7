#include "testutil.h"

#include <librdkafka/rdkafka_mock.h>

#include <check.h>
#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int kt_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

int64_t kt_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool kt_wait_until(bool (*cond)(void *), void *opaque, int timeout_ms) {
  int64_t deadline = kt_now_ms() + timeout_ms;
  while (!cond(opaque)) {
    if (kt_now_ms() >= deadline)
      return cond(opaque);
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
  }
  return true;
}

rd_kafka_mock_cluster_t *kt_mock_cluster_new(int brokers, rd_kafka_t **rkp) {
  char errstr[256];
  *rkp = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), errstr,
                      sizeof(errstr));
  ck_assert_msg(*rkp, "%s", errstr);
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(*rkp, brokers);
  ck_assert_ptr_nonnull(mc);
  return mc;
}

void kt_unique_name(char *buf, size_t size, const char *prefix) {
  static int counter; /* test process only */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(buf, size, "%s-%d-%d-%lx", prefix, (int)getpid(), counter++,
           (unsigned long)(ts.tv_nsec ^ ts.tv_sec));
}

const char *kt_bootstrap(void) {
  const char *b = getenv("KMQ_BOOTSTRAP");
  ck_assert_msg(b && *b, "KMQ_BOOTSTRAP is not set: start the broker with "
                         "scripts/kafka.sh start (scripts/test.sh does)");
  return b;
}

#include <string.h>

int kt_read_topic(const char *bootstrap, const char *topic, int expect,
                  int timeout_ms,
                  void (*cb)(const rd_kafka_message_t *m, void *opaque),
                  void *opaque) {
  char errstr[512];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  rd_kafka_conf_set(rc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "group.id", "kt-reader", errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "enable.auto.commit", "false", errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "enable.partition.eof", "false", errstr,
                    sizeof(errstr));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  rd_kafka_poll_set_consumer(rk);
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  int64_t deadline = kt_now_ms() + timeout_ms;
  /* The topic may still be propagating: retry metadata until it has
   * partitions. */
  for (;;) {
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    if (!err && md->topic_cnt == 1 && !md->topics[0].err &&
        md->topics[0].partition_cnt > 0)
      break;
    if (md)
      rd_kafka_metadata_destroy(md);
    md = NULL;
    ck_assert_msg(kt_now_ms() < deadline, "no metadata for %s", topic);
  }
  rd_kafka_topic_partition_list_t *parts =
      rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
  for (int i = 0; i < md->topics[0].partition_cnt; i++)
    rd_kafka_topic_partition_list_add(parts, topic,
                                      md->topics[0].partitions[i].id)
        ->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  ck_assert_int_eq(rd_kafka_assign(rk, parts), 0);
  rd_kafka_topic_partition_list_destroy(parts);
  int seen = 0;
  while (seen < expect && kt_now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m)
      continue;
    if (!m->err) {
      seen++;
      if (cb)
        cb(m, opaque);
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return seen;
}

const char *kt_header(const rd_kafka_message_t *m, const char *name, char *buf,
                      size_t size) {
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t n;
  buf[0] = '\0';
  if (rd_kafka_message_headers(m, &h) == 0 &&
      rd_kafka_header_get_last(h, name, &v, &n) == 0 && v) {
    if (n >= size)
      n = size - 1;
    memcpy(buf, v, n);
    buf[n] = '\0';
  }
  return buf;
}

#include "kmq/admin.h"

void kt_assert_committed_at_end(const char *bootstrap, const char *group,
                                const char *topic) {
  char errstr[512];
  kmq_partition_lag_t lag[256];
  int n = 256;
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
  ck_assert_msg(kmq_admin_group_lag(c, group, topic, lag, &n, 10000, errstr,
                                    sizeof(errstr)) == KMQ_OK,
                "%s", errstr);
  for (int i = 0; i < n; i++)
    ck_assert_msg(lag[i].committed == lag[i].high ||
                      (lag[i].committed < 0 && lag[i].high == lag[i].low),
                  "partition %d committed %lld, end %lld", lag[i].partition,
                  (long long)lag[i].committed, (long long)lag[i].high);
  kmq_conf_destroy(c);
}

int64_t kt_assignment_bits(rd_kafka_t *rk) {
  rd_kafka_topic_partition_list_t *l = NULL;
  if (rd_kafka_assignment(rk, &l))
    return -1;
  int64_t bits = 0;
  for (int i = 0; i < l->cnt; i++)
    if (l->elems[i].partition >= 0 && l->elems[i].partition < 63)
      bits |= (int64_t)1 << l->elems[i].partition;
  rd_kafka_topic_partition_list_destroy(l);
  return bits;
}

rd_kafka_t *kt_member_new(const char *bootstrap, const char *group,
                          const char *topic, const char *debug) {
  char errstr[256];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", bootstrap},
      {"group.id", group},
      {"partition.assignment.strategy", "cooperative-sticky"},
      {"enable.auto.commit", "false"},
      /* Closed without a rebalance callback, a cooperative librdkafka
       * 2.0.2 consumer sends no LeaveGroup (debug=cgrp shows no LEAVE; kmq's
       * own consumer, which has one, does leave): the group notices the
       * departure when the session expires, at the broker's minimum
       * (scripts/kafka.sh sets 1000 ms). */
      {"session.timeout.ms", "1000"},
      {"heartbeat.interval.ms", "100"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_int_eq(rd_kafka_conf_set(rc, kv[i][0], kv[i][1], errstr,
                                       sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
  if (debug)
    rd_kafka_conf_set(rc, "debug", debug, errstr, sizeof(errstr));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
  ck_assert_int_eq(rd_kafka_subscribe(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  return rk;
}

rd_kafka_t *kt_member_join(const char *bootstrap, const char *group,
                           const char *topic, const char *debug) {
  rd_kafka_t *rk = kt_member_new(bootstrap, group, topic, debug);
  /* librdkafka's default rebalance handling assigns what the group gives. */
  int64_t deadline = kt_now_ms() + 60000;
  while (kt_assignment_bits(rk) <= 0) {
    ck_assert_msg(kt_now_ms() < deadline, "second member got no partition");
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 20);
    if (m)
      rd_kafka_message_destroy(m);
  }
  return rk;
}

void kt_member_leave(rd_kafka_t *rk) {
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

int kt_threads_named(const char *prefix) {
  DIR *d = opendir("/proc/self/task");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  size_t plen = strlen(prefix);
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.')
      continue;
    char path[300], name[32] = "";
    snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue; /* the thread just exited */
    if (fgets(name, sizeof(name), f) && !strncmp(name, prefix, plen))
      n++;
    fclose(f);
  }
  closedir(d);
  return n;
}
