/* Scenario 2: the only broker of a private single-node cluster is SIGKILLed
 * mid-stream, while this process produces traffic and two consumer
 * processes (kmq runtimes) consume it, then started again on its data. The
 * producer keeps accepting messages meanwhile (they wait in librdkafka, the
 * idempotent producer retries the requests whose answers were lost), the
 * consumers reconnect and rejoin. Asserted: nothing lost, nothing
 * reordered, nothing written twice, nothing processed again below a commit,
 * and the group committed at the end of every partition.
 *
 * Needs the Kafka jars (scripts/setup.sh); starts and stops its own cluster
 * (state in <build>/tests/faults-state-broker-kill, stopped by a watchdog if
 * this process dies). KMQ_SOAK=1: more traffic and three kills. */
#include <check.h>
#include <stdio.h>
#include <time.h>

#include "harness.h"
#include "procs.h"
#include "testutil.h"

START_TEST(broker_sigkill_and_restart) {
  int soak = kf_soak();
  char state[600];
  kf_state_dir(state, sizeof(state), "broker-kill");
  kf_cluster_t cl;
  kf_cluster_start(&cl, state, 1);
  kf_procs_t P;
  int users = soak ? 300 : 100, per = soak ? 200 : 60;
  kf_procs_up(&P, cl.bootstrap, "fbkill", users, per, 4, 1, 0, 1000);
  kf_procs_traffic(&P, soak ? 600 : 250, NULL);
  kf_procs_spawn(&P);
  kf_procs_spawn(&P);
  int kills = soak ? 3 : 1;
  int64_t total = (int64_t)users * per;
  for (int k = 0; k < kills; k++) {
    /* Mid-stream: produced, consumed and committed traffic on both sides. */
    kf_procs_wait(&P, total * (k + 1) / (kills + 2), 120000);
    int64_t sent_before = atomic_load(&P.tr.sent);
    kf_cluster_kill_node(&cl, 1);
    /* The producer goes on accepting while the broker is gone. */
    int64_t deadline = kt_now_ms() + 30000;
    while (atomic_load(&P.tr.sent) < sent_before + 250 &&
           atomic_load(&P.tr.sent) < total && kt_now_ms() < deadline) {
      struct timespec ts = {0, 50 * 1000000};
      nanosleep(&ts, NULL);
    }
    kf_cluster_start_node(&cl, 1);
  }
  kf_report_t r = kf_procs_finish(&P, "broker SIGKILL + restart (1 node)");
  kf_procs_assert_clean(&r);
  ck_assert_int_eq(r.producer_lost, 0);
  kf_procs_down(&P);
  kf_cluster_stop(&cl);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fault_broker");
  TCase *tc = tcase_create("cluster1");
  tcase_set_timeout(tc, 600);
  KF_ADD_TEST(tc, broker_sigkill_and_restart);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
