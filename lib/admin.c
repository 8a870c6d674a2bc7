/* Topic bootstrap and lag queries through short-lived librdkafka handles. */
#include "kmq/admin.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "lib/redact.h"
#include "lib/util.h"

/* Waits until every partition of topic answers ListOffsets, i.e. its
 * leader has created the log. CreateTopics returns once the controller has
 * the topic; until the log exists the leader answers Produce with
 * NOT_LEADER_OR_FOLLOWER, and a fresh idempotent producer whose first batch
 * gets that while its pipelined next batch lands can have the first one
 * taken as persisted (tests/FAULTS.md). @locality the calling thread */
static kmq_err_t kmq__wait_serving(rd_kafka_t *rk, const char *topic,
                                   int partitions, int64_t deadline_ms,
                                   char *errstr, size_t errstr_size) {
  for (int p = 0; p < partitions; p++) {
    for (;;) {
      int64_t lo, hi, left = deadline_ms - kmq__mono_ms();
      rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
          rk, topic, p, &lo, &hi, left < 2000 ? (int)(left > 0 ? left : 1)
                                              : 2000);
      if (!err)
        break;
      if (kmq__mono_ms() >= deadline_ms) {
        snprintf(errstr, errstr_size,
                 "%s [%d] created but not serving yet: %s", topic, p,
                 rd_kafka_err2str(err));
        return KMQ_ERR_TIMED_OUT;
      }
      struct timespec ts = {0, 50 * 1000000L}; /* the broker's own pace */
      nanosleep(&ts, NULL);
    }
  }
  return KMQ_OK;
}

kmq_err_t kmq_admin_create_topic(const kmq_conf_t *conf, const char *topic,
                                 int partitions, int replication_factor,
                                 const char *const *configs, int exist_ok,
                                 int timeout_ms, char *errstr,
                                 size_t errstr_size) {
  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_PRODUCER, errstr, errstr_size);
  if (!rc)
    return KMQ_ERR_CONF_INVALID;
  rd_kafka_t *rk = kmq__rdk_new(RD_KAFKA_PRODUCER, rc, errstr, errstr_size);
  if (!rk) {
    rd_kafka_conf_destroy(rc);
    return KMQ_ERR_CONF_INVALID;
  }
  kmq_err_t ret = KMQ_OK;
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  char rderr[256];
  rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
      topic, partitions, replication_factor, rderr, sizeof(rderr));
  if (!nt) {
    snprintf(errstr, errstr_size, "%s", rderr);
    rd_kafka_destroy(rk);
    return KMQ_ERR_INVALID_ARG;
  }
  for (int i = 0; configs && configs[i] && configs[i + 1]; i += 2)
    rd_kafka_NewTopic_set_config(nt, configs[i], configs[i + 1]);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *opt =
      rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(opt, timeout_ms, rderr,
                                              sizeof(rderr));
  rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
  if (!ev) {
    snprintf(errstr, errstr_size, "CreateTopics(%s) timed out", topic);
    ret = KMQ_ERR_TIMED_OUT;
  } else if (rd_kafka_event_error(ev)) {
    snprintf(errstr, errstr_size, "CreateTopics(%s): %s", topic,
             rd_kafka_event_error_string(ev));
    ret = KMQ_ERR_KAFKA;
  } else {
    size_t n;
    const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(
        rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; i++) {
      rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
      if (!e || (exist_ok && e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS))
        continue;
      snprintf(errstr, errstr_size, "CreateTopics(%s): %s: %s", topic,
               rd_kafka_err2name(e), rd_kafka_topic_result_error_string(res[i])
                                         ? rd_kafka_topic_result_error_string(res[i])
                                         : "");
      ret = KMQ_ERR_KAFKA;
    }
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opt);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_queue_destroy(q);
  if (ret == KMQ_OK)
    ret = kmq__wait_serving(rk, topic, partitions, deadline, errstr,
                            errstr_size);
  rd_kafka_destroy(rk);
  return ret;
}

kmq_err_t kmq_admin_group_lag(const kmq_conf_t *conf, const char *group,
                              const char *topic, kmq_partition_lag_t *out,
                              int *cnt, int timeout_ms, char *errstr,
                              size_t errstr_size) {
  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_CONSUMER, errstr, errstr_size);
  if (!rc)
    return KMQ_ERR_CONF_INVALID;
  char rderr[256];
  if (rd_kafka_conf_set(rc, "group.id", group, rderr, sizeof(rderr))) {
    snprintf(errstr, errstr_size, "%s", rderr);
    rd_kafka_conf_destroy(rc);
    return KMQ_ERR_CONF_INVALID;
  }
  rd_kafka_t *rk = kmq__rdk_new(RD_KAFKA_CONSUMER, rc, errstr, errstr_size);
  if (!rk) {
    rd_kafka_conf_destroy(rc);
    return KMQ_ERR_CONF_INVALID;
  }
  kmq_err_t ret = KMQ_OK;
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
  if (err || md->topic_cnt != 1 || md->topics[0].err) {
    snprintf(errstr, errstr_size, "metadata for %s: %s", topic,
             rd_kafka_err2str(err ? err : md->topics[0].err));
    ret = KMQ_ERR_KAFKA;
    goto done;
  }
  int np = md->topics[0].partition_cnt;
  if (np > *cnt) {
    snprintf(errstr, errstr_size, "%d partitions, room for %d", np, *cnt);
    ret = KMQ_ERR_INVALID_ARG;
    goto done;
  }
  rd_kafka_topic_partition_list_t *parts =
      rd_kafka_topic_partition_list_new(np);
  for (int i = 0; i < np; i++)
    rd_kafka_topic_partition_list_add(parts, topic,
                                      md->topics[0].partitions[i].id);
  err = rd_kafka_committed(rk, parts, timeout_ms);
  if (err) {
    snprintf(errstr, errstr_size, "committed offsets of %s: %s", group,
             rd_kafka_err2str(err));
    ret = KMQ_ERR_KAFKA;
  }
  for (int i = 0; !ret && i < np; i++) {
    kmq_partition_lag_t *l = &out[i];
    l->partition = parts->elems[i].partition;
    err = rd_kafka_query_watermark_offsets(rk, topic, l->partition, &l->low,
                                           &l->high, timeout_ms);
    if (err) {
      snprintf(errstr, errstr_size, "watermarks of %s [%d]: %s", topic,
               l->partition, rd_kafka_err2str(err));
      ret = KMQ_ERR_KAFKA;
      break;
    }
    l->committed = parts->elems[i].offset >= 0 ? parts->elems[i].offset : -1;
    l->lag = l->high - (l->committed >= 0 ? l->committed : l->low);
  }
  if (!ret)
    *cnt = np;
  rd_kafka_topic_partition_list_destroy(parts);
done:
  if (md)
    rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
  return ret;
}
