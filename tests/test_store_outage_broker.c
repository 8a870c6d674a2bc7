/* Issue 11, consumer side, with a real store outage: the runtime opens its
 * own MariaDB store (kmq.fallback.backend=mysql) on a private server
 * (scripts/mariadb.sh with its own state dir); the DLQ topic rejects every
 * letter (a name the broker refuses). One user fails every record. The
 * server is stopped (`down`: data kept) before the first letter: the
 * store's write fails (connection refused, after one reconnect), the
 * record's offset stays unfinished, its partition pauses with state dlq,
 * an ERROR line reaches the log hook and the retries are counted, while the
 * other partition is consumed to its end. The server comes back (`up`: same
 * port, same data): the store reconnects by itself, every letter of that
 * user is stored once, the partition resumes and the group commits to the
 * end of both partitions. No test hook: the runtime's own store. */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brokerutil.h"
#include "fbutil.h"
#include "kmq/runtime.h"
#include "testutil.h"
#include "traffic.h"

#define USERS 8
#define PER 5
#define NPART 2

static char poison[64];
static atomic_int errors_logged, processed_others;

static int32_t partition_of(const char *u) {
  return rd_kafka_msg_partitioner_consistent_random(NULL, u, strlen(u), NPART,
                                                    NULL, NULL);
}

static kmq_proc_result_t proc(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                              void *opaque) {
  (void)msg;
  (void)opaque;
  size_t len;
  const char *u = kmq_proc_ctx_user(ctx, &len);
  if (len == strlen(poison) && !memcmp(u, poison, len)) {
    kmq_proc_ctx_set_reason(ctx, "test: this user always fails");
    return KMQ_PROC_FAIL;
  }
  atomic_fetch_add(&processed_others, 1);
  return KMQ_PROC_OK;
}

static void on_log(int level, const char *fac, const char *msg, void *o) {
  (void)o;
  if (level == 3 && !strcmp(fac, "runtime") &&
      strstr(msg, "neither the DLQ nor the fallback store took"))
    atomic_fetch_add(&errors_logged, 1);
}

/* scripts/mariadb.sh cmd on this test's own server; for start, its URL. */
static void mariadb_sh(const char *cmd, char *url, size_t size) {
  kt_fb_mariadb_sh(KMQ_SOURCE_DIR, KMQ_BINARY_DIR "/mariadb-state-outage", cmd,
                   url, size);
}

typedef struct {
  kmq_runtime_t *rt;
  int32_t part; /* the poison user's partition */
} world_t;

static bool paused_and_said_so(void *opaque) {
  world_t *w = opaque;
  ck_assert_int_ge(kmq_runtime_poll(w->rt, 50), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(w->rt, &m);
  kmq_runtime_partition_t p, other;
  /* Committed offsets and watermarks are -1 until known: compare them
   * only once they are. The waiting record's partition is committed right
   * below it (the commits go on while it waits). */
  return m.dlq_retries >= 2 && m.dlq_retrying == 1 &&
         atomic_load(&errors_logged) >= 2 &&
         kt_runtime_partition(w->rt, w->part, &p) && p.paused &&
         p.state == KMQ_STALL_DLQ && p.blocking_offset >= 0 &&
         p.committed == p.blocking_offset &&
         kt_runtime_partition(w->rt, 1 - w->part, &other) && !other.paused &&
         other.high_watermark > 0 &&
         other.committed == other.high_watermark;
}

static bool resumed_to_the_end(void *opaque) {
  world_t *w = opaque;
  ck_assert_int_ge(kmq_runtime_poll(w->rt, 50), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(w->rt, &m);
  kmq_runtime_partition_t p;
  return m.dlq_retrying == 0 && kt_runtime_partition(w->rt, w->part, &p) && !p.paused &&
         p.blocking_offset < 0 && p.high_watermark > 0 &&
         p.committed == p.high_watermark &&
         atomic_load(&processed_others) == (USERS - 1) * PER;
}

START_TEST(store_server_down_pauses_then_up_resumes) {
  char topic[96], group[64], url[512], errstr[512], db[128];
  mariadb_sh("stop", NULL, 0); /* a leftover of an aborted run */
  mariadb_sh("start", url, sizeof(url));
  setenv("KMQ_MARIADB_URL", url, 1); /* kt_fb_conf's server */

  char users[USERS][64];
  int seen[NPART] = {0};
  world_t w = {0};
  for (int i = 0; i < USERS; i++) {
    kmq_traffic_user(i, users[i], sizeof(users[i]));
    /* The second user of a partition: its first record (offset 1) sits
     * behind a finished one. */
    if (++seen[partition_of(users[i])] == 2 && !*poison) {
      snprintf(poison, sizeof(poison), "%s", users[i]);
      w.part = partition_of(users[i]);
    }
  }
  ck_assert(*poison);
  kt_unique_name(topic, sizeof(topic), "kmq-outage");
  kt_unique_name(group, sizeof(group), "outage");
  kt_create_topics(topic, NPART, NULL);
  kt_produce_traffic(topic, USERS, PER);

  kmq_conf_t *c = kt_fb_dlq_down_conf(topic, group, "500");
  kmq_conf_set_log_cb(c, on_log, NULL);
  kt_fb_conf(c, KT_FB_MYSQL, db, sizeof(db));
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, proc, NULL), KMQ_OK);
  /* The runtime opens the store (the server is up: the table is made). */
  w.rt = kmq_runtime_new(c, reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(w.rt, "%s", errstr);

  mariadb_sh("down", NULL, 0);
  ck_assert_msg(kt_wait_until(paused_and_said_so, &w, 40000),
                "never saw partition %d paused and reported with the store "
                "server down",
                w.part);
  kmq_runtime_partition_t p;
  ck_assert(kt_runtime_partition(w.rt, w.part, &p));
  ck_assert_int_eq(p.blocking_offset, 1);
  ck_assert_int_eq(p.committed, 1); /* right below the waiting record */
  ck_assert_str_eq(p.user, poison);

  mariadb_sh("up", NULL, 0);
  ck_assert_msg(kt_wait_until(resumed_to_the_end, &w, 40000),
                "partition %d did not resume to its end after the store "
                "server came back",
                w.part);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(w.rt, &m);
  kmq_runtime_destroy(w.rt);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  char where[128];
  snprintf(where, sizeof(where), "user_id = '%s'", poison);
  ck_assert_int_eq(kt_fb_count(c, KT_FB_MYSQL, where), PER);
  ck_assert_int_eq(kt_fb_count(c, KT_FB_MYSQL, "1 = 1"), PER);
  fprintf(stderr, "store server down: partition %d paused at @1 after %lld "
          "retries (%d ERROR lines); up again: %d letters stored, resumed, "
          "committed to the end\n",
          w.part, (long long)m.dlq_retries, atomic_load(&errors_logged), PER);
  mariadb_sh("stop", NULL, 0);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* Runs in the parent after the test, pass or fail: the private server
 * does not outlive the run. */
static void stop_server(void) {
  if (system("KMQ_MARIADB_STATE='" KMQ_BINARY_DIR "/mariadb-state-outage' "
             "bash '" KMQ_SOURCE_DIR "/scripts/mariadb.sh' stop 2>/dev/null"))
    fprintf(stderr, "store_outage: stopping the private MariaDB failed\n");
}

int main(void) {
  Suite *s = suite_create("store_outage");
  TCase *tc = tcase_create("broker");
  tcase_add_unchecked_fixture(tc, NULL, stop_server);
  tcase_set_timeout(tc, 150);
  tcase_add_test(tc, store_server_down_pauses_then_up_resumes);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
