/*
 * fault_consumer: a kmq runtime in its own process for the multi-process
 * fault scenarios (rebalance storm, SIGKILL of a consumer, slow processors
 * outliving a revoke).
 *
 *   fault_consumer --bootstrap B --topic T --group G --log FILE
 *                  [--delay-us N] [--workers N]
 *                  [--slow-permille N --slow-ms MIN:MAX] [--set key=value]...
 *
 * --delay-us: every message sleeps up to N us (varies per message);
 * --slow-permille N: N of every 1000 messages (chosen by a hash of user and
 * seq, so the same ones in every member and on every redelivery) sleep
 * MIN..MAX ms instead (--slow-ms, default 1000:2000): processings that
 * outlive a revoke or close bound.
 *
 * Every traffic message it processes is appended to FILE as
 *   P <user> <seq> <partition> <offset> <t_ns> <t_end_ns>
 * (t_ns: CLOCK_MONOTONIC when the processor started, t_end_ns when it is
 * about to return: the interval the checker's overlap count uses) with one
 * write(2) per line, so the line is in the page cache when the processor
 * returns and a SIGKILL afterwards cannot lose it. Each increase of a
 * partition's committed offset that the consumer confirms is appended as
 *   C <partition> <offset> <t_ns>
 * (sampled after every poll). "#" lines mark start, exit and each change
 * of the revoked/lost partition counts (with the time).
 * SIGTERM/SIGINT stop it gracefully (drain, commit, leave the group): exit
 * status 0. Exit 2 on a usage or set-up error.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kmq/runtime.h"
#include "traffic.h"
#include "verify.h"

#define FC_MAX_PARTS 256

static kmq_runtime_t *volatile the_rt;
static volatile sig_atomic_t stopping;

typedef struct {
  int fd;
  int delay_us;
  int slow_permille, slow_min_ms, slow_max_ms;
  atomic_llong processed, slow;
} fc_app_t;

static void fc_nap_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
  if (the_rt)
    kmq_runtime_stop(the_rt); /* async-signal-safe */
}

static kmq_proc_result_t on_msg(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                                void *opaque) {
  fc_app_t *app = opaque;
  int64_t t = kf_now_ns();
  int u, seq;
  if (kmq_traffic_msg_id(msg, ctx, &u, &seq))
    return KMQ_PROC_FAIL;
  /* Simulated work; varies per message so users finish out of order. */
  unsigned r = (unsigned)(u * 2654435761u + (unsigned)seq * 40503u);
  /* A second, independent mix for the slow choice (r's low bits pace the
   * ordinary delay). */
  unsigned h = r ^ (r >> 15);
  h *= 2246822519u;
  h ^= h >> 13;
  if (app->slow_permille > 0 && h % 1000u < (unsigned)app->slow_permille) {
    unsigned span = (unsigned)(app->slow_max_ms - app->slow_min_ms + 1);
    atomic_fetch_add(&app->slow, 1);
    fc_nap_us(1000L * (app->slow_min_ms + (long)((h / 1000u) % span)));
  } else if (app->delay_us > 0) {
    fc_nap_us((long)(r % (unsigned)app->delay_us));
  }
  kf_log_line(app->fd, "P %d %d %d %lld %lld %lld\n", u, seq,
              (int)kmq_proc_ctx_partition(ctx),
              (long long)kmq_proc_ctx_offset(ctx), (long long)t,
              (long long)kf_now_ns());
  atomic_fetch_add(&app->processed, 1);
  return KMQ_PROC_OK;
}

typedef struct {
  int fd;
  int64_t last[FC_MAX_PARTS];
} fc_commits_t;

static void on_partition(const kmq_partition_info_t *pi, void *opaque) {
  fc_commits_t *c = opaque;
  if (pi->partition < 0 || pi->partition >= FC_MAX_PARTS)
    return;
  if (pi->committed > c->last[pi->partition]) {
    c->last[pi->partition] = pi->committed;
    kf_log_line(c->fd, "C %d %lld %lld\n", (int)pi->partition,
                (long long)pi->committed, (long long)kf_now_ns());
  }
}

static int usage(void) {
  fprintf(stderr, "usage: fault_consumer --bootstrap B --topic T --group G "
                  "--log FILE [--delay-us N] [--workers N] [--slow-permille N "
                  "--slow-ms MIN:MAX] [--set k=v]...\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *bootstrap = NULL, *topic = NULL, *group = NULL, *log = NULL;
  const char *workers = "2";
  fc_app_t app = {.fd = -1, .slow_min_ms = 1000, .slow_max_ms = 2000};
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v)
      return usage();
    i++;
    if (!strcmp(a, "--bootstrap"))
      bootstrap = v;
    else if (!strcmp(a, "--topic"))
      topic = v;
    else if (!strcmp(a, "--group"))
      group = v;
    else if (!strcmp(a, "--log"))
      log = v;
    else if (!strcmp(a, "--delay-us"))
      app.delay_us = atoi(v);
    else if (!strcmp(a, "--workers"))
      workers = v;
    else if (!strcmp(a, "--slow-permille"))
      app.slow_permille = atoi(v);
    else if (!strcmp(a, "--slow-ms")) {
      if (sscanf(v, "%d:%d", &app.slow_min_ms, &app.slow_max_ms) != 2 ||
          app.slow_min_ms < 0 || app.slow_max_ms < app.slow_min_ms)
        return usage();
    }
    else if (!strcmp(a, "--set")) {
      char kv[512];
      snprintf(kv, sizeof(kv), "%s", v);
      char *eq = strchr(kv, '=');
      if (!eq)
        return usage();
      *eq = '\0';
      if (kmq_conf_set(conf, kv, eq + 1, errstr, sizeof(errstr))) {
        fprintf(stderr, "fault_consumer: %s\n", errstr);
        return 2;
      }
    } else
      return usage();
  }
  if (!bootstrap || !topic || !group || !log)
    return usage();
  const char *kv[][2] = {{"bootstrap.servers", bootstrap},
                         {"kmq.topic", topic},
                         {"group.id", group},
                         {"kmq.sched.workers", workers}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    if (kmq_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr))) {
      fprintf(stderr, "fault_consumer: %s\n", errstr);
      return 2;
    }
  app.fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (app.fd < 0) {
    perror(log);
    return 2;
  }
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  if (!reg || kmq_proc_set_default(reg, on_msg, &app)) {
    fprintf(stderr, "fault_consumer: registry: %s\n", errstr);
    return 2;
  }
  kmq_runtime_t *rt = kmq_runtime_new(conf, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  if (!rt) {
    fprintf(stderr, "fault_consumer: %s\n", errstr);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  the_rt = rt;
  /* kf_spawn started us with both blocked: one that came during start-up
   * is delivered here, to this thread (the runtime's threads keep them
   * blocked), and stops the run before its first poll. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
  kf_log_line(app.fd, "# start pid %d t %lld\n", (int)getpid(),
              (long long)kf_now_ns());
  fc_commits_t commits = {.fd = app.fd};
  for (int p = 0; p < FC_MAX_PARTS; p++)
    commits.last[p] = -1;
  int rc = 0;
  int64_t revoked = 0, lost = 0;
  while (!stopping) {
    int n = kmq_runtime_poll(rt, 100);
    if (n < 0 && n != KMQ_ERR_BACKPRESSURE) {
      fprintf(stderr, "fault_consumer: poll: %s\n",
                  kmq_err2str((kmq_err_t)n));
      rc = 1;
      break;
    }
    kmq_consumer_partitions(kmq_runtime_consumer(rt), on_partition, &commits);
    /* For post-mortems of overlaps: when partitions were revoked or lost
     * (sampled after the poll that ran the rebalance callback). */
    kmq_consumer_stats_t st;
    kmq_consumer_stats(kmq_runtime_consumer(rt), &st);
    if (st.revoked != revoked || st.lost != lost) {
      revoked = st.revoked;
      lost = st.lost;
      kf_log_line(app.fd, "# revoked %lld lost %lld t %lld\n",
                  (long long)revoked, (long long)lost, (long long)kf_now_ns());
    }
  }
  the_rt = NULL;
  /* Counted before the close: its final revoke is the leave itself. */
  kmq_consumer_stats_t cs;
  kmq_consumer_stats(kmq_runtime_consumer(rt), &cs);
  kmq_runtime_destroy(rt);
  kf_log_line(app.fd,
              "# exit pid %d processed %lld slow %lld rebalances %lld "
              "revoked %lld lost %lld t %lld\n",
              (int)getpid(), (long long)atomic_load(&app.processed),
              (long long)atomic_load(&app.slow), (long long)cs.rebalances,
              (long long)cs.revoked, (long long)cs.lost,
              (long long)kf_now_ns());
  close(app.fd);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(conf);
  return rc;
}
