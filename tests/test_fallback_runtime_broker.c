/* The runtime's side of the third level (issue 11, step 5), on the real
 * broker and both store backends: with kmq.fallback.backend set and no hook
 * of its own, a record whose dead letter the DLQ rejects (here: a DLQ topic
 * name the broker refuses) is stored, verbatim, as the dead letter the DLQ
 * would have written, and its offset finishes: the group commits to the end,
 * nothing is counted LOST. The endpoint shows the store (kmq_fallback_*,
 * store="runtime"), and promtool accepts the exposition. */
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brokerutil.h"
#include "fbutil.h"
#include "kmq/admin.h"
#include "kmq/fallback.h"
#include "kmq/runtime.h"
#include "testutil.h"

#define USERS 10
#define PER 5
#define BAD_DLQ "kmq-invalid/dlq" /* '/' is not allowed in a topic name */

static kmq_proc_result_t fail_all(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)opaque;
  kmq_proc_ctx_set_reason(ctx, "test: always fails");
  return KMQ_PROC_FAIL;
}

typedef struct {
  kmq_runtime_t *rt;
  kmq_fallback_t *fb;
  char *text; /* the last scrape */
} run_t;

static size_t on_body(char *p, size_t sz, size_t n, void *opaque) {
  char **b = opaque;
  size_t have = strlen(*b);
  char *nb = realloc(*b, have + sz * n + 1);
  ck_assert_ptr_nonnull(nb);
  memcpy(nb + have, p, sz * n);
  nb[have + sz * n] = '\0';
  *b = nb;
  return sz * n;
}

/* GET /metrics of rt's endpoint (a 200); the body (free it). */
static char *scrape(kmq_runtime_t *rt) {
  char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics",
           kmq_runtime_metrics_port(rt));
  CURL *c = curl_easy_init();
  ck_assert_ptr_nonnull(c);
  char *b = calloc(1, 1);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  CURLcode rc = curl_easy_perform(c);
  ck_assert_msg(rc == CURLE_OK, "GET %s: %s", url, curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  ck_assert_int_eq(status, 200);
  curl_easy_cleanup(c);
  return b;
}

/* The value of the sample line starting with series, -1 when absent. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l)
    if (!strncmp(l, series, n) && l[n] == ' ')
      return strtod(l + n + 1, NULL);
  return -1;
}

/* The endpoint's store series caught up with the table (they are sampled
 * at most every kmq.metrics.interval.ms). */
static bool scraped_all(void *opaque) {
  run_t *r = opaque;
  ck_assert_int_ge(kmq_runtime_poll(r->rt, 50), 0);
  free(r->text);
  r->text = scrape(r->rt);
  return sample(r->text, "kmq_fallback_stored_total{store=\"runtime\"}") ==
             USERS * PER &&
         sample(r->text, "kmq_fallback_pending{store=\"runtime\"}") ==
             USERS * PER;
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

static bool all_stored(void *opaque) {
  run_t *r = opaque;
  ck_assert_int_ge(kmq_runtime_poll(r->rt, 100), 0);
  kmq_fallback_stats_t s;
  kmq_fallback_stats(r->fb, &s);
  return s.pending == USERS * PER;
}

START_TEST(rejected_dead_letters_are_stored_and_finished) {
  char topic[96], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-fbrt");
  kt_unique_name(group, sizeof(group), "fbrt");
  kt_create_topics(topic, 3, NULL);
  kt_produce_traffic(topic, USERS, PER);
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.dlq.topic", BAD_DLQ, errstr, sizeof(errstr));
  kmq_conf_set(c, "group.id", group, errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.commit.interval.ms", "200", errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.sched.workers", "2", errstr, sizeof(errstr));
  ck_assert(!kmq_conf_set(c, "producer.message.timeout.ms", "3000", errstr,
                          sizeof(errstr)));
  kmq_conf_set(c, "kmq.metrics.listen", "127.0.0.1:0", errstr,
               sizeof(errstr));
  kmq_conf_set(c, "kmq.metrics.interval.ms", "100", errstr, sizeof(errstr));
  kt_fb_conf(c, _i, NULL, 0);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, fail_all, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  kmq_fallback_t *fb = kmq_fallback_new(c, errstr, sizeof(errstr));
  ck_assert_msg(fb, "%s", errstr);
  run_t r = {rt, fb, NULL};
  ck_assert(kt_wait_until(all_stored, &r, 60000));
  kmq_runtime_metrics_t mx;
  kmq_runtime_metrics(rt, &mx);
  ck_assert_int_eq(mx.dlq_lost, 0);
  ck_assert_msg(kt_wait_until(scraped_all, &r, 10000),
                "kmq_fallback_* never showed %d stored and pending rows",
                USERS * PER);
  ck_assert(sample(r.text, "kmq_fallback_compensated_total{store=\"runtime\"}")
            == 0);
  ck_assert(sample(r.text, "kmq_fallback_failed_total{store=\"runtime\"}") ==
            0);
  ck_assert(sample(r.text, "kmq_fallback_oldest_pending_age_seconds{store="
                           "\"runtime\"}") >= 0);
  ck_assert(sample(r.text, "kmq_fallback_pending{store=\"producer\"}") < 0);
  ck_assert_int_eq(promtool_check(r.text), 0);
  free(r.text);
  kmq_runtime_destroy(rt);
  /* Every offset finished: committed to the end of every partition. */
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);

  /* The rows are the dead letters, replayable to the DLQ topic. */
  kmq_fallback_entry_t *e;
  size_t n;
  ck_assert(!kmq_fallback_claim(fb, 1000, 60000, &e, &n, errstr,
                                sizeof(errstr)));
  ck_assert_int_eq(n, USERS); /* one head per user */
  for (size_t i = 0; i < n; i++) {
    ck_assert_str_eq(e[i].topic, BAD_DLQ);
    ck_assert_str_eq(e[i].source, "dlq");
    ck_assert_int_eq(e[i].key_len, strlen(e[i].user_id));
    json_t *j = json_loadb(e[i].value, e[i].value_len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "original_topic")),
                     topic);
    ck_assert_str_eq(json_string_value(json_object_get(j, "reason")),
                     KMQ_PROC_REASON_FAILED);
    json_decref(j);
  }
  kmq_fallback_entries_free(e, n);
  fprintf(stderr, "%s: %d dead letters the DLQ rejected are stored; "
          "offsets committed to the end\n", kt_fb_name(_i), USERS * PER);
  kmq_fallback_destroy(fb);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

static kmq_proc_result_t ok_all(const kmq_chat_msg_t *msg,
                                kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)ctx;
  (void)opaque;
  return KMQ_PROC_OK;
}

#define BIG 990000 /* over kmq.msg.max.bytes, under message.max.bytes */

typedef struct {
  char ref[256];
  int truncated;
} letter_t;

static void on_letter(const rd_kafka_message_t *m, void *opaque) {
  letter_t *l = opaque;
  kt_header(m, "fallback_message_id", l->ref, sizeof(l->ref));
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  l->truncated = json_is_true(json_object_get(j, "payload_truncated"));
  ck_assert_int_eq(json_integer_value(json_object_get(j, "payload_size")),
                   BIG);
  json_decref(j);
}

typedef struct {
  const char *want;
  int found;
  size_t value_len;
} row_find_t;

static void on_row(const kmq_fallback_view_t *r, void *opaque) {
  row_find_t *f = opaque;
  if (!strcmp(r->message_id, f->want)) {
    f->found++;
    f->value_len = r->value_len;
  }
}

typedef struct {
  kmq_runtime_t *rt;
} big_t;

static bool big_done(void *opaque) {
  big_t *b = opaque;
  ck_assert_int_ge(kmq_runtime_poll(b->rt, 100), 0);
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(b->rt, &m);
  return m.failed == 1;
}

/* A record too large for its dead letter, with the store configured: kept
 * whole in the store AND a truncated letter in the DLQ topic whose header
 * fallback_message_id names the row. */
START_TEST(too_large_is_stored_whole_and_referenced) {
  char topic[96], dlq[128], group[64], errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-fbbig");
  kt_unique_name(group, sizeof(group), "fbbig");
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  kt_create_topics(topic, 1, NULL);
  kt_create_topics(dlq, 1, NULL);
  kt_produce_quotes(topic, "big-user", BIG);
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr));
  kmq_conf_set(c, "group.id", group, errstr, sizeof(errstr));
  kt_fb_conf(c, _i, NULL, 0);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, ok_all, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  big_t b = {rt};
  ck_assert(kt_wait_until(big_done, &b, 30000));
  kmq_runtime_destroy(rt);
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);

  letter_t l = {"", 0};
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), dlq, 1, 30000, on_letter, &l),
                   1);
  ck_assert(l.truncated);
  ck_assert_msg(l.ref[0], "the letter has no fallback_message_id header");
  kmq_fallback_t *fb = kmq_fallback_new(c, errstr, sizeof(errstr));
  ck_assert_msg(fb, "%s", errstr);
  row_find_t f = {l.ref, 0, 0};
  ck_assert(!kmq_fallback_list(fb, -1, "big-user", 10, on_row, &f, errstr,
                               sizeof(errstr)));
  ck_assert_int_eq(f.found, 1);
  ck_assert_int_gt(f.value_len, BIG); /* the whole envelope */
  fprintf(stderr, "%s: too large record stored whole (%zu bytes) as %s, "
          "referenced by its truncated letter\n", kt_fb_name(_i),
          f.value_len, l.ref);
  kmq_fallback_destroy(fb);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fallback_runtime");
  TCase *tc = tcase_create("runtime");
  tcase_set_timeout(tc, 85);
  tcase_add_loop_test(tc, rejected_dead_letters_are_stored_and_finished, 0,
                      KT_FB_NBACKENDS);
  tcase_add_loop_test(tc, too_large_is_stored_whole_and_referenced, 0,
                      KT_FB_NBACKENDS);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
