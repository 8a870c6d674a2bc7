/* The start-up check of the DLQ topic's own size limit against the letters
 * kmq builds for it (lib/limits.h). A letter is built to fit the DLQ
 * producer's message.max.bytes; a topic whose max.message.bytes is below
 * that refuses the largest letters (MSG_SIZE_TOO_LARGE), and each such
 * refusal becomes a fallback row, or a paused partition without a store:
 * a misconfiguration that shows only when a large poison record arrives.
 * Asking the broker once at start turns it into a clear error instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "kmq/dlq.h"
#include "lib/limits.h"

/* The value of one config entry of topic, through rk's admin API; waits at
 * most timeout_ms. KMQ_ERR_NOT_FOUND when the topic (or the entry) does not
 * exist, KMQ_ERR_TIMED_OUT or KMQ_ERR_KAFKA when the broker did not say.
 * @locality the calling thread */
static kmq_err_t kmq__topic_config(rd_kafka_t *rk, const char *topic,
                                   const char *name, int timeout_ms,
                                   char *value, size_t value_size,
                                   char *errstr, size_t errstr_size) {
  char rderr[256];
  rd_kafka_ConfigResource_t *res =
      rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *o =
      rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_AdminOptions_set_request_timeout(o, timeout_ms, rderr,
                                            sizeof(rderr));
  rd_kafka_DescribeConfigs(rk, &res, 1, o, q);
  /* The request timeout bounds the answer; the extra second only lets the
   * timed-out result itself arrive. */
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
  kmq_err_t ret = KMQ_ERR_KAFKA;
  if (!ev) {
    snprintf(errstr, errstr_size, "DescribeConfigs(%s): no answer in %d ms",
             topic, timeout_ms);
    ret = KMQ_ERR_TIMED_OUT;
  } else if (rd_kafka_event_error(ev)) {
    snprintf(errstr, errstr_size, "DescribeConfigs(%s): %s", topic,
             rd_kafka_event_error_string(ev));
    ret = rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT
              ? KMQ_ERR_TIMED_OUT
              : KMQ_ERR_KAFKA;
  } else {
    size_t n;
    const rd_kafka_ConfigResource_t **rs =
        rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &n);
    rd_kafka_resp_err_t rerr =
        n == 1 ? rd_kafka_ConfigResource_error(rs[0])
               : RD_KAFKA_RESP_ERR__BAD_MSG;
    if (rerr) {
      snprintf(errstr, errstr_size, "DescribeConfigs(%s): %s", topic,
               n == 1 && rd_kafka_ConfigResource_error_string(rs[0])
                   ? rd_kafka_ConfigResource_error_string(rs[0])
                   : rd_kafka_err2str(rerr));
      ret = rerr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                ? KMQ_ERR_NOT_FOUND
                : KMQ_ERR_KAFKA;
    } else {
      size_t ne;
      const rd_kafka_ConfigEntry_t **es =
          rd_kafka_ConfigResource_configs(rs[0], &ne);
      ret = KMQ_ERR_NOT_FOUND;
      snprintf(errstr, errstr_size, "%s: no %s in its configuration", topic,
               name);
      for (size_t i = 0; i < ne; i++) {
        const char *v = rd_kafka_ConfigEntry_value(es[i]);
        if (v && !strcmp(rd_kafka_ConfigEntry_name(es[i]), name)) {
          snprintf(value, value_size, "%s", v);
          ret = KMQ_OK;
          break;
        }
      }
    }
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(o);
  rd_kafka_queue_destroy(q);
  rd_kafka_ConfigResource_destroy(res);
  return ret;
}

kmq_err_t kmq__dlq_check_topic(const kmq_dlq_t *dlq, int timeout_ms,
                               char *errstr, size_t errstr_size) {
  const char *topic = kmq_dlq_topic(dlq);
  char v[32];
  kmq_err_t err =
      kmq__topic_config(kmq__dlq_rk(dlq), topic, "max.message.bytes",
                        timeout_ms, v, sizeof(v), errstr, errstr_size);
  if (err)
    return err;
  char *end;
  unsigned long long topic_max = strtoull(v, &end, 10);
  if (end == v || *end) {
    snprintf(errstr, errstr_size, "%s: max.message.bytes \"%s\" is no number",
             topic, v);
    return KMQ_ERR_KAFKA;
  }
  size_t letter_max = kmq__dlq_max_bytes(dlq);
  if (topic_max >= letter_max)
    return KMQ_OK;
  snprintf(errstr, errstr_size,
           "the DLQ topic %s has max.message.bytes=%llu, below the DLQ "
           "producer's message.max.bytes=%zu: a dead letter up to %zu bytes "
           "would be refused by the broker, so the largest poison records "
           "could not be dead-lettered (their partition would wait on the "
           "fallback store, or pause without one). Raise the topic's "
           "max.message.bytes (kmq.topic.max.message.bytes and `kmqctl topics "
           "bootstrap`, or kafka-configs) to at least %zu, or lower "
           "producer.message.max.bytes (with kmq.msg.max.bytes)",
           topic, topic_max, letter_max, letter_max, letter_max);
  return KMQ_ERR_CONF_INVALID;
}
