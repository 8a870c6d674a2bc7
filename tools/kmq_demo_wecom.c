/* kmq demo, WeCom phase: the whole ingest path in one process, with real
 * HTTP on loopback and the real broker between the parts:
 *   simulated WeCom (tools/wecom_sim.h: customers write, signed callbacks)
 *   -> the gateway's parts: callback endpoint (kmq_wecom_callback_*) and
 *      sync_msg puller (kmq_wecom_puller_*, its own thread)
 *   -> the kmq topic, keyed by external_userid
 *   -> a kmq runtime whose processor replies with kf/send_msg, ASYNC
 *      (tools/wecom_replier.h)
 *   -> the simulator checks that every customer got every reply, in order.
 * kmq-wecom gateway runs the same two parts as a program (the broker test
 * test_wecom_gateway_broker runs two of them). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kmq/admin.h"
#include "kmq/runtime.h"
#include "kmq/wecom_api.h"
#include "kmq/wecom_callback.h"
#include "kmq_demo.h"
#include "wecom_replier.h"
#include "wecom_sim.h"

/* A demo callback configuration (not a secret anywhere: made up here). */
#define DEMO_TOKEN "kmqDemoToken"
#define DEMO_AES_KEY "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

typedef struct {
  kmq_wecom_puller_t *p;
  atomic_int stop; /* relaxed: only ends the loop */
} demo_pull_t;

static void *demo_pull_loop(void *opaque) {
  demo_pull_t *d = opaque;
  char errstr[512];
  while (!atomic_load_explicit(&d->stop, memory_order_relaxed))
    if (kmq_wecom_puller_poll(d->p, 100, errstr, sizeof(errstr)))
      fprintf(stderr, "kmq-demo: puller: %s\n", errstr);
  return NULL;
}

static void *demo_run_runtime(void *rt) {
  kmq_runtime_run(rt);
  return NULL;
}

static double demo_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void demo_fail(const char *what, const char *errstr) {
  fprintf(stderr, "kmq-demo: wecom: %s: %s\n", what, errstr);
}

int kmq__demo_wecom(const kmq__demo_wecom_opts_t *o) {
  char errstr[512], sync_topic[80], out_topic[80], dlq[96], group[80],
      url[160], base[128];
  long stamp = (long)time(NULL);
  snprintf(sync_topic, sizeof(sync_topic), "wecom-sync-demo-%ld", stamp);
  snprintf(out_topic, sizeof(out_topic), "wecom-kf-gw-demo-%ld", stamp);
  snprintf(dlq, sizeof(dlq), "%s.dlq", out_topic);
  snprintf(group, sizeof(group), "kmq-demo-wecom-%ld", stamp);
  int ok = 0;
  kmq_conf_t *kafka = kmq_conf_new(), *cbconf = NULL, *rtconf = NULL;
  kmq_wecom_callback_t *cb = NULL;
  kmq_wecom_sim_t *sim = NULL;
  kmq_wecom_client_t *pull_cl = NULL, *reply_cl = NULL;
  kmq_wecom_replier_t *rep = NULL;
  kmq_proc_registry_t *reg = NULL;
  kmq_runtime_t *rt = NULL;
  demo_pull_t pull = {0};
  pthread_t pull_th, rt_th;
  double tj = 0;
  int pull_running = 0, rt_running = 0;

  if (!kafka || kmq_conf_set(kafka, "bootstrap.servers", o->bootstrap,
                             errstr, sizeof(errstr)))
    goto done;
  if (kmq_admin_create_topic(kafka, sync_topic, o->partitions, 1, NULL, 1,
                             30000, errstr, sizeof(errstr)) ||
      kmq_admin_create_topic(kafka, out_topic, o->partitions, 1, NULL, 1,
                             30000, errstr, sizeof(errstr)) ||
      kmq_admin_create_topic(kafka, dlq, o->partitions, 1, NULL, 1, 30000,
                             errstr, sizeof(errstr))) {
    demo_fail("create topics", errstr);
    goto done;
  }
  /* 1. The callback endpoint, on a free loopback port. */
  cbconf = kmq_conf_dup(kafka);
  kmq_wecom_sim_conf_t sc;
  kmq_wecom_sim_conf_init(&sc);
  kmq_wecom_callback_opts_t co = {.token = DEMO_TOKEN,
                                  .aes_key = DEMO_AES_KEY,
                                  .receive_id = sc.corp_id,
                                  .sync_topic = sync_topic};
  if (!(cb = kmq_wecom_callback_new(&co, cbconf, errstr, sizeof(errstr)))) {
    demo_fail("callback endpoint", errstr);
    goto done;
  }
  snprintf(url, sizeof(url), "http://127.0.0.1:%u/wecom/callback",
           (unsigned)kmq_wecom_callback_port(cb));
  /* 2. Simulated WeCom: verifies the URL now, calls it back later. */
  sc.kfids = o->kfids;
  sc.page_max = 100;
  sc.callback_urls[0] = url;
  sc.callback_token = DEMO_TOKEN;
  sc.callback_aes_key = DEMO_AES_KEY;
  if (!(sim = kmq_wecom_sim_new(&sc, errstr, sizeof(errstr)))) {
    demo_fail("simulator", errstr);
    goto done;
  }
  kmq_wecom_sim_base_url(sim, base, sizeof(base));
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  cc.base_url = base;
  cc.corp_id = sc.corp_id;
  cc.corp_secret = sc.corp_secret;
  if (!(pull_cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr))) ||
      !(reply_cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr)))) {
    demo_fail("client", errstr);
    goto done;
  }
  /* 3. The puller. */
  char pgroup[96];
  snprintf(pgroup, sizeof(pgroup), "%s-gateway", group);
  kmq_wecom_puller_conf_t pc = {.kafka = kafka,
                                .sync_topic = sync_topic,
                                .group_id = pgroup,
                                .out_topic = out_topic,
                                .client = pull_cl};
  if (!(pull.p = kmq_wecom_puller_new(&pc, errstr, sizeof(errstr)))) {
    demo_fail("puller", errstr);
    goto done;
  }
  pull_running = !pthread_create(&pull_th, NULL, demo_pull_loop, &pull);
  /* 4. The application: a kmq runtime replying through send_msg. */
  rtconf = kmq_conf_dup(kafka);
  const char *kv[][2] = {{"kmq.topic", out_topic},
                         {"group.id", group},
                         {"kmq.commit.interval.ms", "200"},
                         {"kmq.proc.backoff.ms", "5"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    if (kmq_conf_set(rtconf, kv[i][0], kv[i][1], errstr, sizeof(errstr))) {
      demo_fail(kv[i][0], errstr);
      goto done;
    }
  if (!(rep = kmq_wecom_replier_new(reply_cl, 4, o->customers, errstr,
                                     sizeof(errstr))) ||
      !(reg = kmq_proc_registry_new(errstr, sizeof(errstr))) ||
      kmq_proc_set_default(reg, kmq_wecom_replier_on_message, rep) ||
      !(rt = kmq_runtime_new(rtconf, reg, NULL, NULL, errstr,
                             sizeof(errstr)))) {
    demo_fail("runtime", errstr);
    goto done;
  }
  rt_running = !pthread_create(&rt_th, NULL, demo_run_runtime, rt);

  /* 5. Both consumer groups joined before customers write, so that the
   * latency is the path's, not the groups' first rebalance. */
  tj = demo_now_s();
  for (;;) {
    kmq_wecom_puller_stats_t js;
    kmq_runtime_partition_t parts[64];
    kmq_wecom_puller_stats(pull.p, &js);
    if (js.assigned >= o->partitions &&
        kmq_runtime_partitions(rt, parts, 64) >= (size_t)o->partitions)
      break;
    if (demo_now_s() - tj > 30) {
      demo_fail("groups", "not joined within 30 s");
      goto done;
    }
    struct timespec d = {0, 20 * 1000000L};
    nanosleep(&d, NULL);
  }
  tj = demo_now_s() - tj;

  /* 6. Customers write, one message each per round, a round every 50 ms
   * (pacing the simulated customers, not waiting for kmq). */
  const int total = o->customers * o->messages;
  double t0 = demo_now_s();
  for (int r = 0; r < o->messages; r++) {
    if (kmq_wecom_sim_add_messages(sim, o->customers, 1) < 0) {
      demo_fail("simulator", "out of memory");
      goto done;
    }
    struct timespec d = {0, 50 * 1000000L};
    nanosleep(&d, NULL);
  }
  kmq_wecom_sim_stats_t st;
  do {
    struct timespec d = {0, 20 * 1000000L};
    nanosleep(&d, NULL);
    kmq_wecom_sim_stats(sim, &st);
  } while (st.replies < total && demo_now_s() - t0 < o->timeout_s);
  double secs = demo_now_s() - t0;
  ok = 1;

done:
  if (rt_running) {
    kmq_runtime_stop(rt);
    pthread_join(rt_th, NULL);
  }
  kmq_runtime_metrics_t mx = {0};
  if (rt)
    kmq_runtime_metrics(rt, &mx);
  kmq_runtime_destroy(rt); /* drains and commits; the replier completes */
  kmq_wecom_replier_destroy(rep);
  kmq_proc_registry_destroy(reg);
  if (pull_running) {
    atomic_store_explicit(&pull.stop, 1, memory_order_relaxed);
    pthread_join(pull_th, NULL);
  }
  kmq_wecom_puller_stats_t ps = {0};
  if (pull.p)
    kmq_wecom_puller_stats(pull.p, &ps);
  kmq_wecom_puller_destroy(pull.p);
  if (ok) {
    char report[256];
    double p50 = 0, p99 = 0;
    kmq_wecom_sim_stats(sim, &st);
    int bad = kmq_wecom_sim_verify_replies(sim, false, report,
                                           sizeof(report));
    int nlat = kmq_wecom_sim_latency(sim, 0.50, &p50);
    kmq_wecom_sim_latency(sim, 0.99, &p99);
    kmq_partition_lag_t lag[64];
    int nl = 64;
    int lag_ok = kmq_admin_group_lag(kafka, group, out_topic, lag, &nl, 10000,
                                     errstr, sizeof(errstr)) == KMQ_OK;
    int64_t lagsum = 0;
    printf("== WeCom path: simulated WeCom -> signed callbacks -> gateway "
           "(endpoint + puller) -> Kafka -> kmq runtime -> kf/send_msg\n");
    printf("groups      puller and runtime joined in %.1f s, before the "
           "customers wrote\n", tj);
    printf("customers   %d (%d open_kfids), %lld messages; URL verified %lld, "
           "callbacks answered 200: %lld (retried %lld, given up %lld)\n",
           o->customers, o->kfids, (long long)st.messages,
           (long long)st.url_verified, (long long)st.callbacks_ok,
           (long long)st.callback_retries, (long long)st.callbacks_failed);
    printf("gateway     sync requests %lld, sync_msg pages %lld, messages "
           "pulled %lld, produced to %s: %lld\n",
           (long long)ps.requests, (long long)ps.pages, (long long)ps.pulled,
           out_topic, (long long)ps.produced);
    printf("replies     %lld of %d in %.1f s; per-customer order check: %d "
           "customers failing%s%s\n",
           (long long)st.replies, total, secs, bad, bad ? ": " : "",
           bad ? report : "");
    printf("latency     callback -> reply (message added to its reply "
           "received): p50 %.0f ms, p99 %.0f ms over %d messages\n",
           p50, p99, nlat);
    printf("dead-letters %lld (runtime)\n", (long long)mx.dlq);
    printf("committed   offset/end per partition of %s:", out_topic);
    for (int i = 0; lag_ok && i < nl; i++) {
      printf(" p%d=%lld/%lld", lag[i].partition, (long long)lag[i].committed,
             (long long)lag[i].high);
      lagsum += lag[i].lag;
    }
    printf("%s\n", lag_ok ? "" : " (unavailable)");
    ok = bad == 0 && st.replies == total && st.callbacks_failed == 0 &&
         ps.produced == total && mx.dlq == 0 && lag_ok && lagsum == 0;
    printf("wecom phase %s\n", ok ? "OK" : "FAILED");
  }
  kmq_wecom_client_destroy(reply_cl);
  kmq_wecom_client_destroy(pull_cl);
  kmq_wecom_sim_destroy(sim);
  kmq_wecom_callback_destroy(cb);
  kmq_conf_destroy(rtconf);
  kmq_conf_destroy(cbconf);
  kmq_conf_destroy(kafka);
  return ok;
}
