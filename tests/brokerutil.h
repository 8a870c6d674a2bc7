/* Helpers shared by the runtime tests on the real broker: topics, a raw
 * producer, and the simulated WeCom traffic of tools/traffic.h. Every
 * function asserts (check) instead of returning an error. Test threads
 * only. */
#ifndef KMQ_TESTS_BROKERUTIL_H
#define KMQ_TESTS_BROKERUTIL_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "kmq/runtime.h"

/* Creates topic with `partitions` partitions and, when dlq_topic is not
 * NULL, dlq_topic with one (replication factor 1, on $KMQ_BOOTSTRAP);
 * returns once every partition serves (kmq_admin_create_topic). */
void kt_create_topics(const char *topic, int partitions,
                      const char *dlq_topic);

/* An idempotent librdkafka producer on $KMQ_BOOTSTRAP (linger.ms 5). The
 * caller flushes and destroys it (kt_producer_done). */
rd_kafka_t *kt_producer_new(void);
/* Flushes (asserting every message was delivered within 30 s) and
 * destroys. */
void kt_producer_done(rd_kafka_t *rk);

/* Produces user u's traffic envelope seq (tools/traffic.h) keyed by the user
 * id to topic, on `partition` (RD_KAFKA_PARTITION_UA: the partitioner
 * picks). */
void kt_send_env(rd_kafka_t *rk, const char *topic, int32_t partition, int u,
                 int seq);

/* Produces, and waits for, one record of n '"' bytes keyed `key` to
 * topic: over kmq.msg.max.bytes when n is, and its dead-letter envelope
 * (each quote escaped, twice) cannot fit the DLQ. */
void kt_produce_quotes(const char *topic, const char *key, size_t n);

/* users x per envelopes, seq-major (every user's seq 0, then seq 1, ...),
 * partitioned by key, all delivered when it returns. */
void kt_produce_traffic(const char *topic, int users, int per);

/* Partition part of rt as last sampled (kmq_runtime_partitions) into out;
 * false when rt does not own it. */
bool kt_runtime_partition(kmq_runtime_t *rt, int32_t part,
                          kmq_runtime_partition_t *out);

#endif
