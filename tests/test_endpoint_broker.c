/* The metrics endpoint on the real broker (issue 12): /metrics over HTTP
 * during a run (counters move and match kmq_runtime_metrics(), promtool
 * accepts the exposition, librdkafka's statistics and the producer are in
 * it), /stuck and the gauges name a stalled partition's blocking offset and
 * user, the log hook receives librdkafka's and kmq's logs, and a missing
 * topic reaches the error hook. Waits are bounded loops that drive the
 * runtime (kmq_runtime_poll) until a condition holds, never sleeps. */
#include <check.h>
#include <sys/wait.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brokerutil.h"
#include "kmq/producer.h"
#include "kmq/runtime.h"
#include "testutil.h"
#include "traffic.h"

#define USERS 20
#define PER 10

/* ---- HTTP and exposition helpers ---- */
typedef struct {
  char *buf;
  size_t len;
} body_t;

static size_t on_body(char *p, size_t sz, size_t n, void *opaque) {
  body_t *b = opaque;
  char *nb = realloc(b->buf, b->len + sz * n + 1);
  ck_assert_ptr_nonnull(nb);
  memcpy(nb + b->len, p, sz * n);
  b->len += sz * n;
  nb[b->len] = '\0';
  b->buf = nb;
  return sz * n;
}

/* GET http://127.0.0.1:port/path; asserts the status; the body (free
 * it). */
static char *http_get_status(int port, const char *path, long want) {
  char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
  CURL *c = curl_easy_init();
  ck_assert_ptr_nonnull(c);
  body_t b = {calloc(1, 1), 0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  CURLcode rc = curl_easy_perform(c);
  ck_assert_msg(rc == CURLE_OK, "GET %s: %s", url, curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  ck_assert_int_eq(status, want);
  curl_easy_cleanup(c);
  return b.buf;
}

static char *http_get(int port, const char *path) {
  return http_get_status(port, path, 200);
}

/* The value of the sample whose line starts with `series` (name with its
 * labels exactly as written), or -1 when absent. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l)
    if (!strncmp(l, series, n) && l[n] == ' ')
      return strtod(l + n + 1, NULL);
  return -1;
}

/* promtool check metrics < text: its exit status (0: valid, lint clean). */
static int promtool_check(const char *text) {
  char path[] = "/tmp/kmq-expo-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "%s check metrics < %s", KMQ_PROMTOOL, path);
  int st = system(cmd);
  unlink(path);
  return st;
}

/* ---- hooks ---- */
typedef struct {
  atomic_int rdk_lines, rdk_debug, kmq_lines, metrics_lines;
  atomic_int unknown_topic, fatal, other, all_brokers_down, transport;
  atomic_int abandoned; /* the consumer's "handle is abandoned" error */
  atomic_int wait_assign_call; /* librdkafka entered wait-assign-call */
  atomic_int steady;           /* librdkafka entered steady */
} hooks_t;

static void on_log(int level, const char *fac, const char *msg, void *o) {
  hooks_t *h = o;
  if (level == 3 && !strcmp(fac, "consumer") &&
      strstr(msg, "librdkafka handle is abandoned"))
    atomic_fetch_add(&h->abandoned, 1);
  if (!strcmp(fac, "CGRPJOINSTATE") && strstr(msg, "-> wait-assign-call"))
    atomic_fetch_add(&h->wait_assign_call, 1);
  if (!strcmp(fac, "CGRPJOINSTATE") && strstr(msg, "-> steady"))
    atomic_fetch_add(&h->steady, 1);
  /* kmq's facilities are lower case, librdkafka's upper case. */
  if (fac[0] >= 'A' && fac[0] <= 'Z') {
    atomic_fetch_add(&h->rdk_lines, 1);
    if (level == 7)
      atomic_fetch_add(&h->rdk_debug, 1);
  } else {
    atomic_fetch_add(&h->kmq_lines, 1);
    if (!strcmp(fac, "metrics"))
      atomic_fetch_add(&h->metrics_lines, 1);
  }
}

static void on_error(const kmq_error_t *e, void *o) {
  hooks_t *h = o;
  if (!strcmp(e->type, "unknown_topic"))
    atomic_fetch_add(&h->unknown_topic, 1);
  else if (!strcmp(e->type, "all_brokers_down"))
    atomic_fetch_add(&h->all_brokers_down, 1);
  else if (!strcmp(e->type, "transport"))
    atomic_fetch_add(&h->transport, 1);
  else if (e->fatal)
    atomic_fetch_add(&h->fatal, 1);
  else
    atomic_fetch_add(&h->other, 1);
}

static kmq_conf_t *conf_new(const char *topic, const char *group,
                            hooks_t *h) {
  char errstr[512];
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", kt_bootstrap()},
      {"kmq.topic", topic},
      {"group.id", group},
      {"kmq.sched.workers", "2"},
      {"kmq.commit.interval.ms", "50"},
      {"kmq.metrics.listen", "127.0.0.1:0"},
      {"kmq.metrics.interval.ms", "50"},
      {"consumer.statistics.interval.ms", "100"},
      {"consumer.debug", "cgrp"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                  "%s", errstr);
  kmq_conf_set_log_cb(c, on_log, h);
  kmq_conf_set_error_cb(c, on_error, h);
  return c;
}

static kmq_proc_result_t count(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                               void *opaque) {
  (void)msg;
  (void)ctx;
  (void)opaque;
  return KMQ_PROC_OK;
}

static void produce(kmq_producer_t *p, int round) {
  char buf[1024], user[16];
  for (int s = 0; s < PER; s++)
    for (int u = 0; u < USERS; u++) {
      int n = kmq_traffic_envelope(u, round * PER + s, buf, sizeof(buf));
      kmq_traffic_user(u, user, sizeof(user));
      kmq_produce_msg_t m = {.key = user, .key_len = strlen(user),
                             .value = buf, .value_len = (size_t)n};
      ck_assert_int_eq(kmq_producer_send(p, &m, NULL), KMQ_OK);
    }
  ck_assert_int_eq(kmq_producer_flush(p, 30000), KMQ_OK);
}

static void poll_until_processed(kmq_runtime_t *rt, int64_t n) {
  int64_t deadline = kt_now_ms() + 60000;
  kmq_runtime_metrics_t m;
  do {
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
    kmq_runtime_metrics(rt, &m);
  } while (m.processed < n && kt_now_ms() < deadline);
  ck_assert_int_eq(m.processed, n);
}

/* Scrapes and checks that the counters equal kmq_runtime_metrics() (the
 * runtime is not polled meanwhile, every message is finished: nothing
 * moves). Returns the exposition (free it). */
static char *scrape_matching(kmq_runtime_t *rt, int port) {
  char *text = http_get(port, "/metrics");
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(rt, &m);
  ck_assert_int_eq((int64_t)sample(text, "kmq_messages_dispatched_total"),
                   m.dispatched);
  ck_assert_int_eq((int64_t)sample(text, "kmq_messages_processed_total"),
                   m.processed);
  ck_assert_int_eq((int64_t)sample(text, "kmq_messages_failed_total"),
                   m.failed);
  ck_assert_int_eq((int64_t)sample(text, "kmq_rebalances_total"),
                   m.rebalances);
  ck_assert_int_eq(
      (int64_t)sample(text, "kmq_processing_duration_seconds_count"),
      m.processed + m.failed);
  ck_assert_int_eq(
      (int64_t)sample(text, "kmq_errors_total{type=\"unknown_topic\"}"),
      m.errors[0]);
  return text;
}

START_TEST(metrics_over_http_during_a_run) {
  char topic[96], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-endpoint");
  kt_unique_name(group, sizeof(group), "kmq-endpoint");
  kt_create_topics(topic, 2, NULL);
  hooks_t h = {0};
  kmq_conf_t *c = conf_new(topic, group, &h);
  kmq_producer_t *p =
      kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, count, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  int port = kmq_runtime_metrics_port(rt);
  ck_assert_int_gt(port, 0);
  kmq_runtime_set_producer(rt, p);

  char *t0 = scrape_matching(rt, port);
  ck_assert_int_eq((int64_t)sample(t0, "kmq_messages_processed_total"), 0);
  produce(p, 0);
  poll_until_processed(rt, USERS * PER);
  char *t1 = scrape_matching(rt, port);
  produce(p, 1);
  poll_until_processed(rt, 2 * USERS * PER);
  char *t2 = scrape_matching(rt, port);
  /* The counters moved with the traffic. */
  ck_assert_int_eq((int64_t)sample(t1, "kmq_messages_processed_total"),
                   USERS * PER);
  ck_assert_int_eq((int64_t)sample(t2, "kmq_messages_processed_total"),
                   2 * USERS * PER);
  ck_assert_int_eq((int64_t)sample(t2, "kmq_producer_delivered_total"),
                   2 * USERS * PER);
  ck_assert_double_gt(
      sample(t2, "kmq_producer_delivery_duration_seconds_count"), 0);
  ck_assert_int_eq(promtool_check(t2), 0);

  /* librdkafka's statistics arrive on the poll thread every 100 ms. */
  int64_t deadline = kt_now_ms() + 30000;
  char *t3 = NULL;
  do {
    free(t3);
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
    t3 = http_get(port, "/metrics");
  } while (sample(t3, "kmq_rdkafka_rxmsgs_total{client=\"consumer\"}") <
               2 * USERS * PER &&
           kt_now_ms() < deadline);
  ck_assert_double_ge(sample(t3, "kmq_rdkafka_rxmsgs_total{client=\"consumer\"}"),
                      2 * USERS * PER);
  ck_assert_ptr_nonnull(strstr(t3, "kmq_rdkafka_broker_rtt_seconds{"));
  ck_assert_ptr_nonnull(strstr(t3, "kmq_partition_committed_offset{topic=\""));
  ck_assert_int_eq(promtool_check(t3), 0);
  if (getenv("KMQ_TEST_DUMP")) /* for a look at the exposition by hand */
    fputs(t3, stderr);
  /* Both logs went through the hook: librdkafka's (debug=cgrp) and kmq's
   * ("serving /metrics ..."). */
  ck_assert_int_gt(atomic_load(&h.rdk_debug), 0);
  ck_assert_int_gt(atomic_load(&h.metrics_lines), 0);
  free(t0);
  free(t1);
  free(t2);
  free(t3);
  kmq_runtime_set_producer(rt, NULL);
  kmq_runtime_destroy(rt);
  kmq_producer_destroy(p);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* ---- a stalled partition ---- */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int released, blocked;
} gate_t;

static kmq_proc_result_t blocking(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  gate_t *g = opaque;
  size_t len;
  const char *user = kmq_proc_ctx_user(ctx, &len);
  if (len == 7 && !memcmp(user, "u-stall", 7) &&
      kmq_proc_ctx_offset(ctx) == 0) {
    pthread_mutex_lock(&g->lock);
    g->blocked = 1;
    while (!g->released)
      pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
  }
  return KMQ_PROC_OK;
}

static void send_raw(rd_kafka_t *rk, const char *topic, const char *key) {
  ck_assert_int_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                     RD_KAFKA_V_PARTITION(0),
                                     RD_KAFKA_V_KEY(key, strlen(key)),
                                     RD_KAFKA_V_VALUE("x", 1),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_END),
                   0);
}

START_TEST(stalled_partition_in_stuck_and_gauges) {
  char topic[96], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-stall");
  kt_unique_name(group, sizeof(group), "kmq-stall");
  kt_create_topics(topic, 1, NULL);
  rd_kafka_t *rk = kt_producer_new();
  /* Offset 0 blocks; the user's two next messages queue behind it; another
   * user's messages finish but cannot be committed past offset 0. */
  send_raw(rk, topic, "u-stall");
  send_raw(rk, topic, "u-other");
  send_raw(rk, topic, "u-stall");
  send_raw(rk, topic, "u-stall");
  kt_producer_done(rk);

  hooks_t h = {0};
  kmq_conf_t *c = conf_new(topic, group, &h);
  gate_t g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, blocking, &g), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  int port = kmq_runtime_metrics_port(rt);

  /* Poll until the sampler has seen offset 0 block for a while. */
  int64_t deadline = kt_now_ms() + 60000;
  kmq_runtime_partition_t ps[4];
  size_t n = 0;
  for (;;) {
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
    n = kmq_runtime_partitions(rt, ps, 4);
    if (n == 1 && ps[0].blocking_offset == 0 && ps[0].blocked_seconds >= 0.2)
      break;
    ck_assert_msg(kt_now_ms() < deadline, "partition never seen blocked");
  }
  ck_assert_str_eq(ps[0].user, "u-stall");
  ck_assert_int_eq(ps[0].state, KMQ_STALL_RUNNING);
  ck_assert_int_eq(ps[0].attempts, 1);

  char *js = http_get(port, "/stuck");
  if (getenv("KMQ_TEST_DUMP"))
    fputs(js, stderr);
  json_error_t jerr;
  json_t *root = json_loads(js, 0, &jerr);
  ck_assert_msg(root, "/stuck is not JSON: %s: %s", jerr.text, js);
  json_t *parts = json_object_get(root, "partitions");
  ck_assert_int_eq(json_array_size(parts), 1);
  json_t *p0 = json_array_get(parts, 0);
  ck_assert_str_eq(json_string_value(json_object_get(p0, "topic")), topic);
  ck_assert_int_eq(json_integer_value(json_object_get(p0, "partition")), 0);
  ck_assert_int_eq(json_integer_value(json_object_get(p0, "blocking_offset")),
                   0);
  ck_assert_str_eq(json_string_value(json_object_get(p0, "user")), "u-stall");
  ck_assert_str_eq(json_string_value(json_object_get(p0, "state")),
                   "running");
  ck_assert_int_eq(json_integer_value(json_object_get(p0, "attempts")), 1);
  ck_assert(json_is_integer(json_object_get(p0, "committed")));
  ck_assert_double_ge(json_number_value(json_object_get(p0, "blocked_seconds")),
                      0.2);
  /* The stalled user's mailbox: the running message and two queued. */
  json_t *top = json_object_get(root, "top_mailboxes");
  ck_assert_int_ge(json_array_size(top), 1);
  ck_assert_str_eq(
      json_string_value(json_object_get(json_array_get(top, 0), "user")),
      "u-stall");
  ck_assert_int_eq(
      json_integer_value(json_object_get(json_array_get(top, 0), "depth")), 3);
  json_decref(root);
  free(js);

  /* The operator's view of the same stall: `kmqctl stuck --endpoint` on
   * the live endpoint (the HTTP thread serves it while this thread does
   * not poll). Exit 1: a partition is behind. */
  char cmd[1024], out[8192];
  snprintf(cmd, sizeof(cmd),
           "%s stuck --endpoint http://127.0.0.1:%d --runtime-only 2>&1",
           KMQ_KMQCTL, port);
  FILE *f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  size_t got = fread(out, 1, sizeof(out) - 1, f);
  out[got] = 0;
  int st = pclose(f);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1,
                "kmqctl stuck exit %d: %s", WEXITSTATUS(st), out);
  ck_assert_msg(strstr(out, topic) && strstr(out, "u-stall") &&
                    strstr(out, "running"),
                "kmqctl stuck does not show the stall: %s", out);

  char *text = http_get(port, "/metrics");
  char series[256];
  snprintf(series, sizeof(series),
           "kmq_partition_blocking_offset{topic=\"%s\",partition=\"0\","
           "user=\"u-stall\"}",
           topic);
  ck_assert_double_eq(sample(text, series), 0);
  snprintf(series, sizeof(series),
           "kmq_partition_blocked_seconds{topic=\"%s\",partition=\"0\"}",
           topic);
  ck_assert_double_ge(sample(text, series), 0.2);
  ck_assert_int_eq(promtool_check(text), 0);
  free(text);

  /* Released: everything finishes, and the partition is no longer
   * blocked. */
  pthread_mutex_lock(&g.lock);
  g.released = 1;
  pthread_cond_broadcast(&g.cond);
  pthread_mutex_unlock(&g.lock);
  poll_until_processed(rt, 4);
  deadline = kt_now_ms() + 30000;
  do {
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
    n = kmq_runtime_partitions(rt, ps, 4);
  } while ((n != 1 || ps[0].blocking_offset != -1) &&
           kt_now_ms() < deadline);
  ck_assert_int_eq(ps[0].blocking_offset, -1);
  js = http_get(port, "/stuck");
  ck_assert_ptr_nonnull(strstr(js, "\"partitions\":[]"));
  free(js);
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(missing_topic_reaches_the_error_hook) {
  char topic[96], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-missing");
  kt_unique_name(group, sizeof(group), "kmq-missing");
  hooks_t h = {0};
  kmq_conf_t *c = conf_new(topic, group, &h);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, count, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  int64_t deadline = kt_now_ms() + 30000;
  /* Transient: the poll goes on (no error returned) while the hook hears
   * about it. */
  while (!atomic_load(&h.unknown_topic) && kt_now_ms() < deadline)
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
  ck_assert_int_gt(atomic_load(&h.unknown_topic), 0);
  ck_assert_int_eq(atomic_load(&h.fatal), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(rt, &m);
  ck_assert_str_eq(kmq_runtime_error_type(0), "unknown_topic");
  ck_assert_int_eq(m.errors[0], atomic_load(&h.unknown_topic));
  char *text = http_get(kmq_runtime_metrics_port(rt), "/metrics");
  ck_assert_double_ge(sample(text, "kmq_errors_total{type=\"unknown_topic\"}"),
                      1);
  free(text);
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* A record waiting out its retry backoff blocks its partition in state
 * "retrying" with the attempts made so far; an unknown path is a 404. */
static kmq_proc_result_t always_retry(const kmq_chat_msg_t *msg,
                                      kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)ctx;
  (void)opaque;
  return KMQ_PROC_RETRY;
}

START_TEST(retrying_record_in_stuck) {
  char topic[96], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-retrying");
  kt_unique_name(group, sizeof(group), "kmq-retrying");
  kt_create_topics(topic, 1, NULL);
  rd_kafka_t *rk = kt_producer_new();
  send_raw(rk, topic, "u-retry");
  kt_producer_done(rk);
  hooks_t h = {0};
  kmq_conf_t *c = conf_new(topic, group, &h);
  /* One attempt, then a backoff far longer than the test. */
  ck_assert_int_eq(kmq_conf_set(c, "kmq.proc.backoff.ms", "600000", errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.proc.backoff.max.ms", "600000",
                                errstr, sizeof(errstr)),
                   KMQ_OK);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, always_retry, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  int64_t deadline = kt_now_ms() + 60000;
  kmq_runtime_partition_t ps[2];
  for (;;) {
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
    if (kmq_runtime_partitions(rt, ps, 2) == 1 &&
        ps[0].state == KMQ_STALL_RETRYING)
      break;
    ck_assert_msg(kt_now_ms() < deadline, "never seen retrying");
  }
  ck_assert_int_eq(ps[0].blocking_offset, 0);
  ck_assert_int_eq(ps[0].attempts, 1);
  ck_assert_str_eq(ps[0].user, "u-retry");
  int port = kmq_runtime_metrics_port(rt);
  char *js = http_get(port, "/stuck");
  ck_assert_ptr_nonnull(strstr(js, "\"state\":\"retrying\""));
  ck_assert_ptr_nonnull(strstr(js, "\"attempts\":1,"));
  free(js);
  free(http_get_status(port, "/nope", 404));
  /* The waiting retry counts as queued: destroy does not wait for it. */
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* An unreachable cluster (nothing listens on the bootstrap address) is
 * transient: the hook hears ALL_BROKERS_DOWN, polling goes on. */
START_TEST(unreachable_cluster_reaches_the_error_hook) {
  char topic[96], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-unreachable");
  kt_unique_name(group, sizeof(group), "kmq-unreachable");
  hooks_t h = {0};
  kmq_conf_t *c = conf_new(topic, group, &h);
  /* Port 1 on loopback: connections are refused at once. */
  ck_assert_int_eq(kmq_conf_set(c, "bootstrap.servers", "127.0.0.1:1", errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(c, "kmq.close.timeout.ms", "1000", errstr,
                                sizeof(errstr)),
                   KMQ_OK);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(reg, count, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  int64_t deadline = kt_now_ms() + 30000;
  while (!atomic_load(&h.all_brokers_down) && kt_now_ms() < deadline)
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
  ck_assert_int_gt(atomic_load(&h.all_brokers_down), 0);
  ck_assert_int_eq(atomic_load(&h.fatal), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(rt, &m);
  ck_assert_str_eq(kmq_runtime_error_type(1), "all_brokers_down");
  ck_assert_int_eq(m.errors[1], atomic_load(&h.all_brokers_down));
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

/* The fatal-error tests' runtime: a topic of one partition, a group of
 * its own, conf_new's conf plus the key/value pairs of kv (NULL-ended),
 * a counting default processor. fx_end destroys what is left. */
typedef struct {
  char topic[96], group[64];
  hooks_t h;
  kmq_conf_t *c;
  kmq_proc_registry_t *reg;
  kmq_runtime_t *rt;
} fx_t;

static void fx_start(fx_t *f, const char *prefix, const char *const *kv) {
  char errstr[512];
  memset(f, 0, sizeof(*f));
  kt_unique_name(f->topic, sizeof(f->topic), prefix);
  kt_unique_name(f->group, sizeof(f->group), prefix);
  kt_create_topics(f->topic, 1, NULL);
  f->c = conf_new(f->topic, f->group, &f->h);
  for (; kv && kv[0]; kv += 2)
    ck_assert_msg(!kmq_conf_set(f->c, kv[0], kv[1], errstr, sizeof(errstr)),
                  "%s: %s", kv[0], errstr);
  f->reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_default(f->reg, count, NULL), KMQ_OK);
  f->rt = kmq_runtime_new(f->c, f->reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(f->rt, "%s", errstr);
}

/* kmq_runtime_destroy(f->rt), timed: ms it took. */
static int64_t fx_destroy_runtime(fx_t *f) {
  int64_t t0 = kt_now_ms();
  kmq_runtime_destroy(f->rt);
  f->rt = NULL;
  return kt_now_ms() - t0;
}

static void fx_end(fx_t *f) {
  kmq_runtime_destroy(f->rt);
  kmq_proc_registry_destroy(f->reg);
  kmq_conf_destroy(f->c);
}

/* A fatal error (fabricated with rd_kafka_test_fatal_error, as a fenced
 * static member would raise one) reaches the hook and ends
 * kmq_runtime_run with KMQ_ERR_FATAL; destroy still returns, within its
 * bound. The error comes while the member is still joining: before close
 * served the group until it waited for nothing of the application, and
 * before librdkafka's teardown was bounded, about one run in fifteen
 * under load hung in rd_kafka_destroy (the assignment came after close
 * had stopped serving; "waiting for assign call ... before
 * terminating"). */
START_TEST(fatal_error_ends_run) {
  const char *kv[] = {"kmq.close.timeout.ms", "5000", NULL};
  fx_t f;
  fx_start(&f, "kmq-fatal", kv);
  kmq_runtime_t *rt = f.rt;
  ck_assert_int_ge(kmq_runtime_poll(rt, 10), 0);
  ck_assert_int_eq(
      rd_kafka_test_fatal_error(kmq_consumer_rk(kmq_runtime_consumer(rt)),
                                RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
                                "test: fenced"),
      RD_KAFKA_RESP_ERR_NO_ERROR);
  /* run returns by itself: nobody calls kmq_runtime_stop. */
  ck_assert_int_eq(kmq_runtime_run(rt), KMQ_ERR_FATAL);
  ck_assert_int_eq(atomic_load(&f.h.fatal), 1);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(rt, &m);
  ck_assert_int_eq(m.errors[4], 1);
  ck_assert_str_eq(kmq_runtime_error_type(4), "fatal");
  /* A dynamic member: close serves the group until it waits for nothing
   * of the application, within kmq.commit.timeout.ms. A join slower than
   * that (a broker still loading its group coordinator) can leave the
   * group waiting for an assign call, and the teardown is then abandoned
   * at its bound (fatal_error_with_rebalance_pending says why): either
   * way destroy returns within close (5 s) + the teardown's 5 s. */
  int64_t took = fx_destroy_runtime(&f);
  ck_assert_msg(took < 15000, "destroy took %lld ms", (long long)took);
  fx_end(&f);
}
END_TEST

static bool wait_assign_call_seen(void *arg) {
  return atomic_load(&((hooks_t *)arg)->wait_assign_call) > 0;
}

/* A fatal error while librdkafka waits for the application's assign call
 * (the rebalance is queued, not yet served). A cooperative group in that
 * wait does not terminate while the handle is destroyed without a consumer
 * close, which is how it must be destroyed after a fatal error
 * (lib/rk_destroy.h); a stack taken from a hung fatal_error_ends_run
 * showed it ("waiting for assign call ... before terminating"). Cases:
 *  - _i == 0, dynamic cooperative member: librdkafka keeps the fatal
 *    error to the application (rd_kafka_fatal_error_code is 0 without
 *    group.instance.id), so close's assign call ends the wait and the
 *    teardown ends;
 *  - _i == 1, static cooperative member: librdkafka turns that assign
 *    call into an unassign that leaves the wait as it is, and its destroy
 *    never ends (a 60 s bound was waited out in full): destroy must still
 *    return, having abandoned the handle at once, and pass none of its log
 *    lines on afterwards (its main thread logs one per loop, spinning);
 *  - _i == 2, static eager member: the termination rejoins instead, and
 *    the teardown ends (not known stuck: the bounded wait).
 * The fatal error is raised once librdkafka has entered wait-assign-call
 * (its own log line), the consumer not polled since it subscribed. */
START_TEST(fatal_error_with_rebalance_pending) {
  char inst[64];
  kt_unique_name(inst, sizeof(inst), "kmq-inst");
  /* fx_start stops at the first NULL key: static from _i 1, eager at 2. */
  const char *kv[] = {"kmq.close.timeout.ms", "5000",
                      _i >= 1 ? "consumer.group.instance.id" : NULL, inst,
                      _i == 2 ? "consumer.partition.assignment.strategy"
                              : NULL,
                      "range", NULL};
  fx_t f;
  fx_start(&f, "kmq-fatal2", kv);
  kmq_runtime_t *rt = f.rt;
  ck_assert_int_ge(kmq_runtime_poll(rt, 0), 0); /* subscribes */
  rd_kafka_t *rk = kmq_consumer_rk(kmq_runtime_consumer(rt));
  ck_assert_msg(kt_wait_until(wait_assign_call_seen, &f.h, 30000),
                "librdkafka never waited for an assign call");
  ck_assert_int_eq(rd_kafka_test_fatal_error(
                       rk, RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
                       "test: fenced"),
                   RD_KAFKA_RESP_ERR_NO_ERROR);
  int64_t took = fx_destroy_runtime(&f);
  /* Close serves the assignment within kmq.commit.timeout.ms, a stuck
   * teardown is known at once, the others get 5 s: well within close
   * (5 s) + the teardown's 5 s + flush. */
  ck_assert_msg(took < 10000, "destroy took %lld ms", (long long)took);
  ck_assert_int_eq(atomic_load(&f.h.abandoned), _i == 1 ? 1 : 0);
  if (_i == 1) {
    /* No line after destroy returned, though librdkafka's main thread
     * formats one per turn of its (spinning) loop: a window to look, not
     * a synchronisation. */
    int lines = atomic_load(&f.h.rdk_lines);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    ck_assert_int_eq(atomic_load(&f.h.rdk_lines), lines);
  }
  fx_end(&f);
}
END_TEST

/* A real fence: a second consumer joins with the same group.instance.id,
 * and the broker fences the runtime's member (FENCED_INSTANCE_ID, a fatal
 * error of librdkafka's own). run returns KMQ_ERR_FATAL, and destroy ends
 * quickly: a fenced member stays in librdkafka's `init` join state for
 * good, which close must not wait out as a rejoin (it did, for
 * kmq.commit.timeout.ms, in a first version of the close after a fatal
 * error), and its teardown ends (not abandoned). */
START_TEST(fenced_static_member_ends_run) {
  char inst[64], errstr[512];
  kt_unique_name(inst, sizeof(inst), "kmq-inst");
  const char *fkv[] = {"consumer.group.instance.id", inst, NULL};
  fx_t f;
  fx_start(&f, "kmq-fence", fkv);
  kmq_runtime_t *rt = f.rt;
  int64_t deadline = kt_now_ms() + 30000;
  while (!atomic_load(&f.h.steady) && kt_now_ms() < deadline)
    ck_assert_int_ge(kmq_runtime_poll(rt, 50), 0);
  ck_assert_msg(atomic_load(&f.h.steady), "the member never joined");

  rd_kafka_conf_t *bc = rd_kafka_conf_new();
  const char *kv[][2] = {{"bootstrap.servers", kt_bootstrap()},
                         {"group.id", f.group},
                         {"group.instance.id", inst},
                         {"partition.assignment.strategy",
                          "cooperative-sticky"}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_int_eq(rd_kafka_conf_set(bc, kv[i][0], kv[i][1], errstr,
                                       sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
  rd_kafka_t *b = rd_kafka_new(RD_KAFKA_CONSUMER, bc, errstr, sizeof(errstr));
  ck_assert_msg(b, "%s", errstr);
  rd_kafka_poll_set_consumer(b);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, f.topic, RD_KAFKA_PARTITION_UA);
  ck_assert_int_eq(rd_kafka_subscribe(b, l), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(l);
  int rc = 0;
  deadline = kt_now_ms() + 60000;
  while (rc >= 0 && kt_now_ms() < deadline) {
    rc = kmq_runtime_poll(rt, 50);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(b, 10);
    if (m)
      rd_kafka_message_destroy(m);
  }
  ck_assert_int_eq(rc, KMQ_ERR_FATAL);
  ck_assert_int_eq(atomic_load(&f.h.fatal), 1);
  int64_t took = fx_destroy_runtime(&f);
  /* Far below kmq.commit.timeout.ms (10 s) and kmq.close.timeout.ms (30
   * s), the waits a fenced member must not cost. */
  ck_assert_msg(took < 5000, "destroy took %lld ms", (long long)took);
  ck_assert_int_eq(atomic_load(&f.h.abandoned), 0);
  rd_kafka_consumer_close(b);
  rd_kafka_destroy(b);
  fx_end(&f);
}
END_TEST

int main(void) {
  curl_global_init(CURL_GLOBAL_ALL);
  Suite *s = suite_create("endpoint_broker");
  TCase *tc = tcase_create("endpoint");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, metrics_over_http_during_a_run);
  tcase_add_test(tc, stalled_partition_in_stuck_and_gauges);
  tcase_add_test(tc, missing_topic_reaches_the_error_hook);
  tcase_add_test(tc, retrying_record_in_stuck);
  tcase_add_test(tc, unreachable_cluster_reaches_the_error_hook);
  tcase_add_test(tc, fatal_error_ends_run);
  tcase_add_loop_test(tc, fatal_error_with_rebalance_pending, 0, 3);
  tcase_add_test(tc, fenced_static_member_ends_run);
  suite_add_tcase(s, tc);
  int rc = kt_run(s);
  curl_global_cleanup();
  return rc;
}
