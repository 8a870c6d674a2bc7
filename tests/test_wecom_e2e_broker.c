/* The design's data path end to end, WeCom simulated, Kafka real:
 * simulator "callback" -> sync request -> puller (kf/sync_msg) -> kmq topic
 * keyed by external_userid -> kmq runtime, per user in order -> an ASYNC
 * processor that answers each message with kf/send_msg from a reply thread
 * -> the simulator checks that every customer got every reply, in order,
 * once. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "brokerutil.h"
#include "kmq/processor.h"
#include "kmq/runtime.h"
#include "kmq/wecom_api.h"
#include "testutil.h"
#include "wecomutil.h"

#define QCAP 64 /* reply jobs waiting; more is RETRY (explicit backpressure) */

typedef struct {
  kmq_proc_ctx_t *ctx;
  char user[64], kfid[64], msgid[96], text[96];
} job_t;

/* The application's reply pool: kmq workers hand a job over and return
 * ASYNC; reply threads call send_msg (blocking) and complete the message. */
typedef struct {
  kmq_wecom_client_t *cl;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job_t q[QCAP];
  int head, len, stop;
  atomic_int sent, failed;
  pthread_t th[2];
} pool_t;

static kmq_proc_result_t on_message(const kmq_chat_msg_t *msg,
                                    kmq_proc_ctx_t *ctx, void *opaque) {
  pool_t *p = opaque;
  int u, seq;
  if (kmq_wecom_sim_parse_msgid(msg->message_id.ptr, &u, &seq)) {
    kmq_proc_ctx_set_reason(ctx, "not a simulator msgid");
    return KMQ_PROC_FAIL;
  }
  pthread_mutex_lock(&p->mu);
  if (p->len == QCAP) {
    pthread_mutex_unlock(&p->mu);
    return KMQ_PROC_RETRY;
  }
  job_t *j = &p->q[(p->head + p->len++) % QCAP];
  j->ctx = ctx;
  snprintf(j->user, sizeof(j->user), "%s", msg->external_user_id.ptr);
  snprintf(j->kfid, sizeof(j->kfid), "%s", msg->open_kfid.ptr);
  /* The same msgid on a resend: the reply is not sent twice. */
  snprintf(j->msgid, sizeof(j->msgid), "re-%s", msg->message_id.ptr);
  kmq_wecom_sim_reply_text(u, seq, j->text, sizeof(j->text));
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return KMQ_PROC_ASYNC;
}

static void *replier(void *opaque) {
  pool_t *p = opaque;
  char errstr[256];
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (!p->len && !p->stop)
      pthread_cond_wait(&p->cv, &p->mu);
    if (!p->len) {
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    job_t j = p->q[p->head];
    p->head = (p->head + 1) % QCAP;
    p->len--;
    pthread_mutex_unlock(&p->mu);
    kmq_wecom_api_err_t err = kmq_wecom_send_text(p->cl, j.user, j.kfid, j.text,
                                              j.msgid, NULL, 0, NULL, errstr,
                                              sizeof(errstr));
    if (err) {
      atomic_fetch_add(&p->failed, 1);
      kmq_proc_ctx_set_reason(j.ctx, "%s", errstr);
    } else {
      atomic_fetch_add(&p->sent, 1);
    }
    /* Busy WeCom or a lost connection: kmq retries this user's message
     * after its backoff, the user's later messages wait. */
    kmq_proc_ctx_complete(j.ctx, err ? KMQ_PROC_RETRY : KMQ_PROC_OK);
  }
}

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

  pool_t pool = {.cl = f.cl};
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.cv, NULL);
  for (int i = 0; i < 2; i++)
    pthread_create(&pool.th[i], NULL, replier, &pool);

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
  ck_assert_int_eq(kmq_proc_set_default(reg, on_message, &pool), KMQ_OK);
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
  ck_assert_int_eq(atomic_load(&pool.sent), 120);
  ck_assert_int_eq(atomic_load(&pool.failed), 0);
  kmq_wecom_client_stats_t cs;
  kmq_wecom_client_stats(f.cl, &cs);
  ck_assert_int_eq(cs.retries, 3);

  pthread_mutex_lock(&pool.mu);
  pool.stop = 1;
  pthread_cond_broadcast(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  for (int i = 0; i < 2; i++)
    pthread_join(pool.th[i], NULL);
  pthread_cond_destroy(&pool.cv);
  pthread_mutex_destroy(&pool.mu);
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
