/* Consumer on a real Kafka broker: completions in random order from several
 * threads still commit exactly the end offsets; a restart sees nothing old;
 * a second member joining mid-stream loses nothing; backpressure pauses and
 * resumes without re-fetching, with either fetch queue (kmq.fetch.queue);
 * the shared fetch queue bounds the prefetch of all partitions together,
 * the per-partition one each partition's; close right after start and
 * close during a rebalance (librdkafka #4381, #4528) return. */
#include <check.h>
#include <ck_ring.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmq/consumer.h"
#include "kmq/producer.h"
#include "lib/rdstats.h"
#include "testutil.h"

#define USERS 1000
#define PER_USER 100
#define TOTAL (USERS * PER_USER)
#define NPART 6

static char topic[96];

static kmq_conf_t *conf_for(const char *group) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr)),
                   KMQ_OK);
  if (group)
    ck_assert_int_eq(
        kmq_conf_set(c, "group.id", group, errstr, sizeof(errstr)), KMQ_OK);
  /* Faster group formation for tests; semantics unchanged. */
  kmq_conf_set(c, "consumer.session.timeout.ms", "10000", errstr,
               sizeof(errstr));
  kmq_conf_set(c, "consumer.heartbeat.interval.ms", "500", errstr,
               sizeof(errstr));
  kmq_conf_set(c, "kmq.commit.interval.ms", "200", errstr, sizeof(errstr));
  return c;
}

static void new_topic(int nparts) {
  char errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-consumer");
  kmq_conf_t *c = conf_for(NULL);
  ck_assert_msg(kmq_admin_create_topic(c, topic, nparts, 1, NULL, 0, 30000,
                                       errstr, sizeof(errstr)) == KMQ_OK,
                "%s", errstr);
  kmq_conf_destroy(c);
}

/* Produces seq in [from, to) for each user: "u<user>:<seq>", key "wm<user>". */
static void produce_range(int users, int from, int to) {
  char errstr[512];
  kmq_conf_t *c = conf_for(NULL);
  kmq_producer_t *p =
      kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  for (int s = from; s < to; s++)
    for (int u = 0; u < users; u++) {
      char key[32], val[32];
      snprintf(key, sizeof(key), "wm%05d", u);
      snprintf(val, sizeof(val), "u%d:%d", u, s);
      kmq_produce_msg_t m = {.key = key, .key_len = strlen(key), .value = val,
                             .value_len = strlen(val), .msg_type = "text"};
      ck_assert_int_eq(kmq_producer_send(p, &m, NULL), KMQ_OK);
    }
  ck_assert_int_eq(kmq_producer_flush(p, 60000), KMQ_OK);
  kmq_producer_stats_t st;
  kmq_producer_stats(p, &st);
  ck_assert_int_eq(st.delivered, (int64_t)users * (to - from));
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
}

static void produce(int users, int per_user) { produce_range(users, 0, per_user); }

static int parse(const rd_kafka_message_t *m, int *u, int *s) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.*s", (int)m->len, (const char *)m->payload);
  return sscanf(buf, "u%d:%d", u, s) == 2 ? 0 : -1;
}


/* ---- 1000 users x 100, acks in random order from worker threads ---- */

#define WORKERS 4
#define QCAP 16384

typedef struct {
  pthread_mutex_t mu;
  kmq_ack_t *q;
  int n, cap;
  atomic_int stop;
  atomic_int seen[TOTAL];
  atomic_int acked;
} work_t;

static work_t *W;

static kmq_err_t ack_handler(const rd_kafka_message_t *m, kmq_ack_t ack,
                             void *opaque) {
  work_t *w = opaque;
  int u, s;
  ck_assert_int_eq(parse(m, &u, &s), 0);
  atomic_fetch_add(&w->seen[u * PER_USER + s], 1);
  pthread_mutex_lock(&w->mu);
  if (w->n == w->cap) {
    pthread_mutex_unlock(&w->mu);
    return KMQ_ERR_BACKPRESSURE; /* the test's own queue is full */
  }
  w->q[w->n++] = ack;
  pthread_mutex_unlock(&w->mu);
  return KMQ_OK;
}

static void *ack_worker(void *arg) {
  work_t *w = arg;
  unsigned seed = (unsigned)(uintptr_t)&seed;
  while (!atomic_load(&w->stop)) {
    pthread_mutex_lock(&w->mu);
    if (!w->n) {
      pthread_mutex_unlock(&w->mu);
      sched_yield();
      continue;
    }
    /* A random queued ack: completions in random order. */
    int i = (int)(rand_r(&seed) % (unsigned)w->n);
    kmq_ack_t a = w->q[i];
    w->q[i] = w->q[--w->n];
    pthread_mutex_unlock(&w->mu);
    kmq_ack(a, 1);
    if (rand_r(&seed) % 8 == 0)
      kmq_ack(a, 0); /* a second call is ignored */
    atomic_fetch_add(&w->acked, 1);
  }
  return NULL;
}

typedef struct {
  int markers, old;
} marker_count_t;

/* Counts what a restarted consumer is given: only the markers, if every
 * earlier record was committed. */
static kmq_err_t count_markers(const rd_kafka_message_t *m, void *opaque) {
  marker_count_t *mc = opaque;
  if (m->len == 6 && !memcmp(m->payload, "marker", 6))
    mc->markers++;
  else
    mc->old++;
  return KMQ_OK;
}

START_TEST(thousand_users_random_completion_commits_end) {
  new_topic(NPART);
  produce(USERS, PER_USER);
  char group[96], errstr[512];
  kt_unique_name(group, sizeof(group), "g");
  W = calloc(1, sizeof(*W));
  pthread_mutex_init(&W->mu, NULL);
  W->cap = 4096;
  W->q = calloc((size_t)W->cap, sizeof(kmq_ack_t));
  pthread_t th[WORKERS];
  for (int i = 0; i < WORKERS; i++)
    pthread_create(&th[i], NULL, ack_worker, W);

  kmq_conf_t *c = conf_for(group);
  kmq_conf_set(c, "kmq.max.inflight", "2000", errstr, sizeof(errstr));
  kmq_consumer_t *k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  ck_assert_msg(k, "%s", errstr);
  const char *topics[] = {topic};
  ck_assert_int_eq(kmq_consumer_subscribe(k, topics, 1), KMQ_OK);
  int64_t deadline = kt_now_ms() + 120000;
  kmq_consumer_stats_t st;
  do {
    ck_assert_int_ge(
        kmq_consumer_poll_and_dispatch_with_ack(k, ack_handler, W, 100), 0);
    kmq_consumer_stats(k, &st);
  } while (st.finished < TOTAL && kt_now_ms() < deadline);
  ck_assert_int_eq(st.finished, TOTAL);
  ck_assert_int_eq(kmq_consumer_close(k, 10000), KMQ_OK);
  kmq_consumer_stats(k, &st);
  ck_assert_int_eq(st.in_flight, 0);
  kmq_consumer_destroy(k);
  atomic_store(&W->stop, 1);
  for (int i = 0; i < WORKERS; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < TOTAL; i++)
    ck_assert_msg(atomic_load(&W->seen[i]) == 1, "message %d seen %d times", i,
                  atomic_load(&W->seen[i]));
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);

  /* Restart: one new marker per partition must be the only thing seen. */
  char bs_err[512];
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  rd_kafka_conf_set(pc, "bootstrap.servers", kt_bootstrap(), bs_err,
                    sizeof(bs_err));
  rd_kafka_t *prk = rd_kafka_new(RD_KAFKA_PRODUCER, pc, bs_err, sizeof(bs_err));
  for (int p = 0; p < NPART; p++)
    ck_assert_int_eq(rd_kafka_producev(prk, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_PARTITION(p),
                                       RD_KAFKA_V_VALUE("marker", 6),
                                       RD_KAFKA_V_END),
                     0);
  ck_assert_int_eq(rd_kafka_flush(prk, 10000), 0);
  rd_kafka_destroy(prk);

  k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  ck_assert_msg(k, "%s", errstr);
  ck_assert_int_eq(kmq_consumer_subscribe(k, topics, 1), KMQ_OK);
  marker_count_t mc = {0, 0};
  deadline = kt_now_ms() + 60000;
  while (mc.markers < NPART && kt_now_ms() < deadline)
    ck_assert_int_ge(kmq_consumer_poll_and_dispatch(k, count_markers, &mc, 100),
                     0);
  int markers = mc.markers, old = mc.old;
  ck_assert_int_eq(markers, NPART);
  ck_assert_int_eq(old, 0);
  kmq_consumer_destroy(k);
  kmq_conf_destroy(c);
  free(W->q);
  free(W);
}
END_TEST

/* ---- a second member joins mid-stream ---- */

typedef struct {
  kmq_consumer_t *k;
  atomic_int *seen;
  atomic_int *stop;
  atomic_int handled;
} member_t;

static kmq_err_t sync_handler(const rd_kafka_message_t *m, void *opaque) {
  member_t *mb = opaque;
  int u, s;
  ck_assert_int_eq(parse(m, &u, &s), 0);
  atomic_fetch_add(&mb->seen[u * PER_USER + s], 1);
  atomic_fetch_add(&mb->handled, 1);
  return KMQ_OK;
}

static void *member_loop(void *arg) {
  member_t *mb = arg;
  while (!atomic_load(mb->stop))
    kmq_consumer_poll_and_dispatch(mb->k, sync_handler, mb, 50);
  kmq_consumer_close(mb->k, 10000);
  return NULL;
}

static int total_seen(atomic_int *seen, int n) {
  int t = 0;
  for (int i = 0; i < n; i++)
    t += atomic_load(&seen[i]) > 0;
  return t;
}

START_TEST(second_member_joins_midstream) {
  const int users = 200, per = 100, total = users * per;
  new_topic(NPART);
  produce(users, per / 2); /* first half; the second after B joined */
  char group[96], errstr[512];
  kt_unique_name(group, sizeof(group), "g2");
  atomic_int *seen = calloc((size_t)total, sizeof(atomic_int));
  atomic_int stop = 0;
  kmq_conf_t *c = conf_for(group);
  kmq_conf_set(c, "kmq.poll.batch", "50", errstr, sizeof(errstr));
  member_t a = {kmq_consumer_new(c, NULL, errstr, sizeof(errstr)), seen, &stop,
                0};
  ck_assert_msg(a.k, "%s", errstr);
  const char *topics[] = {topic};
  ck_assert_int_eq(kmq_consumer_subscribe(a.k, topics, 1), KMQ_OK);
  pthread_t ta, tb;
  pthread_create(&ta, NULL, member_loop, &a);
  int64_t deadline = kt_now_ms() + 60000;
  while (atomic_load(&a.handled) < total / 4 && kt_now_ms() < deadline)
    sched_yield();
  ck_assert_int_ge(atomic_load(&a.handled), total / 4);
  member_t b = {kmq_consumer_new(c, NULL, errstr, sizeof(errstr)), seen, &stop,
                0};
  ck_assert_msg(b.k, "%s", errstr);
  ck_assert_int_eq(kmq_consumer_subscribe(b.k, topics, 1), KMQ_OK);
  pthread_create(&tb, NULL, member_loop, &b);
  /* B's stats are its poll thread's; the assignment shows in its counter. */
  kmq_consumer_stats_t sb;
  deadline = kt_now_ms() + 60000;
  do {
    kmq_consumer_stats(b.k, &sb);
    sched_yield();
  } while (sb.assigned == 0 && kt_now_ms() < deadline);
  ck_assert_int_gt(sb.assigned, 0);
  produce_range(users, per / 2, per); /* second half, while both run */
  deadline = kt_now_ms() + 90000;
  while (total_seen(seen, total) < total && kt_now_ms() < deadline)
    sched_yield();
  atomic_store(&stop, 1);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  ck_assert_int_eq(total_seen(seen, total), total);
  int dups = 0;
  for (int i = 0; i < total; i++)
    dups += atomic_load(&seen[i]) - 1;
  /* Revoke waits for handled messages and commits them before unassign, so
   * a redelivery can only come from the unfinished window (none here: the
   * handler finishes synchronously). */
  ck_assert_msg(dups == 0, "%d duplicates", dups);
  ck_assert_int_gt(atomic_load(&b.handled), 0); /* B really took partitions */
  kmq_consumer_destroy(a.k);
  kmq_consumer_destroy(b.k);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_conf_destroy(c);
  free(seen);
}
END_TEST

/* ---- backpressure: pause, hold, resume, no re-fetch, order kept ---- */

typedef struct {
  int64_t next[NPART]; /* expected next offset per partition */
  int calls;
  int refusals;
  int handled;
} bp_t;

static kmq_err_t bp_handler(const rd_kafka_message_t *m, void *opaque) {
  bp_t *b = opaque;
  b->calls++;
  if (b->calls % 7 == 0) { /* refuse every 7th offer */
    b->refusals++;
    return KMQ_ERR_BACKPRESSURE;
  }
  /* Exactly the next offset of its partition: nothing skipped, nothing
   * re-fetched after resume (librdkafka #4636). */
  ck_assert_int_eq(m->offset, b->next[m->partition]);
  b->next[m->partition]++;
  b->handled++;
  return KMQ_OK;
}

static void dump_part(const kmq_partition_info_t *i, void *opaque) {
  (void)opaque;
  fprintf(stderr, "partition %d: committable %lld committed %lld backlog %lld "
          "in_flight %lld paused %d\n", i->partition,
          (long long)i->committable, (long long)i->committed,
          (long long)i->backlog, (long long)i->in_flight, i->paused);
}

static const char *const fetch_queues[] = {"shared", "partition"};

/* _i: the kmq.fetch.queue of fetch_queues[] */
START_TEST(backpressure_pauses_and_resumes_in_order) {
  const int users = 100, per = 50;
  new_topic(NPART);
  produce(users, per);
  char group[96], errstr[512];
  kt_unique_name(group, sizeof(group), "g3");
  kmq_conf_t *c = conf_for(group);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.fetch.queue", fetch_queues[_i],
                                errstr, sizeof(errstr)),
                   KMQ_OK);
  if (getenv("KT_DEBUG"))
    kmq_conf_set(c, "consumer.debug", getenv("KT_DEBUG"), errstr,
                 sizeof(errstr));
  kmq_consumer_t *k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  ck_assert_msg(k, "%s", errstr);
  const char *topics[] = {topic};
  ck_assert_int_eq(kmq_consumer_subscribe(k, topics, 1), KMQ_OK);
  bp_t b = {0};
  int64_t deadline = kt_now_ms() + 60000;
  int max_paused = 0;
  while (b.handled < users * per && kt_now_ms() < deadline) {
    kmq_consumer_poll_and_dispatch(k, bp_handler, &b, 50);
    kmq_consumer_stats_t st;
    kmq_consumer_stats(k, &st);
    if (st.paused > max_paused)
      max_paused = (int)st.paused;
  }
  kmq_consumer_stats_t rs;
  kmq_consumer_stats(k, &rs);
  fprintf(stderr, "backpressure: %d refusals, %lld re-fetched dropped\n",
          b.refusals, (long long)rs.refetched);
  if (b.handled != users * per) {
    kmq_consumer_partitions(k, dump_part, NULL);
    for (int p = 0; p < NPART; p++)
      fprintf(stderr, "next[%d]=%lld\n", p, (long long)b.next[p]);
  }
  ck_assert_int_eq(b.handled, users * per);
  ck_assert_int_gt(b.refusals, 0);

  ck_assert_int_gt(max_paused, 0);
  ck_assert_int_eq(kmq_consumer_close(k, 10000), KMQ_OK);
  kmq_consumer_stats_t st;
  kmq_consumer_stats(k, &st);
  ck_assert_int_eq(st.paused, 0);
  kmq_consumer_destroy(k);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- ack(0) leaves the offset unfinished: redelivered after restart ---- */

static kmq_err_t nack_some(const rd_kafka_message_t *m, kmq_ack_t ack,
                           void *opaque) {
  int *nacked = opaque;
  int u, s;
  if (parse(m, &u, &s) == 0 && u == 0 && s == 3) {
    kmq_ack(ack, 0);
    (*nacked)++;
  } else {
    kmq_ack(ack, 1);
  }
  return KMQ_OK;
}

static kmq_err_t find_u0s3(const rd_kafka_message_t *m, void *opaque) {
  int *first = opaque;
  int u, s;
  if (*first < 0 && parse(m, &u, &s) == 0)
    *first = u == 0 ? s : -2;
  return KMQ_OK;
}

START_TEST(nack_is_redelivered_after_restart) {
  new_topic(1);
  produce(1, 10);
  char group[96], errstr[512];
  kt_unique_name(group, sizeof(group), "g4");
  kmq_conf_t *c = conf_for(group);
  kmq_consumer_t *k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  ck_assert_msg(k, "%s", errstr);
  const char *topics[] = {topic};
  kmq_consumer_subscribe(k, topics, 1);
  int nacked = 0;
  kmq_consumer_stats_t st = {0};
  int64_t deadline = kt_now_ms() + 30000;
  while (st.finished + st.unfinished < 10 && kt_now_ms() < deadline) {
    kmq_consumer_poll_and_dispatch_with_ack(k, nack_some, &nacked, 100);
    kmq_consumer_stats(k, &st);
  }
  ck_assert_int_eq(nacked, 1);
  ck_assert_int_eq(st.unfinished, 1);
  kmq_consumer_destroy(k);
  /* The group's position stayed at seq 3: a new member starts there. */
  k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  kmq_consumer_subscribe(k, topics, 1);
  int first = -1;
  deadline = kt_now_ms() + 30000;
  while (first == -1 && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch(k, find_u0s3, &first, 100);
  ck_assert_int_eq(first, 3);
  kmq_consumer_destroy(k);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- librdkafka close bugs our design could hit ---- */

static kmq_err_t noop_handler(const rd_kafka_message_t *m, void *opaque) {
  (void)m;
  (void)opaque;
  return KMQ_OK;
}


START_TEST(close_right_after_start) { /* #4381 */
  new_topic(2);
  char group[96], errstr[512];
  kt_unique_name(group, sizeof(group), "g5");
  kmq_conf_t *c = conf_for(group);
  for (int i = 0; i < 3; i++) {
    kmq_consumer_t *k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
    ck_assert_msg(k, "%s", errstr);
    const char *topics[] = {topic};
    kmq_consumer_subscribe(k, topics, 1);
    if (i == 1)
      kmq_consumer_poll_and_dispatch(k, noop_handler, NULL, 0);
    int64_t t0 = kt_now_ms();
    ck_assert_int_eq(kmq_consumer_close(k, 5000), KMQ_OK);
    ck_assert_int_lt(kt_now_ms() - t0, 15000);
    kmq_consumer_destroy(k);
  }
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(close_during_rebalance) { /* #4528 */
  new_topic(NPART);
  produce(50, 10);
  char group[96], errstr[512];
  kt_unique_name(group, sizeof(group), "g6");
  kmq_conf_t *c = conf_for(group);
  const char *topics[] = {topic};
  kmq_consumer_t *a = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  kmq_consumer_subscribe(a, topics, 1);
  kmq_consumer_stats_t st = {0};
  int64_t deadline = kt_now_ms() + 30000;
  while (st.assigned == 0 && kt_now_ms() < deadline) {
    kmq_consumer_poll_and_dispatch(a, noop_handler, NULL, 100);
    kmq_consumer_stats(a, &st);
  }
  ck_assert_int_gt(st.assigned, 0);
  /* B joins: the group rebalances; A closes in the middle of it. */
  kmq_consumer_t *b = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  kmq_consumer_subscribe(b, topics, 1);
  kmq_consumer_poll_and_dispatch(b, noop_handler, NULL, 200);
  kmq_consumer_poll_and_dispatch(a, noop_handler, NULL, 200);
  int64_t t0 = kt_now_ms();
  kmq_consumer_close(a, 5000);
  ck_assert_int_lt(kt_now_ms() - t0, 30000);
  /* B ends up owning everything and can close too. */
  kmq_consumer_stats_t sb = {0};
  deadline = kt_now_ms() + 30000;
  while (sb.assigned - sb.revoked < NPART && kt_now_ms() < deadline) {
    kmq_consumer_poll_and_dispatch(b, noop_handler, NULL, 100);
    kmq_consumer_stats(b, &sb);
  }
  ck_assert_int_eq(sb.assigned - sb.revoked, NPART);
  t0 = kt_now_ms();
  ck_assert_int_eq(kmq_consumer_close(b, 5000), KMQ_OK);
  ck_assert_int_lt(kt_now_ms() - t0, 30000);
  kmq_consumer_destroy(a);
  kmq_consumer_destroy(b);
  kmq_conf_destroy(c);
}
END_TEST

/* A consumer of group on the test topic, conf_for's settings plus kv[n],
 * subscribed. *confp: its configuration, for the caller to destroy. */
static kmq_consumer_t *subscribed_with(const char *group,
                                       const char *const kv[][2], size_t n,
                                       kmq_conf_t **confp) {
  char errstr[512];
  kmq_conf_t *c = conf_for(group);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(kmq_conf_set(c, kv[i][0], kv[i][1], errstr,
                               sizeof(errstr)) == KMQ_OK,
                  "%s", errstr);
  kmq_consumer_t *k = kmq_consumer_new(c, NULL, errstr, sizeof(errstr));
  ck_assert_msg(k, "%s", errstr);
  const char *topics[] = {topic};
  ck_assert_int_eq(kmq_consumer_subscribe(k, topics, 1), KMQ_OK);
  *confp = c;
  return k;
}

/* ---- a partition unblocked with older messages still in the fetch queue
 *      and newer ones in its own queue ---- */

#define UB_PER_PART 4000

typedef struct {
  int64_t next[NPART];
  int refuse_part; /* -1 until the one refusal */
  int64_t refused_offset;
  int calls, handled;
} ub_t;

/* Refuses one message, on the 300th call, until the test lets it through:
 * its partition is blocked meanwhile. Every message must come as exactly
 * the next offset of its partition. */
static kmq_err_t ub_handler(const rd_kafka_message_t *m, void *opaque) {
  ub_t *b = opaque;
  if (++b->calls == 300 && b->refuse_part < 0) {
    b->refuse_part = m->partition;
    b->refused_offset = m->offset;
  }
  if (m->partition == b->refuse_part && m->offset == b->refused_offset &&
      b->calls < 1000000)
    return KMQ_ERR_BACKPRESSURE;
  ck_assert_msg(m->offset == b->next[m->partition],
                "partition %d: offset %lld handed out, %lld expected",
                m->partition, (long long)m->offset,
                (long long)b->next[m->partition]);
  b->next[m->partition]++;
  b->handled++;
  return KMQ_OK;
}

typedef struct {
  rd_kafka_queue_t *q;
} ub_wait_t;

static bool own_queue_filled(void *arg) {
  return rd_kafka_queue_length(((ub_wait_t *)arg)->q) > 0;
}

START_TEST(unblocked_partition_keeps_offset_order) {
  new_topic(NPART);
  produce(600, UB_PER_PART * NPART / 600);
  char group[96];
  kt_unique_name(group, sizeof(group), "gub");
  const char *kv[][2] = {
      {"kmq.poll.batch", "100"},
      {"consumer.queued.min.messages", "2000"},
      {"consumer.max.partition.fetch.bytes", "16384"},
  };
  kmq_conf_t *c;
  kmq_consumer_t *k =
      subscribed_with(group, kv, sizeof(kv) / sizeof(kv[0]), &c);
  ub_t b = {.refuse_part = -1};
  int64_t deadline = kt_now_ms() + 60000;
  while (b.refuse_part < 0 && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch(k, ub_handler, &b, 100);
  ck_assert_int_ge(b.refuse_part, 0);
  /* Blocked: librdkafka now fetches the partition's next messages into its
   * own queue, while the fetch queue, read 100 at a time, still holds older
   * ones of it (2000 prefetched over 6 partitions, 300 read). */
  ub_wait_t w = {rd_kafka_queue_get_partition(kmq_consumer_rk(k), topic,
                                              b.refuse_part)};
  ck_assert_ptr_nonnull(w.q);
  ck_assert_msg(kt_wait_until(own_queue_filled, &w, 30000),
                "nothing fetched for the blocked partition");
  rd_kafka_queue_destroy(w.q);
  b.calls = 1000000; /* let it through */
  deadline = kt_now_ms() + 60000;
  while (b.handled < UB_PER_PART * NPART && kt_now_ms() < deadline)
    kmq_consumer_poll_and_dispatch(k, ub_handler, &b, 100);
  ck_assert_int_eq(b.handled, UB_PER_PART * NPART);
  ck_assert_int_eq(kmq_consumer_close(k, 10000), KMQ_OK);
  kmq_consumer_destroy(k);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- the prefetch bound: all partitions together, or each ---- */

#define PF_PER_PART 3000
#define PF_MIN 300 /* queued.min.messages */

typedef struct {
  kmq_ack_t acks[64];
  int n;
} pf_hold_t;

/* Takes records and acks none: the budget (kmq.max.inflight) fills at
 * once, and what librdkafka fetches from then on only waits. */
static kmq_err_t pf_keep(const rd_kafka_message_t *m, kmq_ack_t ack,
                         void *opaque) {
  (void)m;
  pf_hold_t *h = opaque;
  ck_assert_int_lt(h->n, 64);
  h->acks[h->n++] = ack;
  return KMQ_OK;
}

/* _i: the kmq.fetch.queue of fetch_queues[] */
START_TEST(prefetch_is_bounded_as_configured) {
  new_topic(NPART);
  char errstr[512], group[96];
  { /* Small batches: a fetch response then overshoots the threshold by a
     * few batches per partition, not by thousands of messages. */
    kmq_conf_t *pc = conf_for(NULL);
    kmq_conf_set(pc, "producer.batch.num.messages", "20", errstr,
                 sizeof(errstr));
    kmq_producer_t *p =
        kmq_producer_new(pc, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
    ck_assert_msg(p, "%s", errstr);
    for (int i = 0; i < NPART * PF_PER_PART; i++) {
      char key[32], val[32];
      snprintf(key, sizeof(key), "wm%05d", i % 600);
      snprintf(val, sizeof(val), "u%d:%d", i % 600, i / 600);
      kmq_produce_msg_t m = {.key = key, .key_len = strlen(key),
                             .value = val, .value_len = strlen(val),
                             .msg_type = "text"};
      ck_assert_int_eq(kmq_producer_send(p, &m, NULL), KMQ_OK);
    }
    ck_assert_int_eq(kmq_producer_flush(p, 60000), KMQ_OK);
    kmq_producer_destroy(p);
    kmq_conf_destroy(pc);
  }
  kt_unique_name(group, sizeof(group), "gpf");
  const char *kv[][2] = {
      {"kmq.fetch.queue", fetch_queues[_i]},
      {"kmq.max.inflight", "8"},
      {"consumer.queued.min.messages", "300"}, /* PF_MIN */
      {"consumer.max.partition.fetch.bytes", "1024"},
      {"consumer.statistics.interval.ms", "100"},
  };
  kmq_conf_t *c;
  kmq_consumer_t *k =
      subscribed_with(group, kv, sizeof(kv) / sizeof(kv[0]), &c);
  pf_hold_t h = {.n = 0};
  /* Until librdkafka stopped fetching: its received count unchanged for
   * 2 s (20 statistics) after the first message. */
  kmq__rdstats_snap_t snap;
  int64_t rx = -1, since = kt_now_ms(), deadline = kt_now_ms() + 60000;
  while (kt_now_ms() < deadline) {
    kmq_consumer_poll_and_dispatch_with_ack(k, pf_keep, &h, 100);
    kmq__rdstats_read(kmq__consumer_rdstats(k), &snap);
    if (snap.rxmsgs != rx) {
      rx = snap.rxmsgs;
      since = kt_now_ms();
    } else if (h.n > 0 && kt_now_ms() - since > 2000) {
      break;
    }
  }
  ck_assert_int_eq(h.n, 8); /* the budget, and nothing beyond it */
  fprintf(stderr, "prefetch (%s): %lld messages received\n", fetch_queues[_i],
          (long long)rx);
  if (_i == 0) /* shared: PF_MIN for all, plus one response's overshoot */
    ck_assert_msg(rx < 2 * PF_MIN + 8 + NPART * 60,
                  "%lld received: more than the shared bound", (long long)rx);
  else /* each partition fetched up to PF_MIN */
    ck_assert_msg(rx >= NPART * PF_MIN,
                  "%lld received: a partition stopped below its bound",
                  (long long)rx);
  for (int i = 0; i < h.n; i++)
    kmq_ack(h.acks[i], 1);
  ck_assert_int_eq(kmq_consumer_close(k, 10000), KMQ_OK);
  kmq_consumer_destroy(k);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("consumer_broker");
  TCase *tc = tcase_create("broker");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, thousand_users_random_completion_commits_end);
  tcase_add_test(tc, second_member_joins_midstream);
  tcase_add_test(tc, nack_is_redelivered_after_restart);
  tcase_add_test(tc, close_right_after_start);
  tcase_add_test(tc, close_during_rebalance);
  suite_add_tcase(s, tc);
  TCase *bp = tcase_create("backpressure");
  tcase_set_timeout(bp, 240);
  tcase_add_loop_test(bp, backpressure_pauses_and_resumes_in_order, 0, 2);
  tcase_add_loop_test(bp, prefetch_is_bounded_as_configured, 0, 2);
  tcase_add_test(bp, unblocked_partition_keeps_offset_order);
  suite_add_tcase(s, bp);
  return kt_run(s);
}
