/* The fallback store on both backends (loop index: fbutil.h's backend), one
 * test body each: idempotent insert, per-user head-only claims in created
 * order, success / backoff / failed marks, leases that expire, two claimers
 * that never share a row, durability across reopen. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fbutil.h"
#include "kmq/fallback.h"
#include "testutil.h"

static kmq_fallback_t *open_store(kmq_conf_t *c) {
  char errstr[512];
  kmq_fallback_t *fb = kmq_fallback_new(c, errstr, sizeof(errstr));
  ck_assert_msg(fb, "%s", errstr);
  return fb;
}

static kmq_conf_t *new_conf(int backend) {
  kmq_conf_t *c = kmq_conf_new();
  kt_fb_conf(c, backend, NULL, 0);
  return c;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put(kmq_fallback_t *fb, const char *mid, const char *user,
                int64_t created, int want_dup) {
  char errstr[512], val[64];
  snprintf(val, sizeof(val), "value of %s", mid);
  rd_kafka_headers_t *h = rd_kafka_headers_new(2);
  rd_kafka_header_add(h, "msg_id", -1, mid, -1);
  rd_kafka_header_add(h, "nullv", -1, NULL, 0);
  kmq_fallback_row_t r = {.message_id = mid,
                          .user_id = user,
                          .msg_type = "text",
                          .topic = "kt-topic",
                          .key = user,
                          .key_len = strlen(user),
                          .value = val,
                          .value_len = strlen(val),
                          .headers = h,
                          .partition = 3,
                          .offset = 42,
                          .source = "producer",
                          .error = "Local: Message timed out",
                          .created_at = created};
  int dup = -1;
  ck_assert_msg(!kmq_fallback_put(fb, &r, &dup, errstr, sizeof(errstr)), "%s",
                errstr);
  ck_assert_int_eq(dup, want_dup);
  rd_kafka_headers_destroy(h);
}

/* Claims and returns how many; entries into *out (caller frees). */
static size_t claim(kmq_fallback_t *fb, size_t max, int64_t lease,
                    kmq_fallback_entry_t **out) {
  char errstr[512];
  size_t n = 99;
  ck_assert_msg(!kmq_fallback_claim(fb, max, lease, out, &n, errstr,
                                    sizeof(errstr)),
                "%s", errstr);
  return n;
}

static const kmq_fallback_entry_t *find(kmq_fallback_entry_t *e, size_t n,
                                        const char *mid) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(e[i].message_id, mid))
      return &e[i];
  return NULL;
}

START_TEST(put_is_idempotent_and_durable) {
  kmq_conf_t *c = new_conf(_i);
  kmq_fallback_t *fb = open_store(c);
  put(fb, "m1", "u1", 0, 0);
  put(fb, "m1", "u1", 0, 1); /* a retried write: no second row */
  put(fb, "m2", "u2", 0, 0);
  kmq_fallback_stats_t s;
  kmq_fallback_stats(fb, &s);
  ck_assert_int_eq(s.stored, 2);
  ck_assert_int_eq(s.pending, 2);
  kmq_fallback_destroy(fb);

  /* Reopened: both rows, every field as written. */
  fb = open_store(c);
  kmq_fallback_entry_t *e;
  size_t n = claim(fb, 10, 60000, &e);
  ck_assert_int_eq(n, 2);
  const kmq_fallback_entry_t *m1 = find(e, n, "m1");
  ck_assert_ptr_nonnull(m1);
  ck_assert_str_eq(m1->user_id, "u1");
  ck_assert_str_eq(m1->topic, "kt-topic");
  ck_assert_str_eq(m1->source, "producer");
  ck_assert_int_eq(m1->key_len, 2);
  ck_assert(!memcmp(m1->key, "u1", 2));
  ck_assert_int_eq(m1->value_len, strlen("value of m1"));
  ck_assert(!memcmp(m1->value, "value of m1", m1->value_len));
  ck_assert_int_eq(m1->partition, 3);
  ck_assert_int_eq(m1->offset, 42);
  ck_assert_int_eq(m1->retry_count, 0);
  ck_assert_int_eq(m1->max_retries, 10);
  rd_kafka_headers_t *h =
      kmq_fallback_headers_unpack(m1->headers, m1->headers_len);
  ck_assert_ptr_nonnull(h);
  ck_assert_int_eq(rd_kafka_header_cnt(h), 2);
  const void *v;
  size_t vn;
  ck_assert(!rd_kafka_header_get_last(h, "msg_id", &v, &vn));
  ck_assert_int_eq(vn, 2);
  ck_assert(!memcmp(v, "m1", 2));
  ck_assert(!rd_kafka_header_get_last(h, "nullv", &v, &vn));
  ck_assert_ptr_null(v);
  rd_kafka_headers_destroy(h);
  kmq_fallback_entries_free(e, n);
  kmq_fallback_stats(fb, &s);
  ck_assert_int_eq(s.stored, 0); /* per handle */
  ck_assert_int_eq(s.pending, 2);
  kmq_fallback_destroy(fb);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(claims_heads_in_created_order) {
  char errstr[512];
  kmq_conf_t *c = new_conf(_i);
  ck_assert(!kmq_conf_set(c, "kmq.fallback.max.retries", "2", errstr,
                          sizeof(errstr)));
  kmq_fallback_t *fb = open_store(c);
  int64_t t = wall_ms() - 10000;
  /* Inserted out of created order: a2 first, then a1 (created earlier). */
  put(fb, "a2", "ua", t + 200, 0);
  put(fb, "a1", "ua", t + 100, 0);
  put(fb, "a3", "ua", t + 300, 0);
  put(fb, "b1", "ub", t + 50, 0);
  kmq_fallback_entry_t *e;
  size_t n = claim(fb, 10, 60000, &e);
  ck_assert_int_eq(n, 2); /* one head per user */
  ck_assert_ptr_nonnull(find(e, n, "a1"));
  ck_assert_ptr_nonnull(find(e, n, "b1"));
  int64_t a1 = find(e, n, "a1")->id, b1 = find(e, n, "b1")->id;
  kmq_fallback_entries_free(e, n);
  /* Claimed heads block their users: nothing more is claimable. */
  ck_assert_int_eq(claim(fb, 10, 60000, &e), 0);
  ck_assert_ptr_null(e);

  ck_assert(!kmq_fallback_done(fb, a1, errstr, sizeof(errstr)));
  ck_assert_int_eq(kmq_fallback_done(fb, a1, errstr, sizeof(errstr)),
                   KMQ_ERR_NOT_FOUND); /* no longer claimed */
  n = claim(fb, 10, 60000, &e);
  ck_assert_int_eq(n, 1);
  ck_assert_str_eq(e[0].message_id, "a2");
  int64_t a2 = e[0].id;
  kmq_fallback_entries_free(e, n);

  /* Backoff: a2 fails, due in an hour; it stays ua's head, so a3 waits. */
  int gave_up = -1;
  ck_assert(!kmq_fallback_retry(fb, a2, wall_ms() + 3600000, "broker down",
                                &gave_up, errstr, sizeof(errstr)));
  ck_assert_int_eq(gave_up, 0);
  ck_assert_int_eq(claim(fb, 10, 60000, &e), 0);
  /* b1 fails with a due time in the past: claimable again, counted. */
  ck_assert(!kmq_fallback_retry(fb, b1, 0, "x", &gave_up, errstr,
                                sizeof(errstr)));
  n = claim(fb, 10, 60000, &e);
  ck_assert_int_eq(n, 1);
  ck_assert_str_eq(e[0].message_id, "b1");
  ck_assert_int_eq(e[0].retry_count, 1);
  kmq_fallback_entries_free(e, n);
  /* Second failure reaches max_retries (2): failed, kept, counted. */
  ck_assert(!kmq_fallback_retry(fb, b1, 0, "x", &gave_up, errstr,
                                sizeof(errstr)));
  ck_assert_int_eq(gave_up, 1);
  ck_assert_int_eq(claim(fb, 10, 60000, &e), 0);
  kmq_fallback_stats_t s;
  kmq_fallback_stats(fb, &s);
  ck_assert_int_eq(s.compensated, 1);
  ck_assert_int_eq(s.failed, 1);
  ck_assert_int_eq(s.pending, 2); /* a2, a3 */
  ck_assert_int_ge(s.oldest_pending_age_seconds, 9);
  int64_t pend = -1;
  ck_assert(!kmq_fallback_user_pending(fb, "ub", &pend, errstr,
                                       sizeof(errstr)));
  ck_assert_int_eq(pend, 0);
  ck_assert(!kmq_fallback_user_pending(fb, "ua", &pend, errstr,
                                       sizeof(errstr)));
  ck_assert_int_eq(pend, 2);
  kmq_fallback_destroy(fb);
  kmq_conf_destroy(c);
}
END_TEST

/* Heads come out by next_retry_at: a user who failed recently waits behind
 * users who are due earlier. */
START_TEST(heads_by_next_retry_at) {
  char errstr[512];
  kmq_conf_t *c = new_conf(_i);
  kmq_fallback_t *fb = open_store(c);
  int64_t t = wall_ms() - 5000;
  put(fb, "x1", "ux", t, 0);
  put(fb, "y1", "uy", t + 1, 0);
  put(fb, "z1", "uz", t + 2, 0);
  kmq_fallback_entry_t *e;
  size_t n = claim(fb, 3, 60000, &e);
  ck_assert_int_eq(n, 3);
  /* x due last, z first, y in between (all in the past). */
  for (size_t i = 0; i < n; i++) {
    int64_t next = !strcmp(e[i].user_id, "ux")   ? t + 300
                   : !strcmp(e[i].user_id, "uy") ? t + 200
                                                 : t + 100;
    ck_assert(!kmq_fallback_retry(fb, e[i].id, next, "x", NULL, errstr,
                                  sizeof(errstr)));
  }
  kmq_fallback_entries_free(e, n);
  n = claim(fb, 1, 60000, &e);
  ck_assert_int_eq(n, 1);
  ck_assert_str_eq(e[0].user_id, "uz");
  kmq_fallback_entries_free(e, n);
  n = claim(fb, 1, 60000, &e);
  ck_assert_int_eq(n, 1);
  ck_assert_str_eq(e[0].user_id, "uy");
  kmq_fallback_entries_free(e, n);
  kmq_fallback_destroy(fb);
  kmq_conf_destroy(c);
}
END_TEST

typedef struct {
  kmq_fallback_t *other;
  int64_t id;
} steal_t;

static bool stolen(void *opaque) {
  steal_t *s = opaque;
  kmq_fallback_entry_t *e;
  size_t n = claim(s->other, 10, 60000, &e);
  bool got = n == 1 && e[0].id == s->id;
  kmq_fallback_entries_free(e, n);
  return got;
}

/* A claimer that dies keeps its rows only for the lease: then another
 * claims them, and the first one's late mark is refused. */
START_TEST(expired_lease_is_claimable) {
  char errstr[512];
  kmq_conf_t *c = new_conf(_i);
  kmq_fallback_t *a = open_store(c), *b = open_store(c);
  put(a, "l1", "ul", 0, 0);
  kmq_fallback_entry_t *e;
  ck_assert_int_eq(claim(a, 10, 60000, &e), 1);
  kmq_fallback_entries_free(e, 1);
  ck_assert_int_eq(claim(b, 10, 60000, &e), 0); /* held for a */
  ck_assert_int_eq(claim(a, 10, 60000, &e), 0); /* and not twice */

  /* A short lease this time (ul is still held by the first claim). */
  kmq_fallback_destroy(a);
  kmq_fallback_destroy(b);
  put((a = open_store(c)), "l2", "ul2", 0, 0);
  b = open_store(c);
  ck_assert_int_eq(claim(a, 1, 300, &e), 1); /* l1's user is held: l2 */
  steal_t s = {b, e[0].id};
  ck_assert_str_eq(e[0].message_id, "l2");
  kmq_fallback_entries_free(e, 1);
  ck_assert(kt_wait_until(stolen, &s, 10000));
  ck_assert_int_eq(kmq_fallback_done(a, s.id, errstr, sizeof(errstr)),
                   KMQ_ERR_NOT_FOUND);
  ck_assert(!kmq_fallback_done(b, s.id, errstr, sizeof(errstr)));
  kmq_fallback_destroy(a);
  kmq_fallback_destroy(b);
  kmq_conf_destroy(c);
}
END_TEST

#define USERS 120
#define PER 3

typedef struct {
  kmq_fallback_t *fb;
  int64_t ids[USERS * PER];
  char users[USERS * PER][16];
  size_t n;
} claimer_t;

/* Claims, marks success, until nothing is claimable for a while. */
static void *claimer(void *opaque) {
  claimer_t *cl = opaque;
  char errstr[512];
  int idle = 0;
  while (idle < 50) {
    kmq_fallback_entry_t *e;
    size_t n = claim(cl->fb, 4, 60000, &e);
    idle = n ? 0 : idle + 1;
    for (size_t i = 0; i < n; i++) {
      ck_assert(!kmq_fallback_done(cl->fb, e[i].id, errstr, sizeof(errstr)));
      cl->ids[cl->n] = e[i].id;
      snprintf(cl->users[cl->n++], 16, "%s", e[i].user_id);
    }
    kmq_fallback_entries_free(e, n);
    sched_yield(); /* SQLite's busy wait is unfair: let the other in */
  }
  return NULL;
}

START_TEST(two_claimers_never_share_a_row) {
  kmq_conf_t *c = new_conf(_i);
  kmq_fallback_t *fb = open_store(c);
  char mid[32], user[16];
  int64_t t = wall_ms() - 1000;
  for (int k = 0; k < PER; k++)
    for (int u = 0; u < USERS; u++) {
      snprintf(mid, sizeof(mid), "m-%d-%d", u, k);
      snprintf(user, sizeof(user), "u%d", u);
      put(fb, mid, user, t + k, 0);
    }
  static claimer_t cl[2];
  memset(cl, 0, sizeof(cl));
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    cl[i].fb = open_store(c);
    pthread_create(&th[i], NULL, claimer, &cl[i]);
  }
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  /* Every row claimed exactly once, over both. */
  ck_assert_int_eq(cl[0].n + cl[1].n, USERS * PER);
  static char seen[USERS * PER * 4];
  memset(seen, 0, sizeof(seen));
  for (int i = 0; i < 2; i++)
    for (size_t k = 0; k < cl[i].n; k++) {
      ck_assert(cl[i].ids[k] > 0 && cl[i].ids[k] < (int64_t)sizeof(seen));
      ck_assert_int_eq(seen[cl[i].ids[k]]++, 0);
    }
  printf("%s: claimers took %zu and %zu rows\n", kt_fb_name(_i), cl[0].n,
         cl[1].n);
  kmq_fallback_stats_t s;
  kmq_fallback_stats(fb, &s);
  ck_assert_int_eq(s.pending, 0);
  for (int i = 0; i < 2; i++)
    kmq_fallback_destroy(cl[i].fb);
  kmq_fallback_destroy(fb);
  kmq_conf_destroy(c);
}
END_TEST

static void dump_url(const char *name, const char *value, const char *desc,
                     void *opaque) {
  (void)desc;
  if (!strcmp(name, "kmq.fallback.url"))
    snprintf(opaque, 256, "%s", value);
}

START_TEST(unusable_store_is_refused) {
  char errstr[512];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert(!kmq_conf_set(c, "kmq.fallback.backend", "sqlite", errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.fallback.path", "/nonexistent/dir/x.db",
                          errstr, sizeof(errstr)));
  ck_assert_ptr_null(kmq_fallback_new(c, errstr, sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.fallback.backend", "mysql", errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.fallback.url",
                          "mysql://kt:s3cret-pw@127.0.0.1:1/kmq", errstr,
                          sizeof(errstr)));
  ck_assert_ptr_null(kmq_fallback_new(c, errstr, sizeof(errstr)));
  ck_assert_ptr_null(strstr(errstr, "s3cret-pw")); /* never the password */
  char dumped[256] = "";
  kmq_conf_dump(c, dump_url, dumped);
  ck_assert_str_eq(dumped, "mysql://kt:***@127.0.0.1:1/kmq");
  ck_assert(!kmq_conf_set(c, "kmq.fallback.backend", "none", errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_fallback_configured(c));
  ck_assert_ptr_null(kmq_fallback_new(c, errstr, sizeof(errstr)));
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fallback_store");
  TCase *tc = tcase_create("store");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, put_is_idempotent_and_durable, 0, KT_FB_NBACKENDS);
  tcase_add_loop_test(tc, claims_heads_in_created_order, 0, KT_FB_NBACKENDS);
  tcase_add_loop_test(tc, heads_by_next_retry_at, 0, KT_FB_NBACKENDS);
  tcase_add_loop_test(tc, expired_lease_is_claimable, 0, KT_FB_NBACKENDS);
  tcase_add_loop_test(tc, two_claimers_never_share_a_row, 0,
                      KT_FB_NBACKENDS);
  tcase_add_test(tc, unusable_store_is_refused);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
