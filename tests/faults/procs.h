/*
 * Consumer processes for the fault scenarios: a topic with its DLQ, a group
 * of tests/faults/fault_consumer members (each a kmq runtime in its own
 * process, logging what it processes and commits), traffic produced from
 * this process, and an outside observer of the group's commits. When the
 * traffic stops, the running members have kf_stall_ms() to commit the end
 * of every partition (measured: the checker counts the partitions that
 * missed it as stalled); then every member leaves, the group must be
 * committed at the end of every partition, and the checker runs on all the
 * logs plus the DLQ.
 *
 * Every wait has a deadline and fails the test (ck_assert) when it expires;
 * a member that dies unexpectedly fails it too.
 */
#ifndef KMQ_TESTS_FAULTS_PROCS_H
#define KMQ_TESTS_FAULTS_PROCS_H

#include <sys/types.h>

#include "harness.h"

#define KF_MAX_MEMBERS 64

typedef struct {
  char bs[512], topic[96], dlq[112], group[64], dir[256];
  char logs[KF_MAX_MEMBERS][512];
  pid_t pid[KF_MAX_MEMBERS];
  int alive[KF_MAX_MEMBERS];
  int n;        /* members spawned so far (logs[0..n)) */
  int delay_us; /* simulated work per message, up to this */
  /* Set after kf_procs_up, before the first kf_procs_spawn (0: defaults). */
  int workers;                   /* kmq.sched.workers (default 2) */
  int slow_permille;             /* fault_consumer --slow-permille */
  int slow_min_ms, slow_max_ms;  /* --slow-ms MIN:MAX */
  const char *sets[4];           /* more "key=value" for --set, NULL-ended */
  kf_verify_t *v;
  kf_traffic_t tr;
  kf_observer_t obs;
  int users, per, parts;
  int64_t t0;
} kf_procs_t;

/* Topic `name`-<unique> (and its DLQ) with parts partitions, replication
 * factor rf and min.insync.replicas min_isr (0: broker default) on
 * bootstrap; a checker; the commit observer. Logs go to
 * <build>/tests/faults-logs/<topic>/. */
void kf_procs_up(kf_procs_t *P, const char *bootstrap, const char *name,
                 int users, int per, int parts, int rf, int min_isr,
                 int delay_us);

/* Starts the traffic (delivery reports logged to producer.log); tweak may
 * adjust the producer configuration (e.g. message.timeout.ms). */
void kf_procs_traffic(kf_procs_t *P, int rate, void (*tweak)(kmq_conf_t *c));

/* Starts one more member; returns its index. */
int kf_procs_spawn(kf_procs_t *P);
int kf_procs_alive(const kf_procs_t *P);
/* Graceful leave (SIGTERM: drain, commit, leave); asserts exit status 0. */
void kf_procs_leave(kf_procs_t *P, int i);
/* SIGKILL. */
void kf_procs_kill(kf_procs_t *P, int i);

/* Distinct traffic messages processed over all members' logs. */
int64_t kf_procs_distinct(kf_procs_t *P);
/* Waits until n distinct messages were processed. */
void kf_procs_wait(kf_procs_t *P, int64_t n, int timeout_ms);

/* Ends the traffic; gives the running members kf_stall_ms() to commit
 * every partition at its end (the checker judges from the observer's
 * commits: stalled_partitions); unless some stalled, waits until every
 * message the producer reported DELIVERED was processed; stops the members,
 * reads the DLQ and prints the checker's report, then asserts that the
 * group ended committed at the end of every partition. Returns the
 * report. */
kf_report_t kf_procs_finish(kf_procs_t *P, const char *scenario);

/* lost, reordered, processed-after-commit, written-twice, overlaps and
 * stalled partitions are all 0, and everything in the topic was
 * processed. */
void kf_procs_assert_clean(const kf_report_t *r);

/* Kills what is still running, frees the checker. */
void kf_procs_down(kf_procs_t *P);

#endif
