/* Broker tests of the WeCom puller (wecomutil.h). */
#include "wecomutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brokerutil.h"
#include "kmq/admin.h"
#include "testutil.h"

/* The callback seam: a sync request per notification, keyed by open_kfid,
 * on partition k % KT_WX_PARTS so that tests know who owns it. */
static void on_notify(const char *kfid, const char *token, void *opaque) {
  kt_wx_t *f = opaque;
  char v[256];
  int k = atoi(kfid + 5); /* "wkSIM%03d" */
  int n = snprintf(v, sizeof(v),
                   "{\"open_kfid\":\"%s\",\"token\":\"%s\",\"create_time\":1}",
                   kfid, token);
  ck_assert_int_eq(
      rd_kafka_producev(f->req_producer, RD_KAFKA_V_TOPIC(f->sync_topic),
                        RD_KAFKA_V_PARTITION(k % KT_WX_PARTS),
                        RD_KAFKA_V_KEY(kfid, strlen(kfid)),
                        RD_KAFKA_V_VALUE(v, (size_t)n),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_END),
      0);
}

void kt_wx_init(kt_wx_t *f, int kfids, int page_max) {
  char errstr[256], url[128];
  memset(f, 0, sizeof(*f));
  kt_unique_name(f->sync_topic, sizeof(f->sync_topic), "wecom-sync");
  kt_unique_name(f->out_topic, sizeof(f->out_topic), "wecom-kf");
  kt_unique_name(f->group, sizeof(f->group), "wecom-gw");
  kt_create_topics(f->sync_topic, KT_WX_PARTS, NULL);
  snprintf(f->dlq_topic, sizeof(f->dlq_topic), "%s.dlq", f->out_topic);
  kt_create_topics(f->out_topic, KT_WX_PARTS, f->dlq_topic);
  kmq_wecom_sim_conf_t sc;
  kmq_wecom_sim_conf_init(&sc);
  sc.kfids = kfids;
  sc.page_max = page_max;
  sc.events = true;
  sc.notify_cb = on_notify;
  sc.notify_opaque = f;
  f->sim = kmq_wecom_sim_new(&sc, errstr, sizeof(errstr));
  ck_assert_msg(f->sim, "%s", errstr);
  kmq_wecom_sim_base_url(f->sim, url, sizeof(url));
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  cc.base_url = url;
  cc.corp_id = sc.corp_id;
  cc.corp_secret = sc.corp_secret;
  cc.backoff_ms = 2;
  cc.backoff_max_ms = 20;
  f->cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  ck_assert_msg(f->cl, "%s", errstr);
  f->kafka = kmq_conf_new();
  const char *kv[][2] = {{"bootstrap.servers", kt_bootstrap()},
                         {"consumer.session.timeout.ms", "6000"},
                         {"consumer.heartbeat.interval.ms", "500"},
                         {"producer.linger.ms", "1"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(f->kafka, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s", errstr);
}

kmq_wecom_puller_t *kt_wx_puller(kt_wx_t *f, kmq_wecom_client_t *cl,
                                 int max_pages, int max_failures,
                                 kmq_wecom_page_cb *on_page, void *opaque) {
  char errstr[512];
  kmq_wecom_puller_conf_t pc = {.kafka = f->kafka,
                                .max_pages = max_pages,
                                .max_request_failures = max_failures,
                                .sync_topic = f->sync_topic,
                                .group_id = f->group,
                                .out_topic = f->out_topic,
                                .client = cl,
                                .retry_backoff_ms = 50,
                                .on_page = on_page,
                                .on_page_opaque = opaque};
  kmq_wecom_puller_t *p = kmq_wecom_puller_new(&pc, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  return p;
}

void kt_wx_add(kt_wx_t *f, int customers, int per) {
  ck_assert_int_eq(kmq_wecom_sim_add_messages(f->sim, customers, per),
                   customers * per);
  ck_assert_int_eq(rd_kafka_flush(f->req_producer, 30000), 0);
}

/* Records in a topic now (sum of end - start over its partitions). */
int kt_wx_count(kt_wx_t *f, const char *topic) {
  char errstr[256];
  kmq_partition_lag_t lag[KT_WX_PARTS * 2];
  int n = KT_WX_PARTS * 2, total = 0;
  ck_assert_msg(!kmq_admin_group_lag(f->kafka, "wecom-nobody", topic, lag, &n,
                                     10000, errstr, sizeof(errstr)),
                "%s", errstr);
  for (int i = 0; i < n; i++)
    total += (int)(lag[i].high - lag[i].low);
  return total;
}

void kt_wx_done(kt_wx_t *f) {
  if (f->req_producer)
    kt_producer_done(f->req_producer);
  kmq_conf_destroy(f->kafka);
  kmq_wecom_client_destroy(f->cl);
  kmq_wecom_sim_destroy(f->sim);
}

static void *kt_wx_run(void *opaque) {
  kt_wx_runner_t *r = opaque;
  char errstr[512];
  while (!atomic_load(&r->stop))
    kmq_wecom_puller_poll(r->p, 100, errstr, sizeof(errstr));
  return NULL;
}

void kt_wx_runner_start(kt_wx_runner_t *r, kmq_wecom_puller_t *p) {
  r->p = p;
  atomic_init(&r->stop, 0);
  ck_assert_int_eq(pthread_create(&r->thread, NULL, kt_wx_run, r), 0);
}

void kt_wx_runner_stop(kt_wx_runner_t *r) {
  atomic_store(&r->stop, 1);
  pthread_join(r->thread, NULL);
}
