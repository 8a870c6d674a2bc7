/* Two `kmq-wecom gateway` processes in one group on the real broker, the
 * simulator sending signed callbacks to both in turn, one gateway killed
 * (SIGKILL) mid-run: every message the simulator holds reaches the kmq topic
 * at least once, in each customer's order, duplicates only from the page in
 * flight at the kill (at most one page, counted); and a kmq runtime's
 * replies (tools/wecom_replier.h) reach every customer, in order, once. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "brokerutil.h"
#include "kmq/admin.h"
#include "kmq/processor.h"
#include "kmq/runtime.h"
#include "kmq/wecom_api.h"
#include "testutil.h"
#include "wecom_replier.h"
#include "wecom_sim.h"

#define CUSTOMERS 16
#define KFIDS 8
#define ROUNDS 12
#define PAGE_MAX 10
#define TOKEN "gwTestToken"
#define AES_KEY "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
#define SECRET "sim-secret-0123456789"

typedef struct {
  pid_t pid;
  int fd; /* its stdout */
  char url[128];
} gw_t;

typedef struct {
  char sync[128], out[128], dlq[160], group[128], base[128];
  kmq_conf_t *kafka;
} fx_t;

/* A free loopback port for the simulator, which the gateways must know
 * before it starts (it verifies their URLs when it starts). */
static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  ck_assert(!bind(s, (struct sockaddr *)&sa, sizeof(sa)));
  ck_assert(!getsockname(s, (struct sockaddr *)&sa, &len));
  close(s);
  return ntohs(sa.sin_port);
}

static void gw_start(gw_t *g, const fx_t *f) {
  int p[2];
  char bs[256];
  ck_assert(!pipe(p));
  snprintf(bs, sizeof(bs), "bootstrap.servers=%s", kt_bootstrap());
  g->pid = fork();
  ck_assert(g->pid >= 0);
  if (g->pid == 0) {
    /* A test that dies (timeout, failed assertion) takes its gateways. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execl(KMQ_WECOM_BIN, "kmq-wecom", "gateway", "--receive-id", "wwSIMCORP",
          "--sync-topic", f->sync, "--out-topic", f->out, "--group", f->group,
          "--listen", "127.0.0.1:0", "--base-url", f->base, "-X", bs, "-X",
          "consumer.session.timeout.ms=6000", "-X",
          "consumer.heartbeat.interval.ms=500", (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  g->fd = p[0];
  /* Its "ready" line names the port; the deadline bounds a gateway that
   * cannot start (it exits, and the pipe closes). */
  char line[512];
  size_t n = 0;
  int64_t until = kt_now_ms() + 30000;
  while (!memchr(line, '\n', n) && kt_now_ms() < until &&
         n < sizeof(line) - 1) {
    struct pollfd pf = {.fd = g->fd, .events = POLLIN};
    if (poll(&pf, 1, 200) > 0) {
      ssize_t r = read(g->fd, line + n, sizeof(line) - 1 - n);
      ck_assert_msg(r > 0, "gateway exited before it was ready");
      n += (size_t)r;
    }
  }
  line[n] = '\0';
  unsigned port = 0;
  const char *at = strstr(line, "listening on 127.0.0.1:");
  ck_assert_msg(at && sscanf(at, "listening on 127.0.0.1:%u", &port) == 1,
                "no ready line: %s", line);
  snprintf(g->url, sizeof(g->url), "http://127.0.0.1:%u/wecom/callback", port);
}

static int gw_stop(gw_t *g, int sig) {
  int st = 0;
  kill(g->pid, sig);
  while (waitpid(g->pid, &st, 0) < 0 && errno == EINTR)
    ;
  close(g->fd);
  return st;
}

static int64_t topic_count(const fx_t *f) {
  kmq_partition_lag_t lag[8];
  int n = 8;
  char errstr[256];
  int64_t total = 0;
  ck_assert_msg(!kmq_admin_group_lag(f->kafka, "nobody", f->out, lag, &n,
                                     10000, errstr, sizeof(errstr)),
                "%s", errstr);
  for (int i = 0; i < n; i++)
    total += lag[i].high - lag[i].low;
  return total;
}

typedef struct {
  const fx_t *f;
  kmq_wecom_sim_t *sim;
  int64_t want;
} wait_t;

static bool topic_has(void *opaque) {
  wait_t *w = opaque;
  return topic_count(w->f) >= w->want;
}

/* Every sync request committed by the gateways' group: A's partitions
 * too, taken over by B. */
static bool requests_committed(void *opaque) {
  wait_t *w = opaque;
  kmq_partition_lag_t lag[8];
  int n = 8;
  char errstr[256];
  if (kmq_admin_group_lag(w->f->kafka, w->f->group, w->f->sync, lag, &n,
                          10000, errstr, sizeof(errstr)))
    return false;
  for (int i = 0; i < n; i++)
    if (lag[i].high > lag[i].low && lag[i].committed != lag[i].high)
      return false;
  return true;
}

static bool all_replied(void *opaque) {
  wait_t *w = opaque;
  return kmq_wecom_sim_verify_replies(w->sim, false, NULL, 0) == 0;
}

/* The topic as each customer's sequence of seqs (one partition per key). */
typedef struct {
  int next[CUSTOMERS]; /* first occurrences seen: 0..next-1 */
  int dups, gaps, records;
  char first_gap[128];
} order_t;

static void on_record(const rd_kafka_message_t *m, void *opaque) {
  order_t *o = opaque;
  char id[64];
  int u, seq;
  o->records++;
  kt_header(m, "msg_id", id, sizeof(id));
  ck_assert_msg(!kmq_wecom_sim_parse_msgid(id, &u, &seq), "msg_id %s", id);
  ck_assert(u >= 0 && u < CUSTOMERS);
  if (seq == o->next[u])
    o->next[u]++;
  else if (seq < o->next[u])
    o->dups++; /* a repeat of a page delivered before the kill */
  else if (o->gaps++ == 0)
    snprintf(o->first_gap, sizeof(o->first_gap),
             "customer %d: seq %d after %d", u, seq, o->next[u] - 1);
}

static void *run_runtime(void *rt) {
  kmq_runtime_run(rt);
  return NULL;
}

START_TEST(two_gateways_one_killed) {
  fx_t f;
  char errstr[512];
  memset(&f, 0, sizeof(f));
  kt_unique_name(f.sync, sizeof(f.sync), "wecom-gw-sync");
  kt_unique_name(f.out, sizeof(f.out), "wecom-gw-kf");
  kt_unique_name(f.group, sizeof(f.group), "wecom-gw");
  snprintf(f.dlq, sizeof(f.dlq), "%s.dlq", f.out);
  kt_create_topics(f.sync, 4, NULL);
  kt_create_topics(f.out, 4, f.dlq);
  f.kafka = kmq_conf_new();
  ck_assert(!kmq_conf_set(f.kafka, "bootstrap.servers", kt_bootstrap(),
                          errstr, sizeof(errstr)));
  int sim_port = free_port();
  snprintf(f.base, sizeof(f.base), "http://127.0.0.1:%d/cgi-bin", sim_port);
  setenv("KMQ_WECOM_TOKEN", TOKEN, 1);
  setenv("KMQ_WECOM_AES_KEY", AES_KEY, 1);
  setenv("KMQ_WECOM_SECRET", SECRET, 1);
  gw_t a, b;
  gw_start(&a, &f);
  gw_start(&b, &f);

  /* WeCom calls both gateways in turn (one address in front of both). */
  kmq_wecom_sim_conf_t sc;
  kmq_wecom_sim_conf_init(&sc);
  sc.port = sim_port;
  sc.kfids = KFIDS;
  sc.page_max = PAGE_MAX;
  sc.corp_secret = SECRET;
  sc.callback_urls[0] = a.url;
  sc.callback_urls[1] = b.url;
  sc.callback_token = TOKEN;
  sc.callback_aes_key = AES_KEY;
  sc.callback_attempts = 4; /* A dead: its callback goes to B at once */
  kmq_wecom_sim_t *sim = kmq_wecom_sim_new(&sc, errstr, sizeof(errstr));
  ck_assert_msg(sim, "%s", errstr);

  /* The application: replies through send_msg, ASYNC. */
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  cc.base_url = f.base;
  cc.corp_id = sc.corp_id;
  cc.corp_secret = SECRET;
  kmq_wecom_client_t *cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  ck_assert_msg(cl, "%s", errstr);
  kmq_wecom_replier_t *rep =
      kmq_wecom_replier_new(cl, 2, CUSTOMERS, errstr, sizeof(errstr));
  ck_assert_msg(rep, "%s", errstr);
  kmq_conf_t *c = kmq_conf_dup(f.kafka);
  char group[160];
  snprintf(group, sizeof(group), "%s-app", f.group);
  const char *kv[][2] = {{"kmq.topic", f.out},
                         {"group.id", group},
                         {"kmq.commit.interval.ms", "200"},
                         {"kmq.proc.backoff.ms", "5"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)));
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(
      kmq_proc_set_default(reg, kmq_wecom_replier_on_message, rep), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  pthread_t rth;
  pthread_create(&rth, NULL, run_runtime, rt);

  /* Half the customers' messages, then A dies once some are in the topic. */
  for (int r = 0; r < ROUNDS / 2; r++)
    ck_assert_int_eq(kmq_wecom_sim_add_messages(sim, CUSTOMERS, 1), CUSTOMERS);
  wait_t w = {&f, sim, CUSTOMERS * ROUNDS / 4};
  ck_assert_msg(kt_wait_until(topic_has, &w, 30000), "nothing pulled");
  int st = gw_stop(&a, SIGKILL);
  ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  /* The rest: callbacks to A fail and are retried on B. */
  for (int r = ROUNDS / 2; r < ROUNDS; r++)
    ck_assert_int_eq(kmq_wecom_sim_add_messages(sim, CUSTOMERS, 1), CUSTOMERS);
  ck_assert_msg(kt_wait_until(all_replied, &w, 60000), "replies missing");
  ck_assert_msg(kt_wait_until(requests_committed, &w, 30000),
                "sync requests left uncommitted");

  st = gw_stop(&b, SIGTERM);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gateway B: %d", st);
  ck_assert(requests_committed(&w)); /* leaving the group kept them */
  kmq_runtime_stop(rt);
  pthread_join(rth, NULL);
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(rt, &mx);
  kmq_runtime_destroy(rt);
  kmq_wecom_replier_counts_t rc;
  kmq_wecom_replier_counts(rep, &rc);
  kmq_wecom_replier_destroy(rep);

  kmq_wecom_sim_stats_t ss;
  kmq_wecom_sim_stats(sim, &ss);
  ck_assert_int_eq(ss.url_verified, 2);
  ck_assert_int_eq(ss.callbacks_failed, 0);
  ck_assert_int_eq(ss.messages, CUSTOMERS * ROUNDS);
  order_t o = {0};
  int64_t n = topic_count(&f);
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), f.out, (int)n, 20000,
                                 on_record, &o),
                   (int)n);
  fprintf(stderr,
          "gateway test: %d records, %d duplicates, callbacks retried %lld, "
          "replies %lld, duplicates skipped by the app %lld\n",
          o.records, o.dups, (long long)ss.callback_retries,
          (long long)rc.sent, (long long)rc.duplicates);
  ck_assert_msg(o.gaps == 0, "%s", o.first_gap);
  for (int u = 0; u < CUSTOMERS; u++)
    ck_assert_int_eq(o.next[u], kmq_wecom_sim_sent(sim, u));
  ck_assert_int_le(o.dups, PAGE_MAX);
  ck_assert_int_eq(o.records, CUSTOMERS * ROUNDS + o.dups);
  char report[256];
  ck_assert_msg(!kmq_wecom_sim_verify_replies(sim, false, report,
                                              sizeof(report)),
                "%s", report);
  ck_assert_int_eq(rc.sent, CUSTOMERS * ROUNDS);
  ck_assert_int_eq(rc.duplicates, o.dups);
  ck_assert_int_eq(mx.dlq, 0);

  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  kmq_wecom_client_destroy(cl);
  kmq_wecom_sim_destroy(sim);
  kmq_conf_destroy(f.kafka);
}
END_TEST

int main(void) {
  if (kmq_wecom_global_init())
    return 1;
  signal(SIGPIPE, SIG_IGN);
  Suite *s = suite_create("wecom_gateway_broker");
  TCase *tc = tcase_create("gateway");
  tcase_set_timeout(tc, 85);
  tcase_add_test(tc, two_gateways_one_killed);
  suite_add_tcase(s, tc);
  int rc = kt_run(s);
  kmq_wecom_global_cleanup();
  return rc;
}
