/* Scenarios 4 and 5: consumer PROCESSES (tests/faults/fault_consumer, each a
 * kmq runtime) on the shared broker ($KMQ_BOOTSTRAP) while this process
 * produces traffic and an observer records the group's committed offsets.
 *
 *   rebalance_storm        1..5 members join and leave (SIGTERM) at least 10
 *                          times while traffic flows (cooperative-sticky);
 *   consumer_sigkill       a member is SIGKILLed mid-batch and restarted,
 *                          twice: redelivery starts at or after the committed
 *                          offset of each partition it owned, nothing lost.
 * The checker merges every member's log; the group must end committed at
 * the end of every partition. KMQ_SOAK=1 runs longer versions. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "procs.h"
#include "testutil.h"

/* ---- scenario 4 --------------------------------------------------------- */

START_TEST(rebalance_storm) {
  int soak = kf_soak();
  kf_procs_t P;
  kf_procs_up(&P, kt_bootstrap(), "fstorm", soak ? 400 : 120, soak ? 150 : 80,
              12, 1, 0, 2000);
  /* Member counts to go through: every step is one join or one leave. */
  static const int plan[] = {2, 3, 4, 5, 4, 3, 2, 1, 2, 3, 2, 1};
  int steps = (int)(sizeof(plan) / sizeof(plan[0]));
  int rounds = soak ? 4 : 1;
  int64_t step_msgs = soak ? 1000 : 500;
  kf_procs_traffic(&P, soak ? 1000 : 400, NULL);
  kf_procs_spawn(&P);
  kf_procs_wait(&P, 200, 60000);
  unsigned seed = (unsigned)kt_now_ms();
  int changes = 0;
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < steps; k++) {
      while (kf_procs_alive(&P) < plan[k]) {
        kf_procs_spawn(&P);
        changes++;
      }
      while (kf_procs_alive(&P) > plan[k]) {
        /* A random live member leaves. */
        int pick = (int)(rand_r(&seed) % (unsigned)kf_procs_alive(&P));
        for (int i = 0; i < P.n; i++)
          if (P.alive[i] && pick-- == 0) {
            kf_procs_leave(&P, i);
            break;
          }
        changes++;
      }
      /* Traffic must keep moving through every membership: a stuck
       * rebalance (librdkafka #4800) fails here. */
      int64_t want = kf_procs_distinct(&P) + step_msgs;
      int64_t cap = (int64_t)P.users * P.per;
      kf_procs_wait(&P, want < cap ? want : cap, 60000);
    }
  ck_assert_int_ge(changes, 10);
  kf_report_t r = kf_procs_finish(&P, "storm: 1..5 members, joins/leaves");
  fprintf(stderr, "[storm] membership changes: %d\n", changes);
  kf_procs_assert_clean(&r);
  kf_procs_down(&P);
}
END_TEST

/* ---- scenario 5 --------------------------------------------------------- */

typedef struct {
  int64_t min_after[64]; /* lowest offset processed after the kill, -1 */
  int64_t max_victim[64]; /* highest offset the victim processed, -1 */
} after_t;

static void scan_after(kf_procs_t *P, int victim, int64_t t_kill, after_t *a) {
  for (int p = 0; p < 64; p++)
    a->min_after[p] = a->max_victim[p] = -1;
  char line[512];
  for (int i = 0; i < P->n; i++) {
    FILE *f = fopen(P->logs[i], "r");
    if (!f)
      continue;
    while (fgets(line, sizeof(line), f)) {
      int u, s, p;
      long long off, t;
      if (line[0] != 'P' ||
          sscanf(line + 1, "%d %d %d %lld %lld", &u, &s, &p, &off, &t) != 5 ||
          p < 0 || p >= 64)
        continue;
      if (i == victim && off > a->max_victim[p])
        a->max_victim[p] = off;
      if (i != victim && t > t_kill &&
          (a->min_after[p] < 0 || off < a->min_after[p]))
        a->min_after[p] = off;
    }
    fclose(f);
  }
}

START_TEST(consumer_sigkill) {
  int soak = kf_soak();
  kf_procs_t P;
  const int parts = 6;
  kf_procs_up(&P, kt_bootstrap(), "fkill", soak ? 300 : 100, soak ? 200 : 60,
              parts, 1, 0, 8000);
  kf_procs_traffic(&P, soak ? 800 : 300, NULL);
  kf_procs_spawn(&P);
  kf_procs_spawn(&P);
  int kills = soak ? 5 : 2;
  int64_t window_total = 0, redelivered_at_commit = 0, checked = 0;
  for (int k = 0; k < kills; k++) {
    /* Mid-stream: both members busy, the victim has work in flight (slow
     * processors, commits every 200 ms). */
    kf_procs_wait(&P, kf_procs_distinct(&P) + 300, 60000);
    int victim = -1;
    for (int i = P.n - 1; i >= 0 && victim < 0; i--)
      if (P.alive[i] && kf_count_processed(P.logs[i]) > 0)
        victim = i;
    ck_assert_int_ge(victim, 0);
    int64_t t_kill = kf_now_ns();
    kf_procs_kill(&P, victim);
    /* The dead member commits nothing more; a commit it had in flight may
     * still land, which only raises the offsets read here. */
    int64_t committed[64];
    ck_assert_int_eq(kf_committed(P.bs, P.group, P.topic, committed, NULL,
                                  parts, 10000),
                     0);
    /* Restart; its partitions come back after the session timeout. */
    kf_procs_spawn(&P);
    after_t a;
    int64_t deadline = kt_now_ms() + 60000;
    int pending;
    do {
      struct timespec ts = {0, 200 * 1000000};
      nanosleep(&ts, NULL);
      scan_after(&P, victim, t_kill, &a);
      pending = 0;
      for (int p = 0; p < parts; p++)
        if (a.max_victim[p] >= 0 && a.min_after[p] < 0 &&
            committed[p] <= a.max_victim[p])
          pending++;
    } while (pending && kt_now_ms() < deadline);
    ck_assert_msg(!pending, "%d partition(s) of the killed member not "
                            "consumed again within 60 s", pending);
    for (int p = 0; p < parts; p++) {
      if (a.max_victim[p] < 0 || a.min_after[p] < 0)
        continue;
      checked++;
      /* Redelivery starts at the committed offset, never before it. */
      ck_assert_msg(a.min_after[p] >= committed[p],
                    "partition %d redelivered from %lld, below its committed "
                    "offset %lld",
                    p, (long long)a.min_after[p], (long long)committed[p]);
      if (a.min_after[p] == committed[p])
        redelivered_at_commit++;
      if (a.max_victim[p] >= committed[p])
        window_total += a.max_victim[p] - committed[p] + 1;
    }
    fprintf(stderr, "[sigkill] kill %d: member %d; uncommitted window so far "
                    "%lld offsets\n",
            k + 1, victim, (long long)window_total);
  }
  ck_assert_msg(window_total > 0, "no kill hit processed-but-uncommitted "
                                  "work: not mid-batch");
  kf_report_t r = kf_procs_finish(&P, "sigkill: consumer killed mid-batch");
  fprintf(stderr, "[sigkill] partitions checked %lld, redelivery exactly at "
                  "the commit %lld, uncommitted window %lld offsets, "
                  "duplicates %lld\n",
          (long long)checked, (long long)redelivered_at_commit,
          (long long)window_total, (long long)r.dup_uncommitted);
  /* Every duplicate is at or above the last commit seen before it was
   * processed again (dup_committed == 0): the window the kill cut, plus
   * what the survivors could not commit while the group waited for the
   * dead member's session to expire (librdkafka 2.0.2 then loses their
   * assignment on ILLEGAL_GENERATION: #4059, see tests/FAULTS.md). */
  kf_procs_assert_clean(&r);
  kf_procs_down(&P);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fault_procs");
  TCase *tc = tcase_create("procs");
  tcase_set_timeout(tc, 600);
  KF_ADD_TEST(tc, rebalance_storm);
  KF_ADD_TEST(tc, consumer_sigkill);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
