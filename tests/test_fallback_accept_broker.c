/* Acceptance test of the third level (issue 11) on a private real broker
 * (scripts/kafka.sh through tests/faults' cluster helpers), for the store
 * backend named by argv[1] (sqlite | mysql):
 *   200 users send all along; the broker is SIGKILLed for longer than
 *   message.timeout.ms (3 s), then restarted; the senders keep going while
 *   the producer's compensator drains the store. Then: every send has exactly
 *   one outcome; nothing is LOST; every message not in the DLQ is in the
 *   topic; per user, messages sent after the user's first failure are in
 *   send order (asserted: 0 reorderings), and the reorderings among messages
 *   that were already queued in librdkafka when the outage began are counted
 *   and printed (not a guarantee: producer.h); the store is drained.
 * And the store unavailable too: a private MariaDB stopped mid-outage; every
 * send then ends in a synchronous error or exactly one report, LOST counted,
 * nothing dropped silently. */
#include <check.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fbutil.h"
#include "harness.h"
#include "kmq/admin.h"
#include "kmq/producer.h"
#include "testutil.h"

#define U 200
#define MAXS 1024
#define SENDERS 4

static int g_backend; /* argv[1]; set once in main before the suite runs */
/* argv[2] "sigstop": the broker is frozen (SIGSTOP) for a little longer than
 * message.timeout.ms and thawed, instead of killed and restarted: it comes
 * back while messages queued before the outage are still in librdkafka, the
 * case the order guarantee leaves out (measured, not asserted). */
static int g_sigstop;

typedef struct {
  kmq_producer_t *p;
  const char *topic;
  atomic_int stop;
  atomic_int sent[U];      /* next seq of each user (sends begun) */
  atomic_int fail_mark[U]; /* sent[u] at the user's first failed delivery */
  atomic_int reports[U][MAXS];
  atomic_int status[U][MAXS]; /* kmq_delivery_status_t, or -1: send error */
  atomic_int lost, sync_err;
  int idx;
} acc_t;

typedef struct {
  acc_t *a;
  int idx;
} sender_arg_t;

static void dr(const kmq_delivery_t *d, void *opaque) {
  acc_t *a = opaque;
  intptr_t v = (intptr_t)d->opaque;
  int u = (int)(v >> 16), s = (int)(v & 0xffff);
  atomic_fetch_add(&a->reports[u][s], 1);
  atomic_store(&a->status[u][s], (int)d->status);
  if (d->status == KMQ_DELIVERY_LOST)
    atomic_fetch_add(&a->lost, 1);
  if (d->kafka_err) { /* a delivery failed (not a message sent to the store) */
    int none = INT_MAX;
    atomic_compare_exchange_strong(&a->fail_mark[u], &none,
                                   atomic_load(&a->sent[u]));
  }
}

static void send_one(acc_t *a, int u) {
  int s = atomic_load(&a->sent[u]);
  if (s >= MAXS)
    return;
  atomic_store(&a->sent[u], s + 1);
  char key[32], val[32], mid[96];
  snprintf(key, sizeof(key), "acc-u%03d", u);
  snprintf(val, sizeof(val), "%d:%d", u, s);
  snprintf(mid, sizeof(mid), "%s-%d-%d", a->topic, u, s);
  kmq_produce_msg_t m = {.key = key,
                         .key_len = strlen(key),
                         .value = val,
                         .value_len = strlen(val),
                         .msg_type = "text",
                         .msg_id = mid,
                         .opaque = (void *)(intptr_t)((u << 16) | s)};
  if (kmq_producer_send(a->p, &m, NULL) != KMQ_OK) {
    atomic_fetch_add(&a->reports[u][s], 1);
    atomic_store(&a->status[u][s], -1);
    atomic_fetch_add(&a->sync_err, 1);
  }
}

/* One message per own user per round, a round every 250 ms: pacing of the
 * load, not synchronisation (the test waits on conditions). */
static void *sender(void *opaque) {
  sender_arg_t *sa = opaque;
  while (!atomic_load(&sa->a->stop)) {
    for (int u = sa->idx; u < U; u += SENDERS)
      send_one(sa->a, u);
    struct timespec ts = {0, 250 * 1000000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static bool all_delivered_some(void *opaque) {
  acc_t *a = opaque;
  for (int u = 0; u < U; u++) {
    int n = 0;
    for (int s = 0; s < 3; s++)
      n += atomic_load(&a->status[u][s]) == KMQ_DELIVERY_DELIVERED &&
           atomic_load(&a->reports[u][s]) == 1;
    if (n < 3)
      return false;
  }
  return true;
}

static bool all_failed(void *opaque) {
  acc_t *a = opaque;
  for (int u = 0; u < U; u++)
    if (atomic_load(&a->fail_mark[u]) == INT_MAX)
      return false;
  return true;
}

/* The compensator caught up with users who kept sending: they were released
 * and produce directly again (deliveries past the 3 per user before the
 * outage). */
static bool direct_again(void *opaque) {
  acc_t *a = opaque;
  kmq_producer_stats_t ps;
  kmq_producer_stats(a->p, &ps);
  return ps.delivered >= 3 * U + 2 * U;
}

typedef struct {
  acc_t *a;
  int64_t until;
} frozen_t;

/* Some user failed, and the freeze outlasted message.timeout.ms + 1 s. */
static bool froze_long_enough(void *opaque) {
  frozen_t *f = opaque;
  if (kt_now_ms() < f->until)
    return false;
  for (int u = 0; u < U; u++)
    if (atomic_load(&f->a->fail_mark[u]) != INT_MAX)
      return true;
  return false;
}

static pid_t broker_pid(const kf_cluster_t *cl) {
  char path[600];
  snprintf(path, sizeof(path), "%s/node-1.pid", cl->state);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  int pid = 0;
  ck_assert_int_eq(fscanf(f, "%d", &pid), 1);
  fclose(f);
  ck_assert_int_gt(pid, 1);
  return (pid_t)pid;
}

static bool store_drained(void *opaque) {
  acc_t *a = opaque;
  kmq_fallback_stats_t s;
  kmq_fallback_stats(kmq_producer_fallback(a->p), &s);
  return s.pending == 0 && s.compensated == s.stored; /* counters settled */
}

typedef struct {
  acc_t *a;
  int seen[U][MAXS];
  int maxseen[U];
  int total, dups, reorder_after_fail, reorder_queue;
  int dlq_seen[U][MAXS];
} check_t;

static void on_main(const rd_kafka_message_t *m, void *opaque) {
  check_t *c = opaque;
  int u, s;
  char buf[32];
  snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (const char *)m->payload);
  ck_assert_int_eq(sscanf(buf, "%d:%d", &u, &s), 2);
  ck_assert(u >= 0 && u < U && s >= 0 && s < MAXS);
  c->total++;
  if (c->seen[u][s]++) {
    c->dups++;
    return;
  }
  if (s < c->maxseen[u]) {
    /* s arrives after a later message of its user: s is late. */
    if (s >= atomic_load(&c->a->fail_mark[u]))
      c->reorder_after_fail++;
    else
      c->reorder_queue++;
  }
  if (s > c->maxseen[u])
    c->maxseen[u] = s;
}

static void on_dlq(const rd_kafka_message_t *m, void *opaque) {
  check_t *c = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  int u, s;
  const char *p = json_string_value(json_object_get(j, "payload"));
  if (p && sscanf(p, "%d:%d", &u, &s) == 2 && u >= 0 && u < U && s >= 0 &&
      s < MAXS)
    c->dlq_seen[u][s]++;
  json_decref(j);
}

static int topic_size(const char *bootstrap, const char *topic, int parts) {
  char errstr[512];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  rd_kafka_conf_set(rc, "bootstrap.servers", bootstrap, errstr,
                    sizeof(errstr));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  int total = 0;
  for (int p = 0; p < parts; p++) {
    int64_t lo, hi;
    ck_assert(!rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi,
                                                10000));
    total += (int)(hi - lo);
  }
  rd_kafka_destroy(rk);
  return total;
}

static void set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[512];
  ck_assert_msg(!kmq_conf_set(c, k, v, errstr, sizeof(errstr)), "%s=%s: %s",
                k, v, errstr);
}

START_TEST(broker_outage_all_stored_and_replayed_in_order) {
  char state[512], topic[96], dlq[128], errstr[512];
  snprintf(state, sizeof(state), "%s/faults-state-fallback-%s%s",
           kf_build_dir(), kt_fb_name(g_backend), g_sigstop ? "-sigstop" : "");
  kf_cluster_t cl;
  kf_cluster_start(&cl, state, 1);
  kt_unique_name(topic, sizeof(topic), "kmq-accept");
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  kmq_conf_t *c = kmq_conf_new();
  set(c, "bootstrap.servers", cl.bootstrap);
  ck_assert_msg(!kmq_admin_create_topic(c, topic, 4, 1, NULL, 0, 30000,
                                        errstr, sizeof(errstr)) &&
                    !kmq_admin_create_topic(c, dlq, 1, 1, NULL, 0, 30000,
                                            errstr, sizeof(errstr)),
                "%s", errstr);
  set(c, "kmq.topic", topic);
  set(c, "message.timeout.ms", "3000");
  set(c, "reconnect.backoff.max.ms", "500");
  set(c, "linger.ms", "5");
  set(c, "kmq.flush.timeout.ms", "15000");
  set(c, "kmq.queue.full.timeout.ms", "1000");
  set(c, "kmq.fallback.compensator", "on");
  set(c, "kmq.fallback.interval.ms", "200");
  set(c, "kmq.fallback.backoff.ms", "500");
  set(c, "kmq.fallback.backoff.max.ms", "2000");
  set(c, "kmq.fallback.max.retries", "100000");
  kt_fb_conf(c, g_backend, NULL, 0);

  static acc_t a; /* large: static, one test per process */
  memset(&a, 0, sizeof(a));
  a.topic = topic;
  for (int u = 0; u < U; u++)
    atomic_store(&a.fail_mark[u], INT_MAX);
  a.p = kmq_producer_new(c, dr, &a, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(a.p, "%s", errstr);
  ck_assert_ptr_nonnull(kmq_producer_fallback(a.p));
  ck_assert_ptr_nonnull(kmq_producer_compensator(a.p));
  int64_t t0 = kt_now_ms();
  pthread_t th[SENDERS];
  sender_arg_t sa[SENDERS];
  for (int i = 0; i < SENDERS; i++) {
    sa[i] = (sender_arg_t){&a, i};
    pthread_create(&th[i], NULL, sender, &sa[i]);
  }
  ck_assert(kt_wait_until(all_delivered_some, &a, 30000));
  int64_t t_kill, t_failed, t_back;
  if (g_sigstop) {
    pid_t bp = broker_pid(&cl);
    ck_assert_int_eq(kill(bp, SIGSTOP), 0);
    t_kill = kt_now_ms();
    frozen_t fz = {&a, t_kill + 4000};
    bool ok = kt_wait_until(froze_long_enough, &fz, 30000);
    t_failed = kt_now_ms();
    ck_assert_int_eq(kill(bp, SIGCONT), 0);
    ck_assert(ok);
    t_back = kt_now_ms();
    /* The users keep sending until the compensator caught up with them. */
    ck_assert(kt_wait_until(store_drained, &a, 60000));
  } else {
    kf_cluster_kill_node(&cl, 1);
    t_kill = kt_now_ms();
    /* Down for longer than message.timeout.ms: every user's queued messages
     * fail, and the users go to the store. */
    ck_assert(kt_wait_until(all_failed, &a, 30000));
    t_failed = kt_now_ms();
    kf_cluster_start_node(&cl, 1);
    t_back = kt_now_ms();
    /* The users keep sending while the compensator replays, until it caught
     * up and they produce directly again. */
    ck_assert(kt_wait_until(direct_again, &a, 60000));
  }
  atomic_store(&a.stop, 1);
  for (int i = 0; i < SENDERS; i++)
    pthread_join(th[i], NULL);
  int64_t t_stop = kt_now_ms();
  ck_assert(kt_wait_until(store_drained, &a, 60000));
  ck_assert_int_eq(kmq_producer_flush(a.p, 30000), KMQ_OK);
  int64_t t_drained = kt_now_ms();
  kmq_producer_stats_t ps;
  kmq_producer_stats(a.p, &ps);
  kmq_fallback_stats_t fs;
  kmq_fallback_stats(kmq_producer_fallback(a.p), &fs);
  kmq_compensator_stats_t cs;
  kmq_compensator_stats(kmq_producer_compensator(a.p), &cs);
  kmq_producer_destroy(a.p);

  /* Exactly one outcome per send. */
  int sends = 0, by[4] = {0}, dlq_n = 0;
  for (int u = 0; u < U; u++)
    for (int s = 0; s < atomic_load(&a.sent[u]); s++) {
      sends++;
      ck_assert_msg(atomic_load(&a.reports[u][s]) == 1,
                    "user %d seq %d: %d outcomes", u, s,
                    atomic_load(&a.reports[u][s]));
      int st = atomic_load(&a.status[u][s]);
      if (st >= 0)
        by[st]++;
      dlq_n += st == KMQ_DELIVERY_DLQ;
    }
  static check_t chk;
  memset(&chk, 0, sizeof(chk));
  chk.a = &a;
  memset(chk.maxseen, -1, sizeof(chk.maxseen));
  int size = topic_size(cl.bootstrap, topic, 4);
  ck_assert_int_eq(kt_read_topic(cl.bootstrap, topic, size, 60000, on_main,
                                 &chk),
                   size);
  if (dlq_n)
    kt_read_topic(cl.bootstrap, dlq, topic_size(cl.bootstrap, dlq, 1), 30000,
                  on_dlq, &chk);
  int missing = 0;
  for (int u = 0; u < U; u++)
    for (int s = 0; s < atomic_load(&a.sent[u]); s++) {
      int st = atomic_load(&a.status[u][s]);
      if ((st == KMQ_DELIVERY_DELIVERED || st == KMQ_DELIVERY_FALLBACK) &&
          !chk.seen[u][s])
        missing++;
      if (st == KMQ_DELIVERY_DLQ && !chk.dlq_seen[u][s] && !chk.seen[u][s])
        missing++;
    }
  fprintf(stderr,
          "accept[%s%s]: %d sends by %d users in %lld ms (outage: began at "
          "+%lld ms, failure condition met %lld ms later, back %lld ms "
          "after the outage began); "
          "outcomes: delivered %d, store %d, DLQ %d, LOST %d, send errors "
          "%d; store: stored %lld, compensated %lld (%lld rounds), pending "
          "%lld; drained %lld ms after the senders stopped; topic: %d read, "
          "%d missing, %d duplicates; reorderings: %d after a user's first "
          "failure, %d among messages queued in librdkafka at the outage\n",
          kt_fb_name(g_backend), g_sigstop ? ",sigstop" : "", sends, U, (long long)(t_drained - t0),
          (long long)(t_kill - t0), (long long)(t_failed - t_kill),
          (long long)(t_back - t_kill), by[KMQ_DELIVERY_DELIVERED],
          by[KMQ_DELIVERY_FALLBACK], by[KMQ_DELIVERY_DLQ],
          by[KMQ_DELIVERY_LOST], atomic_load(&a.sync_err),
          (long long)fs.stored, (long long)fs.compensated,
          (long long)cs.rounds, (long long)fs.pending,
          (long long)(t_drained - t_stop), chk.total, missing, chk.dups,
          chk.reorder_after_fail, chk.reorder_queue);
  ck_assert_int_eq(by[KMQ_DELIVERY_LOST], 0);
  ck_assert_int_eq(atomic_load(&a.sync_err), 0);
  /* The outage was real. */
  ck_assert_int_gt(by[KMQ_DELIVERY_FALLBACK], g_sigstop ? 0 : U);
  ck_assert_int_eq(missing, 0);
  ck_assert_int_eq(chk.reorder_after_fail, 0);
  ck_assert_int_eq(fs.pending, 0);
  ck_assert_int_eq(ps.lost, 0);
  kmq_conf_destroy(c);
  kf_cluster_stop(&cl);
}
END_TEST

/* ---- the store unavailable too --------------------------------------------- */

typedef struct {
  atomic_int reports[64];
  atomic_int status[64];
  atomic_int err[64];
} down_t;

static void down_dr(const kmq_delivery_t *d, void *opaque) {
  down_t *w = opaque;
  int i = (int)(intptr_t)d->opaque;
  atomic_store(&w->status[i], (int)d->status);
  atomic_store(&w->err[i], (int)d->err);
  atomic_fetch_add(&w->reports[i], 1);
}

typedef struct {
  down_t *w;
  int from, to;
} range_t;

static bool reported(void *opaque) {
  range_t *r = opaque;
  for (int i = r->from; i < r->to; i++)
    if (!atomic_load(&r->w->reports[i]))
      return false;
  return true;
}

/* Runs scripts/mariadb.sh cmd with its own state dir; for start, the URL. */
static void mariadb_sh(const char *cmd, char *url, size_t size) {
  char state[512];
  snprintf(state, sizeof(state), "%s/mariadb-state-down", kf_build_dir());
  kt_fb_mariadb_sh(KMQ_SOURCE_DIR, state, cmd, url, size);
}

static int send_down(kmq_producer_t *p, int i, const char *tag) {
  char key[32], mid[64];
  snprintf(key, sizeof(key), "down-u%d", i % 40);
  snprintf(mid, sizeof(mid), "down-%s-%d", tag, i);
  kmq_produce_msg_t m = {.key = key,
                         .key_len = strlen(key),
                         .value = "v",
                         .value_len = 1,
                         .msg_id = mid,
                         .opaque = (void *)(intptr_t)i};
  return kmq_producer_send(p, &m, NULL);
}

/* Kafka unreachable and then the store stopped: a user already on the store
 * path gets a synchronous KMQ_ERR_FALLBACK, a new user's message ends LOST
 * (reported, counted); every send has exactly one of the two. An unusable
 * SQLite path refuses the producer at creation. */
START_TEST(store_down_nothing_dropped_silently) {
  char url[512], errstr[512], tag[64];
  kt_unique_name(tag, sizeof(tag), "t");
  kmq_conf_t *c = kmq_conf_new();
  set(c, "bootstrap.servers", "127.0.0.1:1"); /* nothing listens */
  set(c, "kmq.topic", "kmq-down");
  set(c, "message.timeout.ms", "1000");
  set(c, "kmq.flush.timeout.ms", "5000");
  set(c, "kmq.fallback.backend", "sqlite");
  set(c, "kmq.fallback.path", "/nonexistent-dir/store.db");
  ck_assert_ptr_null(kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr,
                                      sizeof(errstr)));
  fprintf(stderr, "store-down: unusable SQLite path: %s\n", errstr);

  mariadb_sh("stop", NULL, 0);
  mariadb_sh("start", url, sizeof(url));
  set(c, "kmq.fallback.backend", "mysql");
  set(c, "kmq.fallback.url", url);
  static down_t w;
  memset(&w, 0, sizeof(w));
  kmq_producer_t *p =
      kmq_producer_new(c, down_dr, &w, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  /* Users 0-19: delivery and DLQ fail, the store takes them. */
  for (int i = 0; i < 20; i++)
    ck_assert_int_eq(send_down(p, i, tag), KMQ_OK);
  range_t r1 = {&w, 0, 20};
  ck_assert(kt_wait_until(reported, &r1, 30000));
  for (int i = 0; i < 20; i++)
    ck_assert_int_eq(atomic_load(&w.status[i]), KMQ_DELIVERY_FALLBACK);

  mariadb_sh("stop", NULL, 0);
  /* Users 0-19 are on the store path: refused at once, no report. */
  int sync_err = 0;
  for (int i = 20; i < 40; i++) {
    int err = send_down(p, i - 20 + 40, tag); /* ids 40-59: users 0-19 */
    ck_assert_int_eq(err, KMQ_ERR_FALLBACK);
    sync_err++;
  }
  /* Users 20-39 are new: queued, then LOST with the store's error. */
  for (int i = 20; i < 40; i++)
    ck_assert_int_eq(send_down(p, i, tag), KMQ_OK);
  range_t r2 = {&w, 20, 40};
  ck_assert(kt_wait_until(reported, &r2, 60000));
  for (int i = 20; i < 40; i++) {
    ck_assert_int_eq(atomic_load(&w.status[i]), KMQ_DELIVERY_LOST);
    ck_assert_int_ne(atomic_load(&w.err[i]), KMQ_OK);
  }
  kmq_producer_stats_t ps;
  kmq_producer_stats(p, &ps);
  kmq_producer_destroy(p);
  for (int i = 0; i < 60; i++)
    ck_assert_int_eq(atomic_load(&w.reports[i]), i < 40 ? 1 : 0);
  fprintf(stderr,
          "store-down: 60 sends: %lld stored, %lld LOST (reported), %d "
          "refused synchronously; none without an outcome\n",
          (long long)ps.fallback, (long long)ps.lost, sync_err);
  ck_assert_int_eq(ps.lost, 20);
  ck_assert_int_eq(ps.fallback, 20);
  kmq_conf_destroy(c);
}
END_TEST

int main(int argc, char **argv) {
  g_backend = argc > 1 && !strcmp(argv[1], "mysql") ? KT_FB_MYSQL
                                                    : KT_FB_SQLITE;
  Suite *s = suite_create("fallback_accept");
  TCase *tc = tcase_create("accept");
  /* The private broker alone can take 15-120 s to start on a loaded 2-core
   * machine; the scenario itself runs in ~25 s. */
  tcase_set_timeout(tc, 300);
  g_sigstop = argc > 2 && !strcmp(argv[2], "sigstop");
  if (argc > 2 && !strcmp(argv[2], "store-down"))
    tcase_add_test(tc, store_down_nothing_dropped_silently);
  else
    tcase_add_test(tc, broker_outage_all_stored_and_replayed_in_order);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
