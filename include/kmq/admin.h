/*
 * Topic bootstrap and lag queries (operations).
 *
 * Short-lived helpers for tools, tests and start-up: each call creates its
 * own librdkafka handle from conf (bootstrap.servers and any security keys),
 * does one thing with a timeout, and destroys it. Any thread.
 */
#ifndef KMQ_ADMIN_H
#define KMQ_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates `topic` with the given partitions and replication factor, plus
 * optional topic configs (NULL-terminated name, value pairs, e.g.
 * {"min.insync.replicas", "2", NULL}). An existing topic is KMQ_OK when
 * exist_ok. Returns only once every partition's leader serves it (answers
 * ListOffsets), within timeout_ms in all: producing to a partition whose log
 * does not exist yet can lose the first batch of a fresh idempotent producer
 * on librdkafka 2.0.2 (tests/FAULTS.md). With exist_ok, `partitions` must
 * not exceed the existing topic's count (the wait would time out).
 * Errors: KMQ_ERR_KAFKA / KMQ_ERR_TIMED_OUT with errstr filled. */
kmq_err_t kmq_admin_create_topic(const kmq_conf_t *conf, const char *topic,
                                 int partitions, int replication_factor,
                                 const char *const *configs, int exist_ok,
                                 int timeout_ms, char *errstr,
                                 size_t errstr_size);

/* Per-partition position of a consumer group on a topic. */
typedef struct {
  int32_t partition;
  int64_t low, high;  /* watermarks */
  int64_t committed;  /* -1 when the group has committed nothing */
  int64_t lag;        /* high - committed (high - low when none) */
} kmq_partition_lag_t;

/* Fills out[0..*cnt) (capacity *cnt on entry) with the group's committed
 * offsets and the watermarks of every partition of topic. */
kmq_err_t kmq_admin_group_lag(const kmq_conf_t *conf, const char *group,
                              const char *topic, kmq_partition_lag_t *out,
                              int *cnt, int timeout_ms, char *errstr,
                              size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif
