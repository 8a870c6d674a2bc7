/* Issue 10: no commit while the member rejoins the group (lib/committer.h).
 *
 * librdkafka 2.0.2 sends a commit made while its member rejoins; the
 * coordinator queues it behind the JoinGroup and answers it
 * ILLEGAL_GENERATION once the new generation exists, and that answer resets
 * the member's generation, fails its SyncGroup and loses its whole
 * assignment (#4059): the partitions' finished but uncommitted work is done
 * again by their next owner. kmq holds periodic commits while librdkafka's
 * join state is not `steady`.
 *
 * On the real broker, made to last: member A (kmq) and member D (a plain
 * librdkafka consumer) share the partitions; E joins. The cooperative
 * protocol's second round needs D's revoke, which librdkafka serves only
 * when D's application polls, so while D is not polled A waits in its
 * rejoin, with finished work to commit (traffic keeps coming). A must then
 * hold its commits (counted) and send none that fails; once D is polled
 * the round ends, A keeps all its partitions' finished work (no partition
 * lost) and commits again. A's log hook gets none of the debug lines kmq
 * asked librdkafka for on its own. */
#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmq/consumer.h"
#include "brokerutil.h"
#include "testutil.h"

#define NPART 6
#define USERS 60

static char topic[96];

typedef struct {
  kmq_consumer_t *k;
  atomic_int stop, handled, debug_lines, generation_errors, uncommitted;
} member_t;

static void on_log(int level, const char *fac, const char *msg, void *o) {
  member_t *a = o;
  (void)fac;
  if (level >= 7)
    atomic_fetch_add(&a->debug_lines, 1);
  if (strstr(msg, "generation id is not valid"))
    atomic_fetch_add(&a->generation_errors, 1);
}

static kmq_conf_t *conf_for(const char *group) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", kt_bootstrap()},
      {"kmq.topic", topic},
      {"group.id", group ? group : "unused"},
      {"consumer.session.timeout.ms", "10000"},
      {"consumer.heartbeat.interval.ms", "100"},
      {"kmq.commit.interval.ms", "50"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s", errstr);
  return c;
}

/* seq in [from, to) of every user (traffic envelopes), all delivered. */
static void produce(int from, int to) {
  rd_kafka_t *rk = kt_producer_new();
  for (int seq = from; seq < to; seq++)
    for (int u = 0; u < USERS; u++)
      kt_send_env(rk, topic, RD_KAFKA_PARTITION_UA, u, seq);
  kt_producer_done(rk);
}

static kmq_err_t handler(const rd_kafka_message_t *m, void *opaque) {
  (void)m;
  atomic_fetch_add(&((member_t *)opaque)->handled, 1);
  return KMQ_OK;
}

/* Partitions whose finished prefix is not committed (yet). */
static void count_uncommitted(const kmq_partition_info_t *pi, void *o) {
  if (pi->committable > 0 && pi->committed != pi->committable)
    ++*(int *)o;
}

/* A's poll thread; after each poll it counts A's partitions not committed
 * up to their finished prefix (kmq_consumer_partitions is poll-thread
 * only). */
static void *member_loop(void *arg) {
  member_t *a = arg;
  while (!atomic_load(&a->stop)) {
    kmq_consumer_poll_and_dispatch(a->k, handler, a, 20);
    int n = 0;
    kmq_consumer_partitions(a->k, count_uncommitted, &n);
    atomic_store(&a->uncommitted, n);
  }
  return NULL;
}

static void poll_for(rd_kafka_t *rk, int ms) {
  int64_t end = kt_now_ms() + ms;
  while (kt_now_ms() < end) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 20);
    if (m)
      rd_kafka_message_destroy(m);
  }
}

static bool handled_first(void *o) {
  return atomic_load(&((member_t *)o)->handled) >= USERS * 5;
}

static kmq_consumer_stats_t stats(member_t *a) {
  kmq_consumer_stats_t st;
  kmq_consumer_stats(a->k, &st);
  return st;
}

START_TEST(commits_wait_while_the_member_rejoins) {
  char group[96], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-rejoin");
  kt_unique_name(group, sizeof(group), "rejoin");
  kmq_conf_t *c = conf_for(NULL);
  ck_assert_msg(!kmq_admin_create_topic(c, topic, NPART, 1, NULL, 0, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  kmq_conf_destroy(c);
  produce(0, 5);

  static member_t a; /* static: the log hook may outlive this frame */
  memset(&a, 0, sizeof(a));
  c = conf_for(group);
  kmq_conf_set_log_cb(c, on_log, &a);
  a.k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  ck_assert_msg(a.k, "%s", errstr);
  const char *topics[] = {topic};
  ck_assert_int_eq(kmq_consumer_subscribe(a.k, topics, 1), KMQ_OK);
  pthread_t ta;
  pthread_create(&ta, NULL, member_loop, &a);
  ck_assert_msg(kt_wait_until(handled_first, &a, 60000), "A handled %d",
                atomic_load(&a.handled));

  /* D takes some partitions (A's thread serves A's revoke). */
  rd_kafka_t *d = kt_member_join(kt_bootstrap(), group, topic, NULL);
  /* That round over, A commits again: what A holds from here on is E's. */
  kmq_consumer_stats_t settled = stats(&a);
  int64_t deadline = kt_now_ms() + 30000;
  for (int s = 5; stats(&a).commits <= settled.commits; s++) {
    ck_assert_msg(kt_now_ms() < deadline, "A did not commit after D joined");
    produce(s, s + 1); /* seq 5..: re-sent below, harmless for this test */
    poll_for(d, 100);
  }
  /* E joins while nobody polls D: the second round waits for D's revoke,
   * A waits in its rejoin; traffic keeps A's finished work growing. */
  rd_kafka_t *e = kt_member_new(kt_bootstrap(), group, topic, NULL);
  kmq_consumer_stats_t before = stats(&a);
  int64_t t_wait = kt_now_ms();
  for (int s = 5; s < 15; s++) {
    produce(s, s + 1);
    poll_for(e, 200);
  }
  kmq_consumer_stats_t during = stats(&a);
  fprintf(stderr, "[rejoin] %lld ms with D unpolled: A held %lld commit "
          "intervals, sent %lld commits, %lld failed, lost %lld partitions\n",
          (long long)(kt_now_ms() - t_wait),
          (long long)(during.commits_held - before.commits_held),
          (long long)(during.commits - before.commits),
          (long long)(during.commit_errors - before.commit_errors),
          (long long)during.lost);
  ck_assert_msg(during.commits_held > before.commits_held,
                "A never waited in a rejoin: the scenario did not happen");

  /* D revokes, the round ends: A keeps its partitions and commits again. */
  deadline = kt_now_ms() + 30000;
  while (kt_assignment_bits(e) <= 0 && kt_now_ms() < deadline) {
    poll_for(d, 50);
    poll_for(e, 50);
  }
  ck_assert_msg(kt_assignment_bits(e) > 0, "E got no partition");
  /* Every partition A kept ends committed at its finished prefix: what it
   * held while rejoining went out once the member was steady again. */
  int pending = -1;
  deadline = kt_now_ms() + 30000;
  while (kt_now_ms() < deadline) {
    poll_for(d, 20);
    poll_for(e, 20);
    pending = atomic_load(&a.uncommitted);
    if (pending == 0)
      break;
  }
  ck_assert_msg(pending == 0, "%d of A's partitions not committed up to their "
                "finished prefix", pending);
  kmq_consumer_stats_t after = stats(&a);
  ck_assert_int_eq(after.commit_errors, 0);
  ck_assert_int_eq(atomic_load(&a.generation_errors), 0);
  ck_assert_int_eq(after.lost, 0);
  ck_assert_int_eq(atomic_load(&a.debug_lines), 0);

  atomic_store(&a.stop, 1);
  pthread_join(ta, NULL);
  kmq_consumer_close(a.k, 10000);
  kmq_consumer_destroy(a.k);
  kt_member_leave(e);
  kt_member_leave(d);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rejoin");
  TCase *tc = tcase_create("broker");
  tcase_set_timeout(tc, 150);
  tcase_add_test(tc, commits_wait_while_the_member_rejoins);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
