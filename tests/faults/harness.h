/*
 * Fault-test harness: a private Kafka cluster driven through scripts/kafka.sh
 * (with a watchdog that stops it if the test dies), traffic with delivery
 * reports fed to the checker, consumer processes, a DLQ reader and an outside
 * observer of the group's committed offsets.
 *
 * Every wait has a deadline; nothing synchronises on sleeps. Functions that
 * can fail in a way the test must see use ck_assert (check's fork mode turns
 * that into a failed test; the watchdog then stops the cluster).
 */
#ifndef KMQ_TESTS_FAULTS_HARNESS_H
#define KMQ_TESTS_FAULTS_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"
#include "kmq/producer.h"
#include "verify.h"

/* ---- knobs ---------------------------------------------------------------- */

/* $name as an int, def when unset; KMQ_SOAK=1 multiplies sizes (kf_soak). */
int kf_env_int(const char *name, int def);
/* 1 when KMQ_SOAK is set to a non-zero value. */
int kf_soak(void);
/* KF_STALL_MS (default 30000): how long after the traffic stops every
 * partition may take to be committed at its end before it counts as
 * stalled (kf_report_t.stalled_partitions). */
int kf_stall_ms(void);
/* True when test `name` should run: $KF_ONLY unset, a substring of the
 * name, or a list that contains the name. */
bool kf_want(const char *name);
#define KF_ADD_TEST(tc, fn)                                                    \
  do {                                                                         \
    if (kf_want(#fn))                                                          \
      tcase_add_test(tc, fn);                                                  \
  } while (0)

/* ---- a private cluster ---------------------------------------------------- */

typedef struct {
  char state[512];
  char bootstrap[512];
  int nodes;
  pid_t watchdog;
} kf_cluster_t;

/* Starts a cluster of `nodes` (1 or 3) with its state in `state_dir` (a
 * stale cluster there is stopped first) and a watchdog process that stops it
 * when this process dies. Asserts on failure. */
void kf_cluster_start(kf_cluster_t *c, const char *state_dir, int nodes);
/* SIGKILL node n (1-based). Asserts it worked. */
void kf_cluster_kill_node(kf_cluster_t *c, int n);
/* Restarts node n and waits until the cluster serves. Asserts. */
void kf_cluster_start_node(kf_cluster_t *c, int n);
/* Stops the cluster and the watchdog; idempotent. */
void kf_cluster_stop(kf_cluster_t *c);

/* The build directory of the tests (logs and cluster state go there). */
const char *kf_build_dir(void);

/* A state dir for cluster `name` under the build tree. */
void kf_state_dir(char *buf, size_t size, const char *name);

/* ---- configuration and topics --------------------------------------------- */

/* A kmq configuration for bootstrap and topic (group may be NULL) with fast
 * group timings for tests. The caller destroys it. */
kmq_conf_t *kf_conf(const char *bootstrap, const char *topic,
                    const char *group);
/* kmq_conf_set that asserts. */
void kf_set(kmq_conf_t *c, const char *k, const char *v);

/* Creates topic and topic.dlq (partitions, replication factor, optional
 * min.insync.replicas > 0); kmq_admin_create_topic returns once every
 * partition's leader serves it. Asserts. */
void kf_topics(const char *bootstrap, const char *topic, int partitions,
               int rf, int min_isr);

/* ---- traffic -------------------------------------------------------------- */

/* Produces users x per_user traffic envelopes (per user in seq order) from
 * a thread, at most `rate` messages per second (0: unthrottled). Every
 * delivery report goes to the checker (kf_verify_produced) and to the
 * counters below. */
typedef struct {
  kf_verify_t *v;
  kmq_producer_t *p;
  int users, per_user, rate;
  pthread_t thread;
  atomic_int stop;
  atomic_llong sent, reports, delivered, dlq, fallback, lost, send_errors;
  atomic_llong fallback_stored; /* records the test's fallback hook kept */
  int started;
  int log_fd; /* when >= 0: "S <user> <seq> <status> <partition> <offset>" */
  /* delivered_mask[user * per_user + seq] = 1 once reported DELIVERED. */
  _Atomic unsigned char *delivered_mask;
} kf_traffic_t;

/* conf: bootstrap.servers + kmq.topic (+ producer settings). log: a file
 * for the delivery reports (NULL: none). */
void kf_traffic_start_log(kf_traffic_t *t, const kmq_conf_t *conf,
                          kf_verify_t *v, int users, int per_user, int rate,
                          const char *log);
void kf_traffic_start(kf_traffic_t *t, const kmq_conf_t *conf, kf_verify_t *v,
                      int users, int per_user, int rate);
/* Waits for the thread, flushes (timeout_ms) and destroys the producer.
 * Returns true when every sent message had its report. */
bool kf_traffic_finish(kf_traffic_t *t, int timeout_ms);
/* Frees what the traffic keeps after finishing (delivered_mask). */
void kf_traffic_release(kf_traffic_t *t);
/* Number of messages that have a delivery report. */
int64_t kf_traffic_reports(kf_traffic_t *t);

/* ---- reading back --------------------------------------------------------- */

/* Reads every record now in topic (up to the high watermarks) without a
 * group and feeds DLQ records to the checker (reason, and user/seq when the
 * payload is a traffic envelope). Also calls cb per record when not NULL.
 * Returns the count read. Asserts on metadata failure. */
int kf_read_dlq(const char *bootstrap, const char *dlq_topic, kf_verify_t *v,
                void (*cb)(const rd_kafka_message_t *m, void *opaque),
                void *opaque, int timeout_ms);

/* Reads every record now in the main topic: calls cb per record. */
int kf_read_all(const char *bootstrap, const char *topic,
                void (*cb)(const rd_kafka_message_t *m, void *opaque),
                void *opaque, int timeout_ms);

/* Per-partition committed offsets of group on topic (-1: none) into out
 * (capacity n); also the high watermarks into high when not NULL. Returns
 * 0 on success. */
int kf_committed(const char *bootstrap, const char *group, const char *topic,
                 int64_t *out, int64_t *high, int n, int timeout_ms);

/* An outside observer: polls the group's committed offsets every
 * period_ms and reports each increase to the checker as a commit seen. */
typedef struct {
  char bootstrap[512], group[128], topic[128];
  int partitions, period_ms;
  kf_verify_t *v;
  pthread_t thread;
  atomic_int stop;
  atomic_llong polls;
  /* The latest committed offset seen per partition (-1: none), stored after
   * the checker was told (kf_verify_committed), so a waiter reading it
   * never knows of a commit the checker has not seen. */
  atomic_llong seen[KF_MAX_PARTITIONS];
} kf_observer_t;
void kf_observer_start(kf_observer_t *o, const char *bootstrap,
                       const char *group, const char *topic, int partitions,
                       kf_verify_t *v);
void kf_observer_stop(kf_observer_t *o);

/* ---- consumer processes --------------------------------------------------- */

/* Starts tests/faults/fault_consumer with these arguments (NULL-terminated
 * list after the program name), SIGTERM and SIGINT blocked until it can
 * handle them (it unblocks them). It dies with this process. Returns its
 * pid. */
pid_t kf_spawn(const char *const *argv);
/* Sends sig and reaps the process within timeout_ms (SIGKILL after).
 * Returns its wait status, or -1 if it had to be killed. */
int kf_stop_process(pid_t pid, int sig, int timeout_ms);
/* The path of the fault_consumer program. */
const char *kf_consumer_path(void);

/* Lines starting with 'P' in a log file. */
int64_t kf_count_processed(const char *path);

/* Total 'P' lines over n logs. */
int64_t kf_count_processed_all(char logs[][512], int n);

/* Distinct traffic messages (user < users, seq < per) processed over n
 * logs. */
int64_t kf_distinct_processed(char logs[][512], int n, int users, int per);
/* The same, counting only messages with mask[user * per + seq] != 0. */
int64_t kf_distinct_processed_of(char logs[][512], int n, int users, int per,
                                 _Atomic unsigned char *mask);

/* Loads n logs into the checker (source i + 1 for logs[i]). */
void kf_load_logs(kf_verify_t *v, char logs[][512], int n);

/* Writes the report line to stderr and to $KMQ_FAULTS_REPORT (appended),
 * with the scenario's name, duration and the command that produced it. */
void kf_report_emit(const kf_report_t *r, const char *scenario,
                    int64_t elapsed_ms);

/* Asserts lost, reordered, processed-after-commit, written-twice, overlaps
 * and stalled partitions are all 0, naming the first problem the checker
 * found. */
void kf_assert_clean(const kf_report_t *r);
/* The part of kf_assert_clean for scenarios that allow some of the rest
 * (duplicates written by the producer, DLQ'd messages): overlaps and
 * stalled partitions are 0, and were measured (every processing event has
 * an end time, partition ends were given). */
void kf_assert_no_overlap_no_stall(const kf_report_t *r);

#endif
