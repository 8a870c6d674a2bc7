/* Consumer processes for the fault scenarios: see procs.h. */
#include "procs.h"

#include <check.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

void kf_procs_up(kf_procs_t *P, const char *bootstrap, const char *name,
                 int users, int per, int parts, int rf, int min_isr,
                 int delay_us) {
  memset(P, 0, sizeof(*P));
  P->t0 = kt_now_ms();
  snprintf(P->bs, sizeof(P->bs), "%s", bootstrap);
  kt_unique_name(P->topic, sizeof(P->topic), name);
  snprintf(P->dlq, sizeof(P->dlq), "%s.dlq", P->topic);
  kt_unique_name(P->group, sizeof(P->group), "fg");
  snprintf(P->dir, sizeof(P->dir), "%s/faults-logs/%s", kf_build_dir(),
           P->topic);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", P->dir);
  ck_assert_int_eq(system(cmd), 0);
  P->users = users;
  P->per = per;
  P->parts = parts;
  P->delay_us = delay_us;
  kf_topics(P->bs, P->topic, parts, rf, min_isr);
  P->v = kf_verify_new(users, per, 1);
  kf_observer_start(&P->obs, P->bs, P->group, P->topic, parts, P->v);
}

int kf_procs_spawn(kf_procs_t *P) {
  ck_assert_int_lt(P->n, KF_MAX_MEMBERS);
  int i = P->n++;
  snprintf(P->logs[i], sizeof(P->logs[i]), "%s/member-%02d.log", P->dir, i);
  char delay[32], workers[16], permille[16], slow_ms[32], dbg[128];
  snprintf(delay, sizeof(delay), "%d", P->delay_us);
  snprintf(workers, sizeof(workers), "%d", P->workers > 0 ? P->workers : 2);
  const char *argv[48] = {kf_consumer_path(),
                          "--bootstrap", P->bs,
                          "--topic", P->topic,
                          "--group", P->group,
                          "--log", P->logs[i],
                          "--delay-us", delay,
                          "--workers", workers,
                          "--set", "consumer.session.timeout.ms=6000",
                          "--set", "consumer.heartbeat.interval.ms=500",
                          "--set", "kmq.commit.interval.ms=200"};
  int a = 0;
  while (argv[a])
    a++;
  if (P->slow_permille > 0) {
    snprintf(permille, sizeof(permille), "%d", P->slow_permille);
    snprintf(slow_ms, sizeof(slow_ms), "%d:%d", P->slow_min_ms,
             P->slow_max_ms);
    argv[a++] = "--slow-permille";
    argv[a++] = permille;
    argv[a++] = "--slow-ms";
    argv[a++] = slow_ms;
  }
  for (int k = 0; k < 4 && P->sets[k]; k++) {
    argv[a++] = "--set";
    argv[a++] = P->sets[k];
  }
  /* KF_CONSUMER_DEBUG=cgrp,...: librdkafka debug contexts for post-mortems. */
  const char *d = getenv("KF_CONSUMER_DEBUG");
  if (d && *d) {
    snprintf(dbg, sizeof(dbg), "consumer.debug=%s", d);
    argv[a++] = "--set";
    argv[a++] = dbg;
  }
  argv[a] = NULL;
  P->pid[i] = kf_spawn(argv);
  P->alive[i] = 1;
  return i;
}

int kf_procs_alive(const kf_procs_t *P) {
  int c = 0;
  for (int i = 0; i < P->n; i++)
    c += P->alive[i];
  return c;
}

void kf_procs_leave(kf_procs_t *P, int i) {
  int st = kf_stop_process(P->pid[i], SIGTERM, 60000);
  P->alive[i] = 0;
  ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "member %d did not leave cleanly (status %d)", i, st);
}

void kf_procs_kill(kf_procs_t *P, int i) {
  kf_stop_process(P->pid[i], SIGKILL, 10000);
  P->alive[i] = 0;
}

int64_t kf_procs_distinct(kf_procs_t *P) {
  return kf_distinct_processed(P->logs, P->n, P->users, P->per);
}

/* Fails the test when a member that should be running has exited. */
static void kf_procs_check_members(kf_procs_t *P) {
  for (int i = 0; i < P->n; i++)
    if (P->alive[i]) {
      int st;
      ck_assert_msg(waitpid(P->pid[i], &st, WNOHANG) == 0,
                    "member %d died (status %d)", i, st);
    }
}

static void kf_procs_nap(void) {
  struct timespec ts = {0, 200 * 1000000};
  nanosleep(&ts, NULL); /* the members work in their own processes */
}

void kf_procs_wait(kf_procs_t *P, int64_t n, int timeout_ms) {
  int64_t deadline = kt_now_ms() + timeout_ms, d = 0;
  while ((d = kf_procs_distinct(P)) < n && kt_now_ms() < deadline) {
    kf_procs_check_members(P);
    kf_procs_nap();
  }
  ck_assert_msg(d >= n, "only %lld of %lld messages processed after %d ms",
                (long long)d, (long long)n, timeout_ms);
}

/* The traffic has stopped: gives the running members kf_stall_ms() to
 * commit every partition at its end, watching the observer (which tells the
 * checker each commit before the waiter can see it), then hands the ends
 * and the deadline to the checker, which counts the stalled partitions.
 * Returns how many were still behind here (the checker's count is the one
 * reported). */
static int kf_procs_await_end_commits(kf_procs_t *P, int64_t *high) {
  ck_assert_msg(kf_procs_alive(P) > 0,
                "no member alive to commit the end of the partitions");
  int64_t committed[64];
  ck_assert_int_le(P->parts, 64);
  ck_assert_int_eq(kf_committed(P->bs, P->group, P->topic, committed, high,
                                P->parts, 10000),
                   0);
  int64_t deadline_ns = kf_now_ns() + (int64_t)kf_stall_ms() * 1000000;
  int behind;
  for (;;) {
    behind = 0;
    for (int p = 0; p < P->parts; p++)
      behind += high[p] > 0 && atomic_load(&P->obs.seen[p]) < high[p];
    if (!behind || kf_now_ns() >= deadline_ns)
      break;
    kf_procs_check_members(P);
    kf_procs_nap();
  }
  for (int p = 0; p < P->parts; p++)
    kf_verify_end(P->v, p, high[p], deadline_ns);
  return behind;
}

kf_report_t kf_procs_finish(kf_procs_t *P, const char *scenario) {
  ck_assert_msg(kf_traffic_finish(&P->tr, 60000),
                "producer: %lld sent, %lld reports",
                (long long)atomic_load(&P->tr.sent),
                (long long)kf_traffic_reports(&P->tr));
  int64_t high[64];
  int behind = kf_procs_await_end_commits(P, high);
  /* Everything the producer reported DELIVERED must come out. Committed at
   * the end, it has; behind, it cannot (the report shows what is lost). */
  int64_t delivered = atomic_load(&P->tr.delivered), d = 0;
  int64_t deadline = kt_now_ms() + (behind ? 0 : 60000);
  while ((d = kf_distinct_processed_of(P->logs, P->n, P->users, P->per,
                                       P->tr.delivered_mask)) < delivered &&
         kt_now_ms() < deadline)
    kf_procs_nap();
  for (int i = 0; i < P->n; i++)
    if (P->alive[i])
      kf_procs_leave(P, i);
  kf_observer_stop(&P->obs);
  int64_t committed[64];
  ck_assert_int_eq(kf_committed(P->bs, P->group, P->topic, committed, NULL,
                                P->parts, 10000),
                   0);
  kf_load_logs(P->v, P->logs, P->n);
  kf_read_dlq(P->bs, P->dlq, P->v, NULL, NULL, 30000);
  kf_report_t r;
  kf_verify_run(P->v, &r);
  kf_report_emit(&r, scenario, kt_now_ms() - P->t0);
  fprintf(stderr, "[%s] members spawned %d; producer delivered=%lld dlq=%lld "
                  "fallback=%lld lost=%lld; logs in %s\n",
          scenario, P->n, (long long)atomic_load(&P->tr.delivered),
          (long long)atomic_load(&P->tr.dlq),
          (long long)atomic_load(&P->tr.fallback),
          (long long)atomic_load(&P->tr.lost), P->dir);
  ck_assert_msg(behind || d == delivered,
                "%lld of %lld delivered messages processed",
                (long long)d, (long long)delivered);
  /* After every member left, the group is at the end of every partition. */
  for (int p = 0; p < P->parts; p++)
    ck_assert_msg(committed[p] == high[p],
                  "partition %d committed at %lld after the members left, "
                  "end %lld",
                  p, (long long)committed[p], (long long)high[p]);
  return r;
}

void kf_procs_assert_clean(const kf_report_t *r) {
  kf_assert_clean(r);
  ck_assert_int_eq(r->processed, r->in_topic + r->dlq_and_processed);
}

void kf_procs_down(kf_procs_t *P) {
  for (int i = 0; i < P->n; i++)
    if (P->alive[i])
      kf_stop_process(P->pid[i], SIGKILL, 10000);
  kf_traffic_release(&P->tr);
  kf_verify_destroy(P->v);
}

void kf_procs_traffic(kf_procs_t *P, int rate, void (*tweak)(kmq_conf_t *c)) {
  kmq_conf_t *pc = kf_conf(P->bs, P->topic, NULL);
  if (tweak)
    tweak(pc);
  /* KF_PRODUCER_DEBUG=eos,msg,...: librdkafka debug for post-mortems. */
  const char *dbg = getenv("KF_PRODUCER_DEBUG");
  if (dbg && *dbg)
    kf_set(pc, "producer.debug", dbg);
  char log[600];
  snprintf(log, sizeof(log), "%s/producer.log", P->dir);
  kf_traffic_start_log(&P->tr, pc, P->v, P->users, P->per, rate, log);
  kmq_conf_destroy(pc);
}

