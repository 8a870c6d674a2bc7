/* kmq-wecom gateway: WeCom's side of kmq in one process. The callback
 * endpoint (include/kmq/wecom_callback.h) turns signed callbacks into sync
 * requests on --sync-topic; the puller (include/kmq/wecom_api.h), a member
 * of consumer group --group on that topic, calls kf/sync_msg for each and
 * produces the customers' messages to --out-topic as kmq envelopes keyed by
 * external_userid. Several gateways may run with one group: the group gives
 * each sync-topic partition, hence each open_kfid, to one puller at a time,
 * and any gateway's endpoint may take any callback.
 *
 * Threads: main's thread waits for SIGINT / SIGTERM (blocked everywhere
 * else); the endpoint has its own; one thread polls the puller. Stopping:
 * the pull thread finishes the request in hand (kmq_wecom_puller_poll
 * returns after its commit; bounded by the client's timeouts and
 * max_pages), then the puller leaves the group and the endpoint drains. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/conf.h"
#include "kmq/wecom.h"
#include "kmq/wecom_api.h"
#include "kmq/wecom_callback.h"
#include "kmq_wecom_cli.h"

#define GW_DEFAULT_GROUP "kmq-wecom-gateway"
#define GW_POLL_MS 200 /* how soon the pull thread sees a stop */

static void usage_gateway(FILE *f) {
  fprintf(f,
          "Usage: kmq-wecom gateway [flags]\n"
          "The callback endpoint (as serve) and the sync_msg puller in one "
          "process:\ncallbacks -> sync requests on --sync-topic -> "
          "kf/sync_msg -> kmq envelopes\nkeyed by external_userid on "
          "--out-topic. Runs until SIGINT or SIGTERM.\n"
          "  --token T, --aes-key K  callback Token and EncodingAESKey\n"
          "  --receive-id R     the corp id (callbacks and the API)\n"
          "  --sync-topic T     topic of the sync requests (required); "
          "cursors on T.cursors\n"
          "  --out-topic T      kmq's message topic (default: kmq.topic)\n"
          "  --group G          the pullers' consumer group (default "
          GW_DEFAULT_GROUP ")\n"
          "  --base-url URL     WeCom API (default "
          "https://qyapi.weixin.qq.com/cgi-bin)\n"
          "  --listen A:P       IPv4 address and port (default "
          "127.0.0.1:8080; port 0: any)\n"
          "  --path P           callback path (default /wecom/callback)\n"
          "  --max-skew SEC     timestamp skew and replay window (default "
          "%d, > 0)\n"
          "  --max-body BYTES   largest POST body (default 16384)\n"
          "  --conn-timeout SEC idle connections closed after (default 10)\n"
          "  --profile NAME     profile of the next -F (before it)\n"
          "  -F config.yaml     configuration file (kmq_conf_load_file; "
          "config/kafka.yaml)\n"
          "  -X key=value       Kafka / kmq.* configuration, after -F "
          "(e.g. bootstrap.servers)\n"
          "%s"
          "  KMQ_WECOM_SECRET   the customer-service app's secret "
          "(required)\n"
          "Prints \"gateway ready: listening on A:P\" on stdout once both "
          "run.\nExit codes: 0 stopped by a signal; 2 bad arguments; 3 "
          "could not start\n",
          KMQ_WECOM_DEFAULT_MAX_SKEW_S, kmq__wecom_env_help);
}

typedef struct {
  kmq_wecom_puller_conf_t pc;
  kmq_wecom_puller_t *p;
  atomic_int stop; /* relaxed is enough: only ends the loop */
  int64_t recreated;
  pthread_t thread;
} gw_pull_t;

/* @locality the pull thread */
static void *gw_pull_loop(void *opaque) {
  gw_pull_t *g = opaque;
  char errstr[512];
  while (!atomic_load_explicit(&g->stop, memory_order_relaxed)) {
    kmq_wecom_api_err_t err =
        kmq_wecom_puller_poll(g->p, GW_POLL_MS, errstr, sizeof(errstr));
    if (!err)
      continue;
    fprintf(stderr, "kmq-wecom: gateway: pull: %s: %s\n",
            kmq_wecom_api_err_name(err), errstr);
    /* The idempotent producer's fatal error is not recovered inside the
     * puller (wecom_api.h): a new one re-pulls from the stored cursors. */
    if (strstr(errstr, "fatal producer error")) {
      kmq_wecom_puller_t *np = NULL;
      kmq_wecom_puller_destroy(g->p);
      while (!np && !atomic_load_explicit(&g->stop, memory_order_relaxed)) {
        if (!(np = kmq_wecom_puller_new(&g->pc, errstr, sizeof(errstr)))) {
          fprintf(stderr, "kmq-wecom: gateway: new puller: %s\n", errstr);
          struct timespec d = {1, 0};
          nanosleep(&d, NULL);
        }
      }
      g->p = np;
      g->recreated++;
      if (!np)
        break;
    }
  }
  return NULL;
}

int kmq__wecom_gateway(int argc, char **argv, args_t *a) {
  a->max_skew = KMQ_WECOM_DEFAULT_MAX_SKEW_S;
  int rc = kmq__wecom_parse(argc, argv, a, "tkrTlpmbcXUGOFP", usage_gateway);
  if (rc)
    return rc;
  if (a->max_skew == 0)
    return kmq__wecom_usage_error(
        "%s", "--max-skew must be > 0 (it is the replay window)");
  const char *out = a->out_topic ? a->out_topic : kmq_conf_get(a->conf,
                                                                "kmq.topic");
  if (!out || !*out)
    return kmq__wecom_usage_error("%s", "no --out-topic (nor kmq.topic)");
  const char *secret = getenv("KMQ_WECOM_SECRET");
  if (!secret || !*secret)
    return kmq__wecom_usage_error("%s", "no corp secret: KMQ_WECOM_SECRET");
  char addr[64], errstr[512];
  long port;
  if ((rc = kmq__wecom_listen(a->listen, addr, &port)))
    return rc;

  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  if (a->base_url)
    cc.base_url = a->base_url;
  cc.corp_id = a->receive_id;
  cc.corp_secret = secret;
  /* The endpoint's producer writes sync requests: its kmq.topic (and DLQ
   * name) is the sync topic, whatever -F / -X set for the runtime. */
  kmq_conf_t *cbconf = kmq_conf_dup(a->conf);
  if (!cbconf) {
    fprintf(stderr, "kmq-wecom: gateway: out of memory\n");
    return EXIT_START;
  }
  if (kmq_conf_set(cbconf, "kmq.topic", a->sync_topic, errstr,
                   sizeof(errstr))) {
    kmq_conf_destroy(cbconf);
    fprintf(stderr, "kmq-wecom: --sync-topic: %s\n", errstr);
    return EXIT_USAGE;
  }
  kmq_wecom_callback_opts_t o = kmq__wecom_endpoint_opts(a, addr, port);
  sigset_t set;
  kmq__wecom_block_signals(&set);
  rc = EXIT_START;
  gw_pull_t g = {.pc = {.kafka = a->conf,
                        .sync_topic = a->sync_topic,
                        .group_id = a->group ? a->group : GW_DEFAULT_GROUP,
                        .out_topic = out}};
  kmq_wecom_callback_t *cb = NULL;
  if (kmq_wecom_global_init()) {
    fprintf(stderr, "kmq-wecom: gateway: libcurl did not initialise\n");
    goto fail_conf;
  }
  if (!(g.pc.client = kmq_wecom_client_new(&cc, errstr, sizeof(errstr)))) {
    fprintf(stderr, "kmq-wecom: gateway: client: %s\n", errstr);
    goto fail_curl;
  }
  if (!(g.p = kmq_wecom_puller_new(&g.pc, errstr, sizeof(errstr)))) {
    fprintf(stderr, "kmq-wecom: gateway: puller: %s\n", errstr);
    goto fail_client;
  }
  if (!(cb = kmq_wecom_callback_new(&o, cbconf, errstr, sizeof(errstr)))) {
    fprintf(stderr, "kmq-wecom: gateway: endpoint: %s\n", errstr);
    goto fail_puller;
  }
  if (pthread_create(&g.thread, NULL, gw_pull_loop, &g)) {
    fprintf(stderr, "kmq-wecom: gateway: cannot start the pull thread\n");
    goto fail_cb;
  }
  printf("gateway ready: listening on %s:%u%s, sync requests %s, group %s, "
         "messages to %s\n",
         addr, (unsigned)kmq_wecom_callback_port(cb),
         a->path ? a->path : "/wecom/callback", a->sync_topic,
         g.pc.group_id, out);
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  atomic_store_explicit(&g.stop, 1, memory_order_relaxed);
  pthread_join(g.thread, NULL);
  kmq_wecom_callback_stats_t st;
  kmq_wecom_callback_stats(cb, &st);
  kmq_wecom_puller_stats_t ps = {0};
  if (g.p)
    kmq_wecom_puller_stats(g.p, &ps);
  fprintf(stderr,
          "kmq-wecom: gateway stopped by signal %d: callbacks verified %lld, "
          "produced %lld, refused %lld; sync requests %lld, pages %lld, "
          "messages pulled %lld, produced %lld, suspected duplicates %lld, "
          "puller errors %lld, recreated %lld\n",
          sig, (long long)st.verified, (long long)st.produced,
          (long long)(st.bad_signature + st.stale + st.replayed +
                      st.malformed + st.too_large + st.not_found +
                      st.bad_method + st.unavailable),
          (long long)ps.requests, (long long)ps.pages, (long long)ps.pulled,
          (long long)ps.produced, (long long)ps.duplicates_suspected,
          (long long)ps.errors, (long long)g.recreated);
  rc = 0;
fail_cb:
  kmq_wecom_callback_destroy(cb);
fail_puller:
  kmq_wecom_puller_destroy(g.p); /* leaves the group; commits stay */
fail_client:
  kmq_wecom_client_destroy(g.pc.client);
fail_curl:
  kmq_wecom_global_cleanup();
fail_conf:
  kmq_conf_destroy(cbconf);
  return rc;
}
