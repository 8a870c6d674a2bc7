/* The simulator's signed callbacks (tools/wecom_sim_callback.c) against the
 * real callback endpoint (wecom/callback_server.c) on the real broker: URL
 * verification at start, one sync request per notified open_kfid, and a
 * misconfigured simulator refused (401) both at verification and on its
 * POSTs. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brokerutil.h"
#include "kmq/conf.h"
#include "kmq/wecom_api.h"
#include "kmq/wecom_callback.h"
#include "testutil.h"
#include "wecom_sim.h"

#define TOKEN "simCbToken"
#define AES_KEY "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
#define OTHER_TOKEN "notTheToken"

typedef struct {
  char topic[128], url[160];
  kmq_conf_t *kafka;
  kmq_wecom_callback_t *cb;
} fx_t;

static void fx_init(fx_t *f) {
  char errstr[512];
  memset(f, 0, sizeof(*f));
  kt_unique_name(f->topic, sizeof(f->topic), "wecom-simcb");
  kt_create_topics(f->topic, 2, NULL);
  f->kafka = kmq_conf_new();
  ck_assert(!kmq_conf_set(f->kafka, "bootstrap.servers", kt_bootstrap(),
                          errstr, sizeof(errstr)));
  kmq_wecom_callback_opts_t o = {.token = TOKEN,
                                 .aes_key = AES_KEY,
                                 .receive_id = "wwSIMCORP",
                                 .sync_topic = f->topic};
  f->cb = kmq_wecom_callback_new(&o, f->kafka, errstr, sizeof(errstr));
  ck_assert_msg(f->cb, "%s", errstr);
  snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u/wecom/callback",
           (unsigned)kmq_wecom_callback_port(f->cb));
}

static void fx_done(fx_t *f) {
  kmq_wecom_callback_destroy(f->cb);
  kmq_conf_destroy(f->kafka);
}

static kmq_wecom_sim_t *sim_new(fx_t *f, const char *token, bool skip,
                                char *errstr, size_t size) {
  kmq_wecom_sim_conf_t sc;
  kmq_wecom_sim_conf_init(&sc);
  sc.kfids = 3;
  sc.callback_urls[0] = f->url;
  sc.callback_token = token;
  sc.callback_aes_key = AES_KEY;
  sc.callback_attempts = 2;
  sc.callback_skip_verify = skip;
  return kmq_wecom_sim_new(&sc, errstr, size);
}

typedef struct {
  int n, kf[3];
  char token[3][64];
} reqs_t;

static void on_req(const rd_kafka_message_t *m, void *opaque) {
  reqs_t *r = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  const char *kfid = json_string_value(json_object_get(j, "open_kfid"));
  const char *tok = json_string_value(json_object_get(j, "token"));
  ck_assert_ptr_nonnull(kfid);
  ck_assert_ptr_nonnull(tok);
  ck_assert_int_eq((int)m->key_len, (int)strlen(kfid));
  ck_assert(!memcmp(m->key, kfid, m->key_len));
  int k = atoi(kfid + 5); /* wkSIM%03d */
  ck_assert(k >= 0 && k < 3);
  r->kf[k]++;
  snprintf(r->token[k], sizeof(r->token[k]), "%s", tok);
  r->n++;
  json_decref(j);
}

START_TEST(verified_and_signed_callbacks_become_sync_requests) {
  fx_t f;
  char errstr[512];
  fx_init(&f);
  kmq_wecom_sim_t *sim = sim_new(&f, TOKEN, false, errstr, sizeof(errstr));
  ck_assert_msg(sim, "%s", errstr);
  kmq_wecom_callback_stats_t cs;
  kmq_wecom_callback_stats(f.cb, &cs);
  ck_assert_int_eq(cs.verified, 1);
  /* 6 customers on 3 open_kfids: one callback per open_kfid per call. */
  ck_assert_int_eq(kmq_wecom_sim_add_messages(sim, 6, 2), 12);
  ck_assert_int_eq(kmq_wecom_sim_add_messages(sim, 6, 1), 6);
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(sim, &st);
  ck_assert_int_eq(st.url_verified, 1);
  ck_assert_int_eq(st.callbacks_ok, 6);
  ck_assert_int_eq(st.callbacks_failed, 0);
  ck_assert_int_eq(st.callback_retries, 0);
  kmq_wecom_callback_stats(f.cb, &cs);
  ck_assert_int_eq(cs.produced, 6);
  ck_assert_int_eq(cs.bad_signature + cs.replayed + cs.stale + cs.malformed,
                   0);
  reqs_t r = {0};
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), f.topic, 6, 20000, on_req, &r),
                   6);
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(r.kf[k], 2);
    ck_assert(!strncmp(r.token[k], "SYNC-", 5));
  }
  kmq_wecom_sim_destroy(sim);
  fx_done(&f);
}
END_TEST

START_TEST(misconfigured_simulator_is_refused) {
  fx_t f;
  char errstr[512];
  fx_init(&f);
  /* A wrong Token: WeCom's URL verification itself fails with 401. */
  ck_assert_ptr_null(sim_new(&f, OTHER_TOKEN, false, errstr, sizeof(errstr)));
  ck_assert_msg(strstr(errstr, "HTTP 401"), "%s", errstr);
  kmq_wecom_callback_stats_t cs;
  kmq_wecom_callback_stats(f.cb, &cs);
  ck_assert_int_eq(cs.bad_signature, 1);
  ck_assert_int_eq(cs.verified, 0);
  /* Without verification its POSTs are refused, retried, given up. */
  kmq_wecom_sim_t *sim = sim_new(&f, OTHER_TOKEN, true, errstr, sizeof(errstr));
  ck_assert_msg(sim, "%s", errstr);
  ck_assert_int_eq(kmq_wecom_sim_add_messages(sim, 1, 1), 1);
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(sim, &st);
  ck_assert_int_eq(st.callbacks_ok, 0);
  ck_assert_int_eq(st.callback_retries, 1);
  ck_assert_int_eq(st.callbacks_failed, 1);
  ck_assert_int_eq(st.last_callback_status, 401);
  kmq_wecom_callback_stats(f.cb, &cs);
  ck_assert_int_eq(cs.bad_signature, 3);
  ck_assert_int_eq(cs.produced, 0);
  kmq_wecom_sim_destroy(sim);
  fx_done(&f);
}
END_TEST

int main(void) {
  if (kmq_wecom_global_init())
    return 1;
  Suite *s = suite_create("wecom_sim_callback_broker");
  TCase *tc = tcase_create("callbacks");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, verified_and_signed_callbacks_become_sync_requests);
  tcase_add_test(tc, misconfigured_simulator_is_refused);
  suite_add_tcase(s, tc);
  int rc = kt_run(s);
  kmq_wecom_global_cleanup();
  return rc;
}
