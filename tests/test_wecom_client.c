/* WeCom API client against the in-process simulator (tools/wecom_sim.h):
 * token caching and refresh (by lifetime, on 40014 / 42001 in the middle of
 * a paging loop), backoff and its bound on -1 / 45009 / 45033, 95007,
 * empty pages with has_more = 1, paging (every message once, in order),
 * send_msg from several threads, the response bound and secrecy. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/wecom_api.h"
#include "testutil.h"
#include "wecom_sim.h"

#define SECRET "sim-secret-do-not-print-42"

typedef struct {
  kmq_wecom_sim_t *sim;
  kmq_wecom_client_t *cl;
} fx_t;

static fx_t fx_new(int kfids, int page_max, int token_lifetime_s,
                   int max_attempts) {
  char errstr[256], url[128];
  kmq_wecom_sim_conf_t sc;
  kmq_wecom_sim_conf_init(&sc);
  sc.kfids = kfids;
  sc.page_max = page_max;
  sc.token_lifetime_s = token_lifetime_s;
  sc.corp_secret = SECRET;
  fx_t f = {0};
  f.sim = kmq_wecom_sim_new(&sc, errstr, sizeof(errstr));
  ck_assert_msg(f.sim, "%s", errstr);
  kmq_wecom_sim_base_url(f.sim, url, sizeof(url));
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  cc.base_url = url;
  cc.corp_id = "wwSIMCORP";
  cc.corp_secret = SECRET;
  cc.timeout_ms = 5000;
  cc.max_attempts = max_attempts;
  cc.backoff_ms = 2; /* the jittered waits stay short in tests */
  cc.backoff_max_ms = 20;
  f.cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  ck_assert_msg(f.cl, "%s", errstr);
  return f;
}

static void fx_done(fx_t *f) {
  kmq_wecom_client_destroy(f->cl);
  kmq_wecom_sim_destroy(f->sim);
}

/* Pulls open_kfid k from the start to has_more = 0, checking that each
 * customer's seqs come in order with none twice; returns the count.
 * Between pages, between(page_no) may inject faults. */
static int pull_all(fx_t *f, int k, void (*between)(fx_t *, int), int *pages,
                    int *empty) {
  char kfid[32], cursor[64] = "", errstr[256];
  int next_seq[256] = {0}, n = 0;
  kmq_wecom_sim_kfid(k, kfid, sizeof(kfid));
  *pages = *empty = 0;
  for (int more = 1; more;) {
    if (between)
      between(f, *pages);
    kmq_wecom_sync_req_t rq = {.open_kfid = kfid, .cursor = cursor,
                               .limit = 1000};
    kmq_wecom_sync_page_t pg;
    kmq_wecom_result_t res;
    kmq_wecom_api_err_t err = kmq_wecom_sync_msg(f->cl, &rq, &pg, &res, errstr,
                                             sizeof(errstr));
    ck_assert_msg(err == KMQ_WECOM_API_OK, "%s: %s",
                  kmq_wecom_api_err_name(err),
                  errstr);
    ck_assert_int_eq(res.errcode, 0);
    size_t i;
    json_t *it;
    json_array_foreach(pg.msg_list, i, it) {
      int u, seq;
      const char *id = json_string_value(json_object_get(it, "msgid"));
      ck_assert_int_eq(kmq_wecom_sim_parse_msgid(id, &u, &seq), 0);
      ck_assert_int_lt(u, 256);
      ck_assert_msg(seq == next_seq[u], "%s: expected seq %d", id,
                    next_seq[u]);
      next_seq[u]++;
      n++;
    }
    (*pages)++;
    if (!json_array_size(pg.msg_list))
      (*empty)++;
    snprintf(cursor, sizeof(cursor), "%s", pg.next_cursor);
    more = pg.has_more;
    kmq_wecom_sync_page_clear(&pg);
  }
  for (int u = 0; u < 256; u++)
    if (next_seq[u])
      ck_assert_int_eq(next_seq[u], kmq_wecom_sim_sent(f->sim, u));
  return n;
}

START_TEST(paging_every_message_once_in_order) {
  fx_t f = fx_new(3, 7, 7200, 5);
  ck_assert_int_eq(kmq_wecom_sim_add_messages(f.sim, 11, 13), 143);
  int total = 0, pages, empty;
  for (int k = 0; k < 3; k++)
    total += pull_all(&f, k, NULL, &pages, &empty);
  ck_assert_int_eq(total, 143);
  /* One token for the whole run: cached, not fetched per call. */
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.tokens_issued, 1);
  ck_assert_int_eq(st.calls[KMQ_WECOM_SIM_GETTOKEN], 1);
  fx_done(&f);
}
END_TEST

static int revoke_code;
static void revoke_at_3(fx_t *f, int page) {
  if (page == 3)
    kmq_wecom_sim_revoke_tokens(f->sim, revoke_code);
}

static void token_refused_mid_loop(int code) {
  fx_t f = fx_new(1, 5, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 4, 10);
  revoke_code = code;
  int pages, empty;
  ck_assert_int_eq(pull_all(&f, 0, revoke_at_3, &pages, &empty), 40);
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.tokens_issued, 2);
  ck_assert_int_eq(st.token_refused, 1);
  kmq_wecom_client_stats_t cs;
  kmq_wecom_client_stats(f.cl, &cs);
  ck_assert_int_eq(cs.token_rejected, 1);
  ck_assert_int_eq(cs.token_fetches, 2);
  ck_assert_int_eq(cs.errors, 0);
  fx_done(&f);
}

START_TEST(token_expired_42001_mid_loop) { token_refused_mid_loop(42001); }
END_TEST
START_TEST(token_invalid_40014_mid_loop) { token_refused_mid_loop(40014); }
END_TEST

/* A token refused again right after its refresh is not retried forever. */
START_TEST(token_refused_twice_is_an_error) {
  fx_t f = fx_new(1, 5, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 1, 1);
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SYNC, 42001, 2);
  char errstr[256];
  kmq_wecom_sync_req_t rq = {.open_kfid = "wkSIM000"};
  kmq_wecom_sync_page_t pg;
  kmq_wecom_result_t res;
  ck_assert_int_eq(kmq_wecom_sync_msg(f.cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_ERR_TOKEN);
  ck_assert_int_eq(res.errcode, 42001);
  ck_assert_int_eq(res.token_refreshes, 1);
  ck_assert_int_eq(res.attempts, 2);
  ck_assert_ptr_null(pg._root);
  fx_done(&f);
}
END_TEST

static bool refreshed_by_lifetime(void *opaque) {
  fx_t *f = opaque;
  char errstr[256];
  kmq_wecom_sync_req_t rq = {.open_kfid = "wkSIM000"};
  kmq_wecom_sync_page_t pg;
  ck_assert_int_eq(kmq_wecom_sync_msg(f->cl, &rq, &pg, NULL, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_OK);
  kmq_wecom_sync_page_clear(&pg);
  kmq_wecom_client_stats_t cs;
  kmq_wecom_client_stats(f->cl, &cs);
  return cs.token_fetches >= 2;
}

/* expires_in 4 s: the client refreshes a quarter before (at 3 s), so WeCom
 * never sees the old token after it expired. */
START_TEST(token_refreshed_before_expires_in) {
  fx_t f = fx_new(1, 5, 4, 5);
  kmq_wecom_sim_add_messages(f.sim, 1, 1);
  ck_assert(kt_wait_until(refreshed_by_lifetime, &f, 15000));
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.token_refused, 0);
  ck_assert_int_eq(st.tokens_issued, 2);
  fx_done(&f);
}
END_TEST

static void busy_then_ok(int code) {
  fx_t f = fx_new(1, 5, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 1, 3);
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SYNC, code, 3);
  char errstr[256];
  kmq_wecom_sync_req_t rq = {.open_kfid = "wkSIM000"};
  kmq_wecom_sync_page_t pg;
  kmq_wecom_result_t res;
  ck_assert_int_eq(kmq_wecom_sync_msg(f.cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_OK);
  ck_assert_int_eq(json_array_size(pg.msg_list), 3);
  ck_assert_int_eq(res.attempts, 4);
  kmq_wecom_sync_page_clear(&pg);
  kmq_wecom_client_stats_t cs;
  kmq_wecom_client_stats(f.cl, &cs);
  ck_assert_int_eq(cs.retries, 3);
  fx_done(&f);
}

START_TEST(backoff_on_busy) { busy_then_ok(-1); }
END_TEST
START_TEST(backoff_on_45009) { busy_then_ok(45009); }
END_TEST
START_TEST(backoff_on_45033) { busy_then_ok(45033); }
END_TEST

START_TEST(busy_attempts_are_bounded) {
  fx_t f = fx_new(1, 5, 7200, 4);
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SEND, 45009, 100);
  kmq_wecom_sim_add_messages(f.sim, 1, 1);
  char errstr[256];
  kmq_wecom_result_t res;
  ck_assert_int_eq(kmq_wecom_send_text(f.cl, "wmSIM00000", "wkSIM000", "x",
                                       NULL, NULL, 0, &res, errstr,
                                       sizeof(errstr)),
                   KMQ_WECOM_API_ERR_BUSY);
  ck_assert_int_eq(res.attempts, 4);
  ck_assert_int_eq(res.errcode, 45009);
  ck_assert_ptr_nonnull(strstr(errstr, "45009"));
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.calls[KMQ_WECOM_SIM_SEND], 4);
  ck_assert_int_eq(st.replies, 0);
  fx_done(&f);
}
END_TEST

START_TEST(sync_token_95007_retried_without_token) {
  fx_t f = fx_new(1, 5, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 1, 2);
  char errstr[256], tok[64];
  kmq_wecom_sync_page_t pg;
  kmq_wecom_result_t res;
  /* A token the simulator never issued: WeCom's own 95007. */
  kmq_wecom_sync_req_t rq = {.open_kfid = "wkSIM000", .token = "bogus"};
  ck_assert_int_eq(kmq_wecom_sync_msg(f.cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_OK);
  ck_assert(res.sync_token_dropped);
  ck_assert_int_eq(json_array_size(pg.msg_list), 2);
  kmq_wecom_sync_page_clear(&pg);
  /* A valid token is sent and accepted. */
  kmq_wecom_sim_sync_token(f.sim, "wkSIM000", tok, sizeof(tok));
  rq.token = tok;
  ck_assert_int_eq(kmq_wecom_sync_msg(f.cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_OK);
  ck_assert(!res.sync_token_dropped);
  kmq_wecom_sync_page_clear(&pg);
  /* 95007 twice: once without the token, then it is WeCom's error. */
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SYNC, 95007, 2);
  ck_assert_int_eq(kmq_wecom_sync_msg(f.cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_ERR_API);
  ck_assert_int_eq(res.errcode, 95007);
  ck_assert_int_eq(res.attempts, 2);
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.sync_with_token, 1);
  ck_assert_int_eq(st.sync_without_token, 1);
  kmq_wecom_client_stats_t cs;
  kmq_wecom_client_stats(f.cl, &cs);
  ck_assert_int_eq(cs.sync_token_dropped, 2);
  fx_done(&f);
}
END_TEST

START_TEST(empty_pages_with_has_more_continue) {
  fx_t f = fx_new(1, 4, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 3, 5);
  kmq_wecom_sim_inject_empty_pages(f.sim, 3);
  int pages, empty;
  ck_assert_int_eq(pull_all(&f, 0, NULL, &pages, &empty), 15);
  ck_assert_int_eq(empty, 3);
  ck_assert_int_eq(pages, 3 + 4); /* 15 messages in pages of 4 */
  fx_done(&f);
}
END_TEST

static void *sender(void *opaque) {
  fx_t *f = opaque;
  static _Atomic int next_user;
  int u = next_user++;
  char user[32], kf[32], text[96], errstr[256], id[64];
  kmq_wecom_sim_user(u, user, sizeof(user));
  kmq_wecom_sim_kfid(u % 2, kf, sizeof(kf));
  for (int seq = 0; seq < 20; seq++) {
    kmq_wecom_sim_reply_text(u, seq, text, sizeof(text));
    kmq_wecom_api_err_t err = kmq_wecom_send_text(f->cl, user, kf, text,
                                                  NULL, id,
                                              sizeof(id), NULL, errstr,
                                              sizeof(errstr));
    if (err || !id[0])
      return (void *)1;
  }
  return NULL;
}

START_TEST(send_msg_from_threads_in_order) {
  fx_t f = fx_new(2, 100, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 4, 20);
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, sender, &f);
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(th[i], &r);
    ck_assert_ptr_null(r);
  }
  char report[256];
  ck_assert_msg(!kmq_wecom_sim_verify_replies(f.sim, false, report,
                                              sizeof(report)),
                "%s", report);
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.tokens_issued, 1); /* one fetch for four threads */
  ck_assert_int_eq(st.replies, 80);
  /* A resend with the same msgid is not a second reply. */
  char errstr[256];
  ck_assert_int_eq(kmq_wecom_send_text(f.cl, "wmSIM00000", "wkSIM000", "x",
                                       "mine-1", NULL, 0, NULL, errstr,
                                       sizeof(errstr)),
                   KMQ_WECOM_API_OK);
  ck_assert_int_eq(kmq_wecom_send_text(f.cl, "wmSIM00000", "wkSIM000", "x",
                                       "mine-1", NULL, 0, NULL, errstr,
                                       sizeof(errstr)),
                   KMQ_WECOM_API_OK);
  kmq_wecom_sim_stats(f.sim, &st);
  ck_assert_int_eq(st.replies, 81);
  fx_done(&f);
}
END_TEST

/* Four threads, every token revoked while all of them are between two
 * sends: those that send before the refresh get 42001 once, and one
 * gettoken serves them all (the others find the cache moved on). */
typedef struct {
  fx_t *f;
  int u;
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
  int *paused, *revoked;
} refresh_arg_t;

static void *refresh_sender(void *opaque) {
  refresh_arg_t *a = opaque;
  char user[32], kf[32], text[96], errstr[256];
  kmq_wecom_sim_user(a->u, user, sizeof(user));
  kmq_wecom_sim_kfid(a->u % 2, kf, sizeof(kf));
  for (int seq = 0; seq < 20; seq++) {
    if (seq == 10) {
      pthread_mutex_lock(a->mu);
      ++*a->paused;
      pthread_cond_broadcast(a->cv);
      while (!*a->revoked)
        pthread_cond_wait(a->cv, a->mu);
      pthread_mutex_unlock(a->mu);
    }
    kmq_wecom_sim_reply_text(a->u, seq, text, sizeof(text));
    if (kmq_wecom_send_text(a->f->cl, user, kf, text, NULL, NULL, 0, NULL,
                            errstr, sizeof(errstr)))
      return (void *)1;
  }
  return NULL;
}

START_TEST(token_refresh_shared_by_threads) {
  fx_t f = fx_new(2, 100, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 4, 20);
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  int paused = 0, revoked = 0;
  refresh_arg_t a[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (refresh_arg_t){&f, i, &mu, &cv, &paused, &revoked};
    pthread_create(&th[i], NULL, refresh_sender, &a[i]);
  }
  pthread_mutex_lock(&mu);
  while (paused < 4) /* every thread holds the first token */
    pthread_cond_wait(&cv, &mu);
  kmq_wecom_sim_revoke_tokens(f.sim, 42001);
  revoked = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(th[i], &r);
    ck_assert_ptr_null(r);
  }
  kmq_wecom_sim_stats_t st;
  kmq_wecom_sim_stats(f.sim, &st);
  /* A thread that resumes after another's refresh never sees 42001. */
  ck_assert_int_eq(st.tokens_issued, 2);
  ck_assert_int_ge(st.token_refused, 1);
  ck_assert_int_le(st.token_refused, 4);
  char report[256];
  ck_assert_msg(!kmq_wecom_sim_verify_replies(f.sim, false, report,
                                              sizeof(report)),
                "%s", report);
  fx_done(&f);
}
END_TEST

START_TEST(response_size_is_bounded) {
  fx_t f = fx_new(1, 1000, 7200, 5);
  kmq_wecom_sim_add_messages(f.sim, 50, 4);
  char errstr[256], url[128];
  kmq_wecom_sim_base_url(f.sim, url, sizeof(url));
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  cc.base_url = url;
  cc.corp_id = "wwSIMCORP";
  cc.corp_secret = SECRET;
  cc.max_response_bytes = 4096; /* the token fits, 200 messages do not */
  kmq_wecom_client_t *cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  ck_assert_ptr_nonnull(cl);
  kmq_wecom_sync_req_t rq = {.open_kfid = "wkSIM000"};
  kmq_wecom_sync_page_t pg;
  ck_assert_int_eq(kmq_wecom_sync_msg(cl, &rq, &pg, NULL, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_ERR_TOO_LARGE);
  kmq_wecom_client_destroy(cl);
  fx_done(&f);
}
END_TEST

START_TEST(secrets_stay_out_of_errors) {
  fx_t f = fx_new(1, 5, 7200, 5);
  char errstr[512], url[128];
  kmq_wecom_sim_base_url(f.sim, url, sizeof(url));
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  cc.base_url = url;
  cc.corp_id = "wwSIMCORP";
  cc.corp_secret = "wrong-" SECRET;
  kmq_wecom_client_t *cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  kmq_wecom_sync_req_t rq = {.open_kfid = "wkSIM000"};
  kmq_wecom_sync_page_t pg;
  kmq_wecom_result_t res;
  ck_assert_int_eq(kmq_wecom_sync_msg(cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_ERR_TOKEN);
  ck_assert_int_eq(res.errcode, 40001);
  ck_assert_ptr_nonnull(strstr(errstr, "40001"));
  ck_assert_ptr_null(strstr(errstr, SECRET));
  ck_assert_ptr_null(strstr(errstr, "corpsecret"));
  kmq_wecom_client_destroy(cl);
  /* Nothing listens: a transport error, without the URL. */
  cc.base_url = "http://127.0.0.1:1/cgi-bin";
  cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_wecom_sync_msg(cl, &rq, &pg, &res, errstr,
                                      sizeof(errstr)),
                   KMQ_WECOM_API_ERR_TOKEN);
  ck_assert_ptr_null(strstr(errstr, SECRET));
  ck_assert_ptr_null(strstr(errstr, "127.0.0.1"));
  kmq_wecom_client_destroy(cl);
  fx_done(&f);
}
END_TEST

int main(void) {
  if (kmq_wecom_global_init())
    return 1;
  Suite *s = suite_create("wecom_client");
  TCase *tc = tcase_create("client");
  tcase_add_test(tc, paging_every_message_once_in_order);
  tcase_add_test(tc, token_expired_42001_mid_loop);
  tcase_add_test(tc, token_invalid_40014_mid_loop);
  tcase_add_test(tc, token_refused_twice_is_an_error);
  tcase_add_test(tc, token_refreshed_before_expires_in);
  tcase_add_test(tc, backoff_on_busy);
  tcase_add_test(tc, backoff_on_45009);
  tcase_add_test(tc, backoff_on_45033);
  tcase_add_test(tc, busy_attempts_are_bounded);
  tcase_add_test(tc, sync_token_95007_retried_without_token);
  tcase_add_test(tc, empty_pages_with_has_more_continue);
  tcase_add_test(tc, send_msg_from_threads_in_order);
  tcase_add_test(tc, token_refresh_shared_by_threads);
  tcase_add_test(tc, response_size_is_bounded);
  tcase_add_test(tc, secrets_stay_out_of_errors);
  suite_add_tcase(s, tc);
  int rc = kt_run(s);
  kmq_wecom_global_cleanup();
  return rc;
}
