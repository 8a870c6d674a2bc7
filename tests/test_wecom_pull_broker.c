/* The sync_msg puller on the real broker with the in-process WeCom
 * simulator: every message of several open_kfids lands in kmq's topic keyed
 * by external_userid in per-user order, cursors are stored and shared (a
 * second instance continues where the first stopped), and with two
 * instances in one group where one is SIGKILLed right after a page was
 * delivered but before its cursor was stored, nothing is skipped, per-user
 * order holds and the only duplicates are that page's messages. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "brokerutil.h"
#include "kmq/admin.h"
#include "kmq/message.h"
#include "kmq/wecom_api.h"
#include "testutil.h"
#include "wecomutil.h"
#include "wecom_sim.h"

#define MAXU 64

/* ---- what landed in the topic ------------------------------------------- */

typedef struct {
  kmq_msg_decoder_t *dec;
  int seen[MAXU][64];     /* times msgid (u, seq) was seen */
  int max_seq[MAXU];      /* highest seq seen per user, -1: none */
  int records, dups, bad, reordered;
  int dup_user[MAXU];     /* duplicates per user */
  char why[320];
} topic_t;

static void on_record(const rd_kafka_message_t *m, void *opaque) {
  topic_t *t = opaque;
  char errstr[256], hid[64];
  kmq_chat_msg_t msg;
  t->records++;
  if (kmq_msg_decode(t->dec, m->payload, m->len, &msg, errstr,
                     sizeof(errstr))) {
    snprintf(t->why, sizeof(t->why), "decode: %s", errstr);
    t->bad++;
    return;
  }
  int u, seq;
  if (!kmq_msg_key_matches(&msg, m->key, m->key_len) ||
      kmq_wecom_sim_parse_msgid(msg.message_id.ptr, &u, &seq) || u >= MAXU ||
      seq >= 64 || strcmp(kt_header(m, "msg_id", hid, sizeof(hid)),
                          msg.message_id.ptr)) {
    snprintf(t->why, sizeof(t->why), "key / msgid / header wrong: %s",
             msg.message_id.ptr);
    t->bad++;
  } else {
    /* Per-user order: a record never skips ahead of the next unseen seq;
     * going back is a re-pulled page (a duplicate). */
    if (seq > t->max_seq[u] + 1)
      t->reordered++;
    if (seq > t->max_seq[u])
      t->max_seq[u] = seq;
    if (t->seen[u][seq]++) {
      t->dups++;
      t->dup_user[u]++;
    }
  }
  kmq_chat_msg_clear(&msg);
}

static void read_out(kt_wx_t *f, topic_t *t) {
  char errstr[128];
  memset(t, 0, sizeof(*t));
  for (int u = 0; u < MAXU; u++)
    t->max_seq[u] = -1;
  t->dec = kmq_msg_decoder_new(NULL, errstr, sizeof(errstr));
  int n = kt_wx_count(f, f->out_topic);
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), f->out_topic, n, 30000,
                                 on_record, t),
                   n);
  kmq_msg_decoder_destroy(t->dec);
  ck_assert_msg(!t->bad, "%d bad records: %s", t->bad, t->why);
  ck_assert_int_eq(t->reordered, 0);
}

static void assert_all_present(kt_wx_t *f, topic_t *t, int customers) {
  for (int u = 0; u < customers; u++) {
    int sent = kmq_wecom_sim_sent(f->sim, u);
    for (int s = 0; s < sent; s++)
      ck_assert_msg(t->seen[u][s] >= 1, "user %d seq %d missing", u, s);
    ck_assert_int_eq(t->max_seq[u], sent - 1);
  }
}

typedef struct {
  kmq_wecom_puller_t *p;
  int64_t produced, requests;
} until_t;

static bool pulled_enough(void *opaque) {
  until_t *w = opaque;
  char errstr[512];
  kmq_wecom_puller_poll(w->p, 100, errstr, sizeof(errstr));
  kmq_wecom_puller_stats_t st;
  kmq_wecom_puller_stats(w->p, &st);
  return st.produced >= w->produced && st.requests >= w->requests;
}

static void cursor_rec(const rd_kafka_message_t *m, void *opaque) {
  json_t *last = opaque; /* open_kfid -> last cursor */
  char k[64], state[16];
  snprintf(k, sizeof(k), "%.*s", (int)m->key_len, (const char *)m->key);
  kt_header(m, "kmq_state", state, sizeof(state));
  json_object_set_new(last, k,
                      json_pack("{s:s%, s:s}", "c", (const char *)m->payload,
                                m->len, "s", state));
}

START_TEST(puller_pulls_every_kfid_in_user_order) {
  kt_wx_t f;
  kt_wx_init(&f, 3, 7);
  f.req_producer = kt_producer_new();
  kmq_wecom_puller_t *p = kt_wx_puller(&f, f.cl, 0, 0, NULL, NULL);
  /* A WeCom callback token refused once, and an empty page with
   * has_more = 1 in the middle. */
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SYNC, 95007, 1);
  kmq_wecom_sim_inject_empty_pages(f.sim, 1);
  kt_wx_add(&f, 12, 10);
  until_t w = {p, 120, 3};
  ck_assert(kt_wait_until(pulled_enough, &w, 40000));
  /* New messages later: pulled from the stored cursors, none again. */
  kt_wx_add(&f, 12, 5);
  w = (until_t){p, 180, 6};
  ck_assert(kt_wait_until(pulled_enough, &w, 30000));
  kmq_wecom_puller_stats_t st;
  kmq_wecom_puller_stats(p, &st);
  ck_assert_int_eq(st.pulled, 180);
  ck_assert_int_eq(st.produced, 180);
  ck_assert_int_eq(st.unroutable, 0);
  ck_assert_int_eq(st.duplicates_suspected, 0);
  ck_assert_int_eq(st.sync_token_dropped, 1);
  ck_assert_int_eq(st.empty_pages, 1);
  ck_assert_int_eq(st.errors, 0);
  kmq_wecom_puller_destroy(p);
  kt_assert_committed_at_end(kt_bootstrap(), f.group, f.sync_topic);

  /* Another instance of the gateway: the cursors come from Kafka. */
  p = kt_wx_puller(&f, f.cl, 0, 0, NULL, NULL);
  kt_wx_add(&f, 12, 1);
  w = (until_t){p, 12, 3};
  ck_assert(kt_wait_until(pulled_enough, &w, 40000));
  kmq_wecom_puller_stats(p, &st);
  ck_assert_int_eq(st.pulled, 12);
  ck_assert_int_ge(st.cursor_loads, 1);
  kmq_wecom_puller_destroy(p);

  topic_t t;
  read_out(&f, &t);
  ck_assert_int_eq(t.records, 192);
  ck_assert_int_eq(t.dups, 0);
  assert_all_present(&f, &t, 12);
  /* The stored cursor of each open_kfid is the end of its log. */
  json_t *last = json_object();
  char ctopic[160];
  snprintf(ctopic, sizeof(ctopic), "%s.cursors", f.sync_topic);
  int n = kt_wx_count(&f, ctopic);
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), ctopic, n, 30000, cursor_rec,
                                 last),
                   n);
  for (int k = 0; k < 3; k++) {
    char kf[32], want[32];
    kmq_wecom_sim_kfid(k, kf, sizeof(kf));
    snprintf(want, sizeof(want), "CUR:%d:%d", k, 4 * 16);
    json_t *e = json_object_get(last, kf);
    ck_assert_str_eq(json_string_value(json_object_get(e, "c")), want);
    ck_assert_str_eq(json_string_value(json_object_get(e, "s")), "done");
  }
  json_decref(last);
  kt_wx_done(&f);
}
END_TEST


/* ---- two instances, one killed mid-request ------------------------------ */

#define CRASH_PAGE 3 /* the child dies after its 3rd page is delivered */
#define PAGE 5

typedef struct {
  atomic_int assigned; /* the child's sync partitions */
  atomic_int pages;    /* pages the child delivered */
} shm_t;

/* After the page's messages are delivered and before its cursor is
 * written: the worst moment to die. */
static void crash_hook(const char *kfid, int n, void *opaque) {
  (void)kfid, (void)n;
  shm_t *s = opaque;
  if (atomic_fetch_add(&s->pages, 1) + 1 == CRASH_PAGE)
    raise(SIGKILL);
}

static void child_main(kt_wx_t *f, shm_t *s) {
  char errstr[256], url[128];
  kmq_wecom_client_conf_t cc;
  kmq_wecom_client_conf_init(&cc);
  kmq_wecom_sim_base_url(f->sim, url, sizeof(url));
  cc.base_url = url;
  cc.corp_id = "wwSIMCORP";
  cc.corp_secret = "sim-secret-0123456789";
  kmq_wecom_client_t *cl = kmq_wecom_client_new(&cc, errstr, sizeof(errstr));
  if (!cl)
    _exit(2);
  kmq_wecom_puller_t *p = kt_wx_puller(f, cl, 0, 0, crash_hook, s);
  int64_t deadline = kt_now_ms() + 50000;
  while (kt_now_ms() < deadline) {
    kmq_wecom_puller_poll(p, 100, errstr, sizeof(errstr));
    kmq_wecom_puller_stats_t st;
    kmq_wecom_puller_stats(p, &st);
    atomic_store(&s->assigned, st.assigned);
  }
  _exit(3); /* never reached a page to die on: the parent fails */
}

typedef struct {
  kt_wx_t *f;
  shm_t *s;
  kmq_wecom_puller_t *b;
  pid_t pid;
  int status;
} crash_t;

static bool child_alone_assigned(void *o) {
  crash_t *c = o;
  return atomic_load(&c->s->assigned) == KT_WX_PARTS;
}

static bool both_assigned(void *o) {
  crash_t *c = o;
  kmq_wecom_puller_stats_t st;
  kmq_wecom_puller_stats(c->b, &st);
  int a = atomic_load(&c->s->assigned);
  return a > 0 && st.assigned > 0 && a + st.assigned == KT_WX_PARTS;
}

static bool child_died(void *o) {
  crash_t *c = o;
  return waitpid(c->pid, &c->status, WNOHANG) == c->pid;
}

/* Every sync request committed by the group. */
static bool requests_committed(kt_wx_t *f) {
  char errstr[256];
  kmq_partition_lag_t lag[KT_WX_PARTS];
  int n = KT_WX_PARTS;
  if (kmq_admin_group_lag(f->kafka, f->group, f->sync_topic, lag, &n, 5000,
                          errstr, sizeof(errstr)))
    return false;
  for (int i = 0; i < n; i++)
    if (lag[i].high > lag[i].low && lag[i].committed != lag[i].high)
      return false;
  return true;
}

static bool all_requests_committed(void *o) {
  return requests_committed(((crash_t *)o)->f);
}

START_TEST(puller_killed_mid_request_skips_nothing) {
  kt_wx_t f;
  kt_wx_init(&f, KT_WX_PARTS, PAGE);
  shm_t *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(s, MAP_FAILED);
  atomic_init(&s->assigned, 0);
  atomic_init(&s->pages, 0);
  /* The child before any librdkafka handle exists here (fork copies only
   * the calling thread). It talks to this process's simulator. */
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    child_main(&f, s);
  crash_t c = {.f = &f, .s = s, .pid = pid};
  ck_assert_msg(kt_wait_until(child_alone_assigned, &c, 30000),
                "the child never got the partitions");
  kt_wx_runner_t r;
  kt_wx_runner_start(&r, kt_wx_puller(&f, f.cl, 0, 0, NULL, NULL));
  c.b = r.p;
  ck_assert_msg(kt_wait_until(both_assigned, &c, 30000),
                "the group never split the partitions");

  /* 8 customers x 20 messages, 40 per open_kfid, pages of 5: the child's
   * first request has 8 pages, it dies in the middle of it. */
  f.req_producer = kt_producer_new();
  kt_wx_add(&f, 8, 20);
  ck_assert_msg(kt_wait_until(child_died, &c, 30000), "the child lives");
  ck_assert_msg(WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGKILL,
                "child status %d", c.status);
  ck_assert_int_eq(atomic_load(&s->pages), CRASH_PAGE);
  /* The survivor takes the dead member's partitions after its session
   * timeout and finishes every request. */
  ck_assert_msg(kt_wait_until(all_requests_committed, &c, 40000),
                "requests left uncommitted");
  kt_wx_runner_stop(&r);
  kmq_wecom_puller_stats_t st;
  kmq_wecom_puller_stats(r.p, &st);
  kmq_wecom_puller_destroy(r.p);

  topic_t t;
  read_out(&f, &t);
  assert_all_present(&f, &t, 8);
  /* Exactly the page the child delivered without storing its cursor came
   * twice, all of one open_kfid, and the survivor suspected exactly it. */
  ck_assert_int_eq(t.records, 160 + PAGE);
  ck_assert_int_eq(t.dups, PAGE);
  int kf_dups[KT_WX_PARTS] = {0};
  for (int u = 0; u < 8; u++)
    kf_dups[u % KT_WX_PARTS] += t.dup_user[u];
  int kfs = 0;
  for (int k = 0; k < KT_WX_PARTS; k++)
    kfs += kf_dups[k] > 0;
  ck_assert_int_eq(kfs, 1);
  ck_assert_int_eq(st.duplicates_suspected, PAGE);
  ck_assert_int_eq(st.unroutable, 0);

  munmap(s, sizeof(*s));
  kt_wx_done(&f);
}
END_TEST

/* A failed page is tried again from the stored cursor; a request that
 * fails max_request_failures times is dropped without losing a message
 * (the next callback pulls from the same cursor); a request cut at
 * max_pages goes on through a follow-up request. */
START_TEST(failed_and_long_requests_lose_nothing) {
  kt_wx_t f;
  kt_wx_init(&f, 1, 4);
  f.req_producer = kt_producer_new();
  kmq_wecom_puller_t *p = kt_wx_puller(&f, f.cl, 3, 3, NULL, NULL);
  /* 60020 is not one the client retries: the request fails once; then a
   * page without next_cursor is refused, nothing of it produced; the third
   * attempt goes through (max_request_failures is 3). */
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SYNC, 60020, 1);
  kmq_wecom_sim_inject_no_cursor(f.sim, 1);
  kt_wx_add(&f, 3, 10); /* 30 messages: 8 pages of 4, so 2 follow-ups */
  until_t w = {p, 30, 3};
  ck_assert(kt_wait_until(pulled_enough, &w, 40000));
  kmq_wecom_puller_stats_t st;
  kmq_wecom_puller_stats(p, &st);
  ck_assert_int_eq(st.errors, 2);
  ck_assert_int_eq(st.followups, 2);
  ck_assert_int_eq(st.requests_dropped, 0);
  ck_assert_int_eq(st.pulled, 30);
  /* Three failures in a row: dropped, nothing pulled. */
  kmq_wecom_sim_inject(f.sim, KMQ_WECOM_SIM_SYNC, 60020, 3);
  kt_wx_add(&f, 3, 1);
  w = (until_t){p, 30, 3};
  bool dropped = false;
  int64_t deadline = kt_now_ms() + 30000;
  while (!dropped && kt_now_ms() < deadline) {
    pulled_enough(&w);
    kmq_wecom_puller_stats(p, &st);
    dropped = st.requests_dropped == 1;
  }
  ck_assert(dropped);
  ck_assert_int_eq(st.pulled, 30);
  /* The next callback pulls the 3 left behind and the 3 new, and an event
   * that names no customer (servicer_status_change): not produced. */
  ck_assert_int_eq(
      kmq_wecom_sim_add_raw(
          f.sim, 0,
          "{\"msgid\":\"sys-1\",\"open_kfid\":\"wkSIM000\",\"send_time\":1,"
          "\"origin\":4,\"msgtype\":\"event\",\"event\":{\"event_type\":"
          "\"servicer_status_change\",\"servicer_userid\":\"zhangsan\","
          "\"status\":1,\"open_kfid\":\"wkSIM000\"}}"),
      0);
  kt_wx_add(&f, 3, 1);
  w = (until_t){p, 36, 4}; /* a dropped request is not in requests */
  ck_assert(kt_wait_until(pulled_enough, &w, 30000));
  kmq_wecom_puller_stats(p, &st);
  ck_assert_int_eq(st.pulled, 37);
  ck_assert_int_eq(st.unroutable, 1);
  ck_assert_int_eq(st.duplicates_suspected, 0);
  kmq_wecom_puller_destroy(p);
  kt_assert_committed_at_end(kt_bootstrap(), f.group, f.sync_topic);
  topic_t t;
  read_out(&f, &t);
  ck_assert_int_eq(t.records, 36);
  ck_assert_int_eq(t.dups, 0);
  assert_all_present(&f, &t, 3);
  kt_wx_done(&f);
}
END_TEST

typedef struct {
  kmq_wecom_puller_t *a, *b;
  kt_wx_t *f;
} pair_t;

static bool pair_split(void *o) {
  pair_t *p = o;
  kmq_wecom_puller_stats_t sa, sb;
  kmq_wecom_puller_stats(p->a, &sa);
  kmq_wecom_puller_stats(p->b, &sb);
  return sa.assigned > 0 && sb.assigned > 0 &&
         sa.assigned + sb.assigned == KT_WX_PARTS;
}

static bool pair_produced(void *o) {
  pair_t *p = o;
  kmq_wecom_puller_stats_t sa, sb;
  kmq_wecom_puller_stats(p->a, &sa);
  kmq_wecom_puller_stats(p->b, &sb);
  /* A request may pull messages added after it was sent (has_more runs to
   * the end of the log): the later request is then still to commit. */
  return sa.produced + sb.produced >= 240 && requests_committed(p->f);
}

/* A second instance joins while the first is in the middle of its pages:
 * the revoke waits for the request in progress, the new owner reads the
 * cursors the old one stored, and not one message comes twice. */
START_TEST(clean_rebalance_repeats_nothing) {
  kt_wx_t f;
  kt_wx_init(&f, KT_WX_PARTS, 2);
  f.req_producer = kt_producer_new();
  kt_wx_runner_t a, b;
  kt_wx_runner_start(&a, kt_wx_puller(&f, f.cl, 0, 0, NULL, NULL));
  /* WeCom answers slowly, so that the first instance is still paging
   * when the group splits. */
  kmq_wecom_sim_set_latency(f.sim, 50);
  kt_wx_add(&f, 8, 20); /* 160 messages, 80 pages of 2: >= 4 s */
  kt_wx_runner_start(&b, kt_wx_puller(&f, f.cl, 0, 0, NULL, NULL));
  pair_t pr = {a.p, b.p, &f};
  ck_assert_msg(kt_wait_until(pair_split, &pr, 30000), "no split");
  kmq_wecom_puller_stats_t at_split;
  kmq_wecom_puller_stats(a.p, &at_split);
  ck_assert_msg(at_split.produced < 160, "the first was done before the split");
  kmq_wecom_sim_set_latency(f.sim, 0);
  kt_wx_add(&f, 8, 10); /* and 80 after the split */
  ck_assert_msg(kt_wait_until(pair_produced, &pr, 40000), "not all pulled");
  kt_wx_runner_stop(&a);
  kt_wx_runner_stop(&b);
  kmq_wecom_puller_stats_t sa, sb;
  kmq_wecom_puller_stats(a.p, &sa);
  kmq_wecom_puller_stats(b.p, &sb);
  kmq_wecom_puller_destroy(a.p);
  kmq_wecom_puller_destroy(b.p);
  kt_assert_committed_at_end(kt_bootstrap(), f.group, f.sync_topic);
  ck_assert_int_gt(sb.produced, 0);
  ck_assert_int_eq(sa.produced + sb.produced, 240);
  ck_assert_int_eq(sa.duplicates_suspected + sb.duplicates_suspected, 0);
  topic_t t;
  read_out(&f, &t);
  ck_assert_int_eq(t.records, 240);
  ck_assert_int_eq(t.dups, 0);
  assert_all_present(&f, &t, 8);
  kt_wx_done(&f);
}
END_TEST

int main(void) {
  if (kmq_wecom_global_init())
    return 1;
  Suite *s = suite_create("wecom_pull_broker");
  TCase *tc = tcase_create("puller");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, puller_pulls_every_kfid_in_user_order);
  tcase_add_test(tc, failed_and_long_requests_lose_nothing);
  suite_add_tcase(s, tc);
  TCase *tk = tcase_create("crash");
  tcase_set_timeout(tk, 60);
  tcase_add_test(tk, puller_killed_mid_request_skips_nothing);
  tcase_add_test(tk, clean_rebalance_repeats_nothing);
  suite_add_tcase(s, tk);
  int rc = kt_run(s);
  kmq_wecom_global_cleanup();
  return rc;
}
