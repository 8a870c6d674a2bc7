/* Issue 11: a dead letter that neither the DLQ nor the fallback store takes
 * does not stall its partition silently until a restart. On the real
 * broker: the DLQ topic rejects every letter (a name the broker refuses) and
 * the store is "down" (the runtime's fallback hook fails while a flag is
 * set, then writes to a real SQLite store). One user's records all fail
 * their processor. While the store is down: the first of them stays
 * unfinished, its partition is paused, an ERROR line reaches the log hook,
 * the retries are counted, the partition's stall shows state dlq, and the
 * other partitions are consumed to the end. Once the store is back: every
 * record of that user is stored, in offset order, the partition resumes,
 * the rest of it is processed and the group commits to the end. A
 * shutdown while a letter waits leaves it unfinished for the next start;
 * a revoke while it waits (a second member joins) commits right below it
 * and hands it to the new owner, which retries it and, once the store is
 * back, stores it: every letter stored once, in order. */
#include <check.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brokerutil.h"
#include "fbutil.h"
#include "kmq/admin.h"
#include "kmq/fallback.h"
#include "kmq/runtime.h"
#include "testutil.h"
#include "traffic.h"

#define USERS 12
#define PER 5

typedef struct {
  char users[USERS][64];
  /* Users whose every record fails its processor (user 0; and, in the
   * revoke test, one user on the other partition). */
  int poison[USERS];
  /* Offsets processed per user, in processing order. */
  int64_t done[USERS][PER * 2];
  atomic_int ndone[USERS];
  atomic_int processed, down, hook_calls, hook_stored, errors_logged;
  int32_t poison_partition;
  kmq_fallback_t *store; /* the hook's, once up */
  kmq_runtime_t *rt;
} world_t;

/* Where kt_produce_traffic's producer (librdkafka's default partitioner,
 * consistent_random: crc32 of the key) put user u. */
static int32_t partition_of(const char *u, int32_t nparts) {
  return rd_kafka_msg_partitioner_consistent_random(NULL, u, strlen(u),
                                                    nparts, NULL, NULL);
}

static int user_index(world_t *w, const char *u, size_t len) {
  for (int i = 0; i < USERS; i++)
    if (strlen(w->users[i]) == len && !memcmp(w->users[i], u, len))
      return i;
  return -1;
}

static kmq_proc_result_t proc(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                              void *opaque) {
  (void)msg;
  world_t *w = opaque;
  size_t len;
  const char *u = kmq_proc_ctx_user(ctx, &len);
  int i = user_index(w, u, len);
  ck_assert_int_ge(i, 0);
  if (w->poison[i]) {
    kmq_proc_ctx_set_reason(ctx, "test: this user always fails");
    return KMQ_PROC_FAIL;
  }
  int n = atomic_fetch_add(&w->ndone[i], 1);
  ck_assert_int_lt(n, PER * 2);
  w->done[i][n] = kmq_proc_ctx_offset(ctx);
  atomic_fetch_add(&w->processed, 1);
  return KMQ_PROC_OK;
}

/* The runtime's fallback hook: fails while the store is "down". */
static kmq_err_t hook(const kmq_fallback_record_t *rec, void *opaque) {
  world_t *w = opaque;
  atomic_fetch_add(&w->hook_calls, 1);
  if (atomic_load(&w->down))
    return KMQ_ERR_FALLBACK;
  kmq_err_t err = kmq_fallback_hook(rec, w->store);
  if (!err)
    atomic_fetch_add(&w->hook_stored, 1);
  return err;
}

static void on_log(int level, const char *fac, const char *msg, void *o) {
  world_t *w = o;
  if (level == 3 && !strcmp(fac, "runtime") &&
      strstr(msg, "neither the DLQ nor the fallback store took"))
    atomic_fetch_add(&w->errors_logged, 1);
}

static bool partition(world_t *w, int32_t part, kmq_runtime_partition_t *out) {
  return kt_runtime_partition(w->rt, part, out);
}

/* Users whose partition is not the poison one, all processed. */
static bool others_done(world_t *w) {
  for (int i = 1; i < USERS; i++) {
    int32_t p = partition_of(w->users[i], 3);
    if (p != w->poison_partition && atomic_load(&w->ndone[i]) != PER)
      return false;
  }
  return true;
}

static bool stuck_and_said_so(void *opaque) {
  world_t *w = opaque;
  ck_assert_int_ge(kmq_runtime_poll(w->rt, 50), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(w->rt, &m);
  kmq_runtime_partition_t p;
  return m.dlq_retries >= 2 && m.dlq_retrying == 1 &&
         atomic_load(&w->errors_logged) >= 2 && others_done(w) &&
         partition(w, w->poison_partition, &p) && p.paused &&
         p.state == KMQ_STALL_DLQ;
}

static bool recovered(void *opaque) {
  world_t *w = opaque;
  ck_assert_int_ge(kmq_runtime_poll(w->rt, 50), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(w->rt, &m);
  kmq_runtime_partition_t p;
  return atomic_load(&w->hook_stored) == PER &&
         atomic_load(&w->processed) == (USERS - 1) * PER &&
         m.dlq_retrying == 0 && partition(w, w->poison_partition, &p) &&
         !p.paused && p.blocking_offset < 0;
}

static kmq_conf_t *make_conf(world_t *w, const char *topic,
                             const char *group) {
  char errstr[512], where[512];
  kmq_conf_t *c = kt_fb_dlq_down_conf(topic, group, "400");
  kmq_conf_set_log_cb(c, on_log, w);
  kt_fb_conf(c, KT_FB_SQLITE, where, sizeof(where));
  w->store = kmq_fallback_new(c, errstr, sizeof(errstr));
  ck_assert_msg(w->store, "%s", errstr);
  return c;
}

static void world_init(world_t *w, char *topic, size_t tsize, char *group,
                       size_t gsize) {
  memset(w, 0, sizeof(*w));
  for (int i = 0; i < USERS; i++)
    kmq_traffic_user(i, w->users[i], sizeof(w->users[i]));
  w->poison[0] = 1;
  w->poison_partition = partition_of(w->users[0], 3);
  atomic_store(&w->down, 1);
  kt_unique_name(topic, tsize, "kmq-dlqretry");
  kt_unique_name(group, gsize, "dlqretry");
  kt_create_topics(topic, 3, NULL);
  kt_produce_traffic(topic, USERS, PER);
}

static kmq_runtime_t *runtime(world_t *w, kmq_conf_t *c,
                              kmq_proc_registry_t **reg) {
  char errstr[512];
  *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(*reg, proc, w), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, *reg, hook, w, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  return rt;
}

/* After a restart: the poison user's letters all stored, the rest of its
 * partition finished (the other partitions were committed by the first
 * run, so nothing of them comes back). */
static bool recovered_after_restart(void *opaque) {
  world_t *w = opaque;
  ck_assert_int_ge(kmq_runtime_poll(w->rt, 50), 0);
  kmq_runtime_partition_t p;
  return atomic_load(&w->hook_stored) == PER &&
         partition(w, w->poison_partition, &p) && !p.paused &&
         p.blocking_offset < 0 && p.committed >= 0 &&
         p.high_watermark >= 0 && p.committed == p.high_watermark;
}

START_TEST(dlq_and_store_down_pause_then_resume) {
  char topic[96], group[64], errstr[512];
  static world_t w;
  world_init(&w, topic, sizeof(topic), group, sizeof(group));
  kmq_conf_t *c = make_conf(&w, topic, group);
  kmq_proc_registry_t *reg;
  w.rt = runtime(&w, c, &reg);

  ck_assert_msg(kt_wait_until(stuck_and_said_so, &w, 30000),
                "never saw the stuck partition paused and reported");
  /* Nothing of the poison user got past its first record. */
  ck_assert_int_eq(atomic_load(&w.hook_stored), 0);
  kmq_runtime_partition_t p;
  ck_assert(partition(&w, w.poison_partition, &p));
  ck_assert_int_ge(p.blocking_offset, 0);
  ck_assert_str_eq(p.user, w.users[0]);
  /* The other partitions are not paused. */
  kmq_runtime_partition_t ps[16];
  size_t n = kmq_runtime_partitions(w.rt, ps, 16);
  for (size_t i = 0; i < n; i++)
    if (ps[i].partition != w.poison_partition)
      ck_assert_int_eq(ps[i].paused, 0);

  atomic_store(&w.down, 0); /* the store is back */
  ck_assert_msg(kt_wait_until(recovered, &w, 30000),
                "stored %d of %d, processed %d of %d",
                atomic_load(&w.hook_stored), PER, atomic_load(&w.processed),
                (USERS - 1) * PER);
  kmq_runtime_destroy(w.rt);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);

  /* Per-user order: each user's offsets increase, none twice. */
  for (int i = 1; i < USERS; i++)
    for (int k = 1; k < atomic_load(&w.ndone[i]); k++)
      ck_assert_int_lt(w.done[i][k - 1], w.done[i][k]);
  /* The poison user's letters, one per record, in offset order (the store
   * hands out a user's rows in created order, one head at a time). */
  int64_t last = -1;
  for (int k = 0; k < PER; k++) {
    kmq_fallback_entry_t *e;
    size_t ne;
    ck_assert(!kmq_fallback_claim(w.store, 1, 60000, &e, &ne, errstr,
                                  sizeof(errstr)));
    ck_assert_int_eq(ne, 1);
    json_t *j = json_loadb(e[0].value, e[0].value_len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    int64_t off = json_integer_value(json_object_get(j, "original_offset"));
    ck_assert_int_gt(off, last);
    last = off;
    json_decref(j);
    ck_assert(!kmq_fallback_done(w.store, e[0].id, errstr, sizeof(errstr)));
    kmq_fallback_entries_free(e, ne);
  }
  fprintf(stderr, "store down: partition %d paused with its record "
          "unfinished and retried; store back: %d letters stored in order, "
          "partition resumed, committed to the end\n",
          w.poison_partition, PER);
  kmq_fallback_destroy(w.store);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* Shutdown while a dead letter waits for its retry: destroy is not held up
 * by it (the retry timer is cancelled), the record's offset stays
 * unfinished (the commit stops right below it), and the next run, with the
 * store back, takes it from there to the end. */
START_TEST(shutdown_while_retrying_leaves_it_for_the_next_start) {
  char topic[96], group[64];
  static world_t w;
  world_init(&w, topic, sizeof(topic), group, sizeof(group));
  kmq_conf_t *c = make_conf(&w, topic, group);
  kmq_proc_registry_t *reg;
  w.rt = runtime(&w, c, &reg);
  ck_assert_msg(kt_wait_until(stuck_and_said_so, &w, 30000),
                "never saw the stuck partition paused and reported");
  kmq_runtime_partition_t p;
  ck_assert(partition(&w, w.poison_partition, &p));
  int64_t stuck = p.blocking_offset;
  ck_assert_int_ge(stuck, 0);
  int64_t t0 = kt_now_ms();
  kmq_runtime_destroy(w.rt);
  ck_assert_int_lt(kt_now_ms() - t0, 10000); /* kmq.close.timeout.ms */
  kmq_proc_registry_destroy(reg);
  ck_assert_int_eq(atomic_load(&w.hook_stored), 0);

  atomic_store(&w.down, 0); /* the store is back; a new start */
  atomic_store(&w.processed, 0);
  for (int i = 0; i < USERS; i++)
    atomic_store(&w.ndone[i], 0);
  w.rt = runtime(&w, c, &reg);
  ck_assert_msg(kt_wait_until(recovered_after_restart, &w, 30000),
                "stored %d of %d after the restart",
                atomic_load(&w.hook_stored), PER);
  kmq_runtime_destroy(w.rt);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  fprintf(stderr, "shutdown while retrying @%lld: left unfinished, the "
          "next start stored all %d and committed to the end\n",
          (long long)stuck, PER);
  kmq_fallback_destroy(w.store);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- a revoke while dead letters wait for their retry ------------------ */

/* Two partitions, one poison user on each, a first member A alone: both
 * partitions paused on a dead letter that neither the DLQ nor the store
 * takes. Then B joins: the cooperative-sticky assignor moves one partition
 * to B, whichever it picks, and that partition is revoked from A while its
 * dead letter waits for the retry. */
typedef struct {
  world_t *w;
  kmq_runtime_t *a, *b;
  int32_t moved; /* the partition A lost to B, -1 until seen */
} pair_t;

static void poll_both(pair_t *pr) {
  ck_assert_int_ge(kmq_runtime_poll(pr->a, 20), 0);
  if (pr->b)
    ck_assert_int_ge(kmq_runtime_poll(pr->b, 20), 0);
}

static bool both_stuck_on_a(void *opaque) {
  pair_t *pr = opaque;
  poll_both(pr);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(pr->a, &m);
  kmq_runtime_partition_t p0, p1;
  return m.dlq_retrying == 2 && kt_runtime_partition(pr->a, 0, &p0) && p0.paused &&
         p0.state == KMQ_STALL_DLQ && kt_runtime_partition(pr->a, 1, &p1) &&
         p1.paused && p1.state == KMQ_STALL_DLQ;
}

/* B owns one partition, paused on the same dead letter (it retries it now,
 * the store still down), A only the other one, still retrying it. */
static bool moved_and_retried_by_b(void *opaque) {
  pair_t *pr = opaque;
  poll_both(pr);
  kmq_runtime_partition_t ps[16], pa;
  size_t n = kmq_runtime_partitions(pr->b, ps, 16);
  if (n != 1 || !ps[0].paused || ps[0].state != KMQ_STALL_DLQ)
    return false;
  pr->moved = ps[0].partition;
  kmq_runtime_metrics_t ma, mb;
  kmq_runtime_metrics(pr->a, &ma);
  kmq_runtime_metrics(pr->b, &mb);
  return kmq_runtime_partitions(pr->a, &pa, 1) == 1 &&
         pa.partition == 1 - pr->moved && pa.paused &&
         ma.dlq_retrying == 1 && mb.dlq_retrying == 1;
}

static bool both_recovered(void *opaque) {
  pair_t *pr = opaque;
  poll_both(pr);
  kmq_runtime_metrics_t ma, mb;
  kmq_runtime_metrics(pr->a, &ma);
  kmq_runtime_metrics(pr->b, &mb);
  kmq_runtime_partition_t pa, pb;
  return atomic_load(&pr->w->hook_stored) >= 2 * PER &&
         ma.dlq_retrying == 0 && mb.dlq_retrying == 0 &&
         kt_runtime_partition(pr->a, 1 - pr->moved, &pa) && !pa.paused &&
         pa.high_watermark > 0 && pa.committed == pa.high_watermark &&
         kt_runtime_partition(pr->b, pr->moved, &pb) && !pb.paused &&
         pb.high_watermark > 0 && pb.committed == pb.high_watermark;
}

START_TEST(revoke_while_retrying_hands_it_to_the_next_owner) {
  char topic[96], group[64], errstr[512];
  static world_t w;
  memset(&w, 0, sizeof(w));
  for (int i = 0; i < USERS; i++)
    kmq_traffic_user(i, w.users[i], sizeof(w.users[i]));
  /* The second user of each partition fails always: its first record sits
   * at offset 1 (traffic is seq-major), behind a finished one, so that a
   * commit right below it is 1, not a default 0. */
  int seen[2] = {0, 0};
  for (int i = 0; i < USERS; i++)
    if (++seen[partition_of(w.users[i], 2)] == 2)
      w.poison[i] = 1;
  ck_assert_msg(seen[0] >= 2 && seen[1] >= 2, "users: %d and %d", seen[0],
                seen[1]);
  atomic_store(&w.down, 1);
  kt_unique_name(topic, sizeof(topic), "kmq-dlqrevoke");
  kt_unique_name(group, sizeof(group), "dlqrevoke");
  kt_create_topics(topic, 2, NULL);
  kt_produce_traffic(topic, USERS, PER);
  kmq_conf_t *c = make_conf(&w, topic, group);
  kmq_proc_registry_t *reg;
  pair_t pr = {.w = &w, .moved = -1};
  pr.a = w.rt = runtime(&w, c, &reg);
  ck_assert_msg(kt_wait_until(both_stuck_on_a, &pr, 30000),
                "A never had both partitions paused on a dead letter");
  kmq_runtime_partition_t before[2];
  ck_assert(kt_runtime_partition(pr.a, 0, &before[0]));
  ck_assert(kt_runtime_partition(pr.a, 1, &before[1]));
  ck_assert_int_eq(before[0].blocking_offset, 1);
  ck_assert_int_eq(before[1].blocking_offset, 1);

  kmq_proc_registry_t *reg_b;
  pr.b = runtime(&w, c, &reg_b);
  ck_assert_msg(kt_wait_until(moved_and_retried_by_b, &pr, 45000),
                "no partition moved to B and was retried there");
  /* A released it with its commit right below the waiting record: the
   * group's committed offset is exactly A's blocking offset. */
  kmq_partition_lag_t lag[2];
  int nl = 2;
  ck_assert_msg(!kmq_admin_group_lag(c, group, topic, lag, &nl, 10000, errstr,
                                     sizeof(errstr)),
                "%s", errstr);
  int found = 0;
  for (int i = 0; i < nl; i++)
    if (lag[i].partition == pr.moved) {
      ck_assert_int_eq(lag[i].committed, before[pr.moved].blocking_offset);
      found = 1;
    }
  ck_assert(found);
  kmq_runtime_partition_t pb;
  ck_assert(kt_runtime_partition(pr.b, pr.moved, &pb));
  ck_assert_int_eq(pb.blocking_offset, before[pr.moved].blocking_offset);
  ck_assert_int_eq(atomic_load(&w.hook_stored), 0);

  atomic_store(&w.down, 0); /* the store is back */
  ck_assert_msg(kt_wait_until(both_recovered, &pr, 30000),
                "stored %d of %d", atomic_load(&w.hook_stored), 2 * PER);
  kmq_runtime_destroy(pr.b);
  kmq_runtime_destroy(pr.a);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  /* Every poison record stored exactly once (a second write of a message
   * id would be a no-op, so count rows, not hook calls), in offset order
   * per user. */
  int64_t last[USERS];
  int rows = 0;
  for (int i = 0; i < USERS; i++)
    last[i] = -1;
  for (;;) {
    kmq_fallback_entry_t *e;
    size_t ne;
    ck_assert(!kmq_fallback_claim(w.store, 1, 60000, &e, &ne, errstr,
                                  sizeof(errstr)));
    if (!ne)
      break;
    int u = user_index(&w, (const char *)e[0].key, e[0].key_len);
    ck_assert_int_ge(u, 0);
    ck_assert(w.poison[u]);
    json_t *j = json_loadb(e[0].value, e[0].value_len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    int64_t off = json_integer_value(json_object_get(j, "original_offset"));
    ck_assert_int_gt(off, last[u]);
    last[u] = off;
    json_decref(j);
    rows++;
    ck_assert(!kmq_fallback_done(w.store, e[0].id, errstr, sizeof(errstr)));
    kmq_fallback_entries_free(e, ne);
  }
  ck_assert_int_eq(rows, 2 * PER);
  fprintf(stderr, "revoke while retrying: partition %d moved to B with its "
          "dead letter waiting at @%lld; A committed right below it, B "
          "retried it; store back: %d letters stored once each, in order\n",
          pr.moved, (long long)before[pr.moved].blocking_offset, rows);
  kmq_fallback_destroy(w.store);
  kmq_proc_registry_destroy(reg_b);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("dlq_retry");
  TCase *tc = tcase_create("broker");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, dlq_and_store_down_pause_then_resume);
  tcase_add_test(tc, shutdown_while_retrying_leaves_it_for_the_next_start);
  tcase_add_test(tc, revoke_while_retrying_hands_it_to_the_next_owner);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
