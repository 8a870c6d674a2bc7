/* The design's data path end to end, WeCom simulated, Kafka real:
 * simulator "callback" -> sync request -> puller (kf/sync_msg) -> kmq topic
 * keyed by external_userid -> kmq runtime, per user in order -> an ASYNC
 * processor that answers each message with kf/send_msg from a reply thread
 * (tools/wecom_replier.h) -> the simulator checks that every customer got every reply, in order,
 * once. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "brokerutil.h"
#include "kmq/processor.h"
#include "kmq/runtime.h"
#include "kmq/wecom_api.h"
#include "testutil.h"
#include "wecom_replier.h"
#include "wecomutil.h"

static void *run_runtime(void *opaque) {
  kmq_runtime_run(opaque);
  return NULL;
}

typedef struct {
  kt_wx_t *f;
  int want;
} replies_t;

static bool all_replied(void *opaque) {
  replies_t *r = opaque;
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(r->f->sim, &st);
  return st.replies >= r->want;
}

START_TEST(callbacks_to_replies_in_order) {
  kt_wx_t f;
  char errstr[512], group[160];
  kt_wx_init(&f, 2, 6);
  f.req_producer = kt_producer_new();

  kmq_wecom_replier_t *rep =
      kmq_wecom_replier_new(f.cl, 2, 10, errstr, sizeof(errstr));
  ck_assert_msg(rep, "%s", errstr);

  kmq_conf_t *c = kmq_conf_dup(f.kafka);
  snprintf(group, sizeof(group), "%s-backend", f.group);
  const char *kv[][2] = {{"kmq.topic", f.out_topic},
                         {"group.id", group},
                         {"kmq.sched.workers", "2"},
                         {"kmq.commit.interval.ms", "200"},
                         {"kmq.proc.backoff.ms", "5"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s", errstr);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, kmq_wecom_replier_on_message, rep), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  pthread_t rth;
  pthread_create(&rth, NULL, run_runtime, rt);

  kt_wx_runner_t puller;
  kt_wx_runner_start(&puller, kt_wx_puller(&f, f.cl, 0, 0, NULL, NULL));

  /* WeCom busy now and then on send_msg: the client's backoff absorbs
   * it. Customers write twice, the second time while replies flow. */
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SEND, 45033, 3);
  kt_wx_add(&f, 10, 8);
  replies_t want = {&f, 80};
  ck_assert_msg(kt_wait_until(all_replied, &want, 45000), "replies missing");
  kt_wx_add(&f, 10, 4);
  want.want = 120;
  ck_assert_msg(kt_wait_until(all_replied, &want, 30000), "replies missing");

  kmq_runtime_stop(rt);
  pthread_join(rth, NULL);
  kt_wx_runner_stop(&puller);
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(rt, &mx);
  kmq_runtime_destroy(rt);
  kmq_wecom_puller_stats_t ps;
  kmq_wecom_puller_stats(puller.p, &ps);
  kmq_wecom_puller_destroy(puller.p);

  char report[256];
  ck_assert_msg(!kmq_wecom_sim_verify_replies(f.sim, false, report,
                                              sizeof(report)),
                "%s", report);
  ck_assert_int_eq(ps.produced, 120);
  ck_assert_int_eq(mx.processed, 120);
  ck_assert_int_eq(mx.failed, 0);
  kmq_wecom_replier_counts_t rc;
  kmq_wecom_replier_counts(rep, &rc);
  ck_assert_int_eq(rc.sent, 120);
  ck_assert_int_eq(rc.failed, 0);
  ck_assert_int_eq(rc.duplicates, 0);
  kmq_wecom_client_stats_t cs;
  kmq_wecom_client_stats(f.cl, &cs);
  ck_assert_int_eq(cs.retries, 3);

  kmq_wecom_replier_destroy(rep);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
  kt_wx_done(&f);
}
END_TEST

int main(void) {
  if (kmq_wecom_global_init())
    return 1;
  Suite *s = suite_create("wecom_e2e_broker");
  TCase *tc = tcase_create("e2e");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, callbacks_to_replies_in_order);
  suite_add_tcase(s, tc);
  int rc = kt_run(s);
  kmq_wecom_global_cleanup();
  return rc;
}
