/* Fault-test harness, the private cluster part: scripts/kafka.sh driven
 * from the test, with a watchdog process that stops the cluster when the
 * test dies however it dies. See harness.h. */
#include "harness.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#ifndef KMQ_SOURCE_DIR
#error "KMQ_SOURCE_DIR must be defined (tests/faults.cmake)"
#endif
#ifndef KF_BUILD_DIR
#error "KF_BUILD_DIR must be defined (tests/faults.cmake)"
#endif

/* ---- cluster ---------------------------------------------------------------- */

const char *kf_build_dir(void) { return KF_BUILD_DIR; }

void kf_state_dir(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/faults-state-%s", KF_BUILD_DIR, name);
}

/* Runs a kafka.sh command for c's state dir; stdout into out (may be NULL).
 * Returns the exit status. */
static int kf_kafka_sh(const kf_cluster_t *c, char *out, size_t outsz,
                       const char *args) {
  char cmd[2048];
  snprintf(cmd, sizeof(cmd), "KMQ_KAFKA_STATE='%s' bash '%s/scripts/kafka.sh' %s",
           c->state, KMQ_SOURCE_DIR, args);
  FILE *f = popen(cmd, "r");
  if (!f)
    return -1;
  char line[1024];
  if (out && outsz)
    out[0] = '\0';
  while (fgets(line, sizeof(line), f))
    if (out && !strncmp(line, "KMQ_BOOTSTRAP=", 14)) {
      size_t n = strcspn(line + 14, "\r\n");
      if (n >= outsz)
        n = outsz - 1;
      memcpy(out, line + 14, n);
      out[n] = '\0';
    }
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void kf_cluster_start(kf_cluster_t *c, const char *state_dir, int nodes) {
  memset(c, 0, sizeof(*c));
  snprintf(c->state, sizeof(c->state), "%s", state_dir);
  c->nodes = nodes;
  /* The watchdog: a shell (exec'd at once, so nothing of this process's
   * state is used after fork) that waits for this process to die, however
   * it dies, then stops the cluster. kf_cluster_stop kills it. */
  char script[2048];
  snprintf(script, sizeof(script),
           "exec </dev/null >/dev/null 2>&1; "
           "while kill -0 %d; do sleep 0.5; done; "
           "KMQ_KAFKA_STATE='%s' bash '%s/scripts/kafka.sh' stop",
           (int)getpid(), c->state, KMQ_SOURCE_DIR);
  pid_t w = fork();
  ck_assert_int_ge(w, 0);
  if (w == 0) {
    setsid(); /* not in the test's process group: survives its killing */
    execl("/bin/bash", "bash", "-c", script, (char *)NULL);
    _exit(127);
  }
  c->watchdog = w;
  kf_kafka_sh(c, NULL, 0, "stop >/dev/null 2>&1");
  char args[64];
  snprintf(args, sizeof(args), "start --nodes %d", nodes);
  int64_t t0 = kt_now_ms();
  int st = kf_kafka_sh(c, c->bootstrap, sizeof(c->bootstrap), args);
  ck_assert_msg(st == 0 && c->bootstrap[0],
                "kafka.sh start --nodes %d failed (status %d)", nodes, st);
  fprintf(stderr, "faults: %d-node cluster at %s in %lld ms (state %s)\n",
          nodes, c->bootstrap, (long long)(kt_now_ms() - t0), c->state);
}

void kf_cluster_kill_node(kf_cluster_t *c, int n) {
  char args[64];
  snprintf(args, sizeof(args), "kill-node %d", n);
  ck_assert_msg(kf_kafka_sh(c, NULL, 0, args) == 0, "kill-node %d failed", n);
}

void kf_cluster_start_node(kf_cluster_t *c, int n) {
  char args[64];
  snprintf(args, sizeof(args), "start-node %d", n);
  int64_t t0 = kt_now_ms();
  ck_assert_msg(kf_kafka_sh(c, NULL, 0, args) == 0, "start-node %d failed", n);
  fprintf(stderr, "faults: node %d back in %lld ms\n", n,
          (long long)(kt_now_ms() - t0));
}

void kf_cluster_stop(kf_cluster_t *c) {
  if (!c->state[0])
    return;
  kf_kafka_sh(c, NULL, 0, "stop >/dev/null 2>&1");
  if (c->watchdog > 0) {
    kill(c->watchdog, SIGKILL);
    waitpid(c->watchdog, NULL, 0);
    c->watchdog = 0;
  }
  c->state[0] = '\0';
}
