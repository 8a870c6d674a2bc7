/* Reads a topic from the beginning without a group (tools' DLQ reader). */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <time.h>

int kmq_demo_read_topic(const char *bootstrap, const char *topic, int n,
                        void (*cb)(const rd_kafka_message_t *, void *),
                        void *opaque) {
  char errstr[256];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  rd_kafka_conf_set(rc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "group.id", "kmq-reader", errstr, sizeof(errstr));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
  if (!rk)
    return -1;
  rd_kafka_poll_set_consumer(rk);
  const rd_kafka_metadata_t *md;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  int seen = 0;
  if (!rd_kafka_metadata(rk, 0, rkt, &md, 10000) && md->topic_cnt == 1) {
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
      rd_kafka_topic_partition_list_add(l, topic, i)->offset =
          RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_metadata_destroy(md);
    time_t t0 = time(NULL);
    while (seen < n && time(NULL) - t0 < 30) {
      rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
      if (!m)
        continue;
      if (!m->err) {
        seen++;
        cb(m, opaque);
      }
      rd_kafka_message_destroy(m);
    }
  }
  rd_kafka_topic_destroy(rkt);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return seen;
}
