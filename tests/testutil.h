/* Test helpers shared by the check suites: deadlines instead of sleeps,
 * unique names, the real broker's address. */
#ifndef KMQ_TESTUTIL_H
#define KMQ_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <check.h>

/* Runs every test of suite s (check takes and frees it) and returns the
 * process exit status: 0 when all passed, 1 otherwise. For main(). */
int kt_run(Suite *s);

/* Monotonic clock in ms. */
int64_t kt_now_ms(void);

/* Polls cond(opaque) until it is true or timeout_ms elapsed; between checks
 * yields for at most 1 ms. Returns the final value of cond. */
bool kt_wait_until(bool (*cond)(void *opaque), void *opaque, int timeout_ms);

/* Threads of this process whose name (/proc/self/task/<tid>/comm) starts
 * with prefix, e.g. "kmq-sched-" (scheduler workers) or "rdk:" (librdkafka):
 * how a test sees that something it cannot reach any more (an abandoned
 * scheduler, a runtime freed by its last late job) really went away. */
int kt_threads_named(const char *prefix);

/* Writes "<prefix>-<pid>-<counter>-<random>" into buf: unique per run. */
void kt_unique_name(char *buf, size_t size, const char *prefix);

/* Bootstrap servers of the real broker from $KMQ_BOOTSTRAP. A test labelled
 * "broker" fails (not skips) when it is unset: the test script always starts
 * one, so its absence is a broken set-up. */
const char *kt_bootstrap(void);

#endif

#include <librdkafka/rdkafka.h>

/* Reads every partition of `topic` from the beginning (no consumer group)
 * until `expect` messages were seen or timeout_ms passed, calling cb for each
 * (the message is destroyed after cb returns). Returns the count seen. */
int kt_read_topic(const char *bootstrap, const char *topic, int expect,
                  int timeout_ms,
                  void (*cb)(const rd_kafka_message_t *m, void *opaque),
                  void *opaque);

/* Value of header `name` as a NUL-terminated copy in buf ("" when absent). */
const char *kt_header(const rd_kafka_message_t *m, const char *name, char *buf,
                      size_t size);

/* Asserts that group's committed offset on every partition of topic is the
 * partition's end offset (an empty partition has nothing to commit). */
void kt_assert_committed_at_end(const char *bootstrap, const char *group,
                                const char *topic);

/* Partitions of rk's current assignment as a bit set (partitions 0-62), -1
 * when librdkafka cannot say. Any thread. */
int64_t kt_assignment_bits(rd_kafka_t *rk);

/* A second member for rebalance tests: a plain librdkafka consumer of group
 * (cooperative-sticky, no commits) subscribed to topic, polled until the
 * group gives it a partition (asserts within 60 s); debug: librdkafka debug
 * contexts or NULL. Its messages are dropped: it never commits, so they stay
 * the next owner's. kt_member_leave closes and frees it. */
rd_kafka_t *kt_member_join(const char *bootstrap, const char *group,
                           const char *topic, const char *debug);
/* The same member, subscribed but not polled yet: it joins the group only
 * as far as librdkafka goes without the application (it heartbeats and
 * rejoins, but a revoke waits for its next poll). */
rd_kafka_t *kt_member_new(const char *bootstrap, const char *group,
                          const char *topic, const char *debug);
void kt_member_leave(rd_kafka_t *rk);

/* A librdkafka mock cluster of `brokers` brokers, hosted by a producer
 * handle written to *rkp (the cluster lives as long as that handle:
 * destroy the cluster, then the handle). Fails the test when either
 * cannot be made. */
struct rd_kafka_mock_cluster_s *kt_mock_cluster_new(int brokers,
                                                    rd_kafka_t **rkp);

/* Kafka protocol ApiKeys for the mock cluster's error injection (librdkafka
 * keeps its RD_KAFKAP_* names in a private header). */
enum {
  KT_API_PRODUCE = 0,
  KT_API_FETCH = 1,
  KT_API_OFFSET_COMMIT = 8,
  KT_API_OFFSET_FETCH = 9,
  KT_API_HEARTBEAT = 12,
};
