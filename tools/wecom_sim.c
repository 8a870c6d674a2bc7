/* kmq-wecom-sim: the WeCom API simulator (tools/wecom_sim.h) as a program.
 *
 *   kmq-wecom-sim [--port N] [--kfids K] [--customers N] [--messages M]
 *                 [--page-max P] [--token-lifetime S] [--events]
 *
 * Serves gettoken, kf/sync_msg and kf/send_msg on 127.0.0.1 with N
 * customers' M messages each in the log, prints its base URL and one line
 * per "callback" (open_kfid and sync token: where WeCom would notify), and
 * on SIGINT / SIGTERM prints whether every customer got every reply in
 * order (exit status 0 when so, 1 otherwise). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "wecom_sim.h"

static void kmq__print_notify(const char *kfid, const char *token,
                              void *opaque) {
  (void)opaque;
  printf("notify open_kfid=%s token=%s\n", kfid, token);
  fflush(stdout);
}

static void kmq__usage(void) {
  fprintf(stderr,
          "usage: kmq-wecom-sim [--port N] [--kfids K] [--customers N] "
          "[--messages M] [--page-max P] [--token-lifetime S] [--events]\n"
          "corp id wwSIMCORP, secret from $KMQ_WECOM_SIM_SECRET or the "
          "built-in test secret\n");
}

int main(int argc, char **argv) {
  kmq_wecom_sim_conf_t conf;
  int customers = 10, messages = 10;
  char errstr[256], url[128];
  kmq_wecom_sim_conf_init(&conf);
  conf.notify_cb = kmq__print_notify;
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
  printf("messages %lld replies %lld customers failing %d%s%s\n",
         (long long)st.messages, (long long)st.replies, bad, bad ? ": " : "",
         bad ? errstr : "");
  kmq_wecom_sim_destroy(sim);
  return bad ? 1 : 0;
}
