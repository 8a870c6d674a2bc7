/* kmq-wecom-sim: the WeCom API simulator (tools/wecom_sim.h) as a program.
 *
 *   kmq-wecom-sim [--port N] [--kfids K] [--customers N] [--messages M]
 *                 [--page-max P] [--token-lifetime S] [--events]
 *                 [--corp-id C] [--callback-url URL]...
 *
 * Serves gettoken, kf/sync_msg and kf/send_msg on 127.0.0.1 with N
 * customers' M messages each in the log, prints its base URL and one line
 * per notification (open_kfid, and the sync token only without a callback
 * URL); with --callback-url (up to 4, taken in turn) it first performs
 * WeCom's URL verification on each and then POSTs signed, encrypted
 * kf_msg_or_event callbacks there (token and EncodingAESKey from
 * KMQ_WECOM_TOKEN and KMQ_WECOM_AES_KEY), and
 * on SIGINT / SIGTERM prints whether every customer got every reply in
 * order (exit status 0 when so, 1 otherwise). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "kmq/wecom_api.h"
#include "wecom_sim.h"

/* The sync token is a secret of the callback once a real callback carries
 * it: printed only when this line is the only way to pass it on. */
static void kmq__print_notify(const char *kfid, const char *token,
                              void *opaque) {
  printf("notify open_kfid=%s", kfid);
  if (!opaque)
    printf(" token=%s", token);
  printf("\n");
  fflush(stdout);
}

static void kmq__usage(void) {
  fprintf(stderr,
          "usage: kmq-wecom-sim [--port N] [--kfids K] [--customers N] "
          "[--messages M] [--page-max P] [--token-lifetime S] [--events]\n"
          "       [--corp-id C] [--callback-url URL]... (up to 4)\n"
          "corp id wwSIMCORP, secret from $KMQ_WECOM_SIM_SECRET or the "
          "built-in test secret;\ncallbacks signed with $KMQ_WECOM_TOKEN and "
          "$KMQ_WECOM_AES_KEY\n");
}

int main(int argc, char **argv) {
  kmq_wecom_sim_conf_t conf;
  int customers = 10, messages = 10;
  char errstr[256], url[128];
  int nurls = 0;
  kmq_wecom_sim_conf_init(&conf);
  conf.notify_cb = kmq__print_notify;
  conf.callback_token = getenv("KMQ_WECOM_TOKEN");
  conf.callback_aes_key = getenv("KMQ_WECOM_AES_KEY");
  if (getenv("KMQ_WECOM_SIM_SECRET"))
    conf.corp_secret = getenv("KMQ_WECOM_SIM_SECRET");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int *dst = !strcmp(a, "--port")             ? &conf.port
               : !strcmp(a, "--kfids")          ? &conf.kfids
               : !strcmp(a, "--customers")      ? &customers
               : !strcmp(a, "--messages")       ? &messages
               : !strcmp(a, "--page-max")       ? &conf.page_max
               : !strcmp(a, "--token-lifetime") ? &conf.token_lifetime_s
                                                : NULL;
    if (!strcmp(a, "--events")) {
      conf.events = true;
    } else if (!strcmp(a, "--corp-id") && v) {
      conf.corp_id = v;
      i++;
    } else if (!strcmp(a, "--callback-url") && v &&
               nurls < KMQ_WECOM_SIM_MAX_URLS) {
      conf.callback_urls[nurls++] = v;
      i++;
    } else if (dst && v) {
      *dst = atoi(v);
      i++;
    } else {
      kmq__usage();
      return 2;
    }
  }
  /* SIGINT / SIGTERM blocked before the server's threads exist (they
   * inherit the mask), so that sigwait() below is the one taker. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  conf.notify_opaque = nurls ? &conf : NULL;
  if (kmq_wecom_global_init()) {
    fprintf(stderr, "kmq-wecom-sim: libcurl did not initialise\n");
    return 1;
  }
  kmq_wecom_sim_t *sim = kmq_wecom_sim_new(&conf, errstr, sizeof(errstr));
  if (!sim) {
    fprintf(stderr, "kmq-wecom-sim: %s\n", errstr);
    return 1;
  }
  kmq_wecom_sim_base_url(sim, url, sizeof(url));
  printf("base_url %s\n", url);
  fflush(stdout);
  if (kmq_wecom_sim_add_messages(sim, customers, messages) < 0) {
    fprintf(stderr, "kmq-wecom-sim: out of memory\n");
    kmq_wecom_sim_destroy(sim);
    return 1;
  }
  /* The server runs on its own threads; this one waits for the signal. */
  int sig;
  sigwait(&stop, &sig);
  int bad = kmq_wecom_sim_verify_replies(sim, true, errstr, sizeof(errstr));
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(sim, &st);
  printf("messages %lld replies %lld callbacks %lld (failed %lld) "
         "customers failing %d%s%s\n",
         (long long)st.messages, (long long)st.replies,
         (long long)st.callbacks_ok, (long long)st.callbacks_failed, bad,
         bad ? ": " : "", bad ? errstr : "");
  kmq_wecom_sim_destroy(sim);
  kmq_wecom_global_cleanup();
  return bad ? 1 : 0;
}
