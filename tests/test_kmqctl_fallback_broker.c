/* kmqctl fallback stats | list | replay (issue 11) on both store backends
 * and the real broker: rows put through the store's API, counted and listed
 * by the tool (order, filters, JSON lines), a dry run that changes nothing,
 * a replay that delivers every row to its topic in each user's order
 * (exit 0), and one whose rows cannot be delivered (a topic name the broker
 * refuses, kmq.fallback.max.retries=1: exit 1, rows failed). */
#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "brokerutil.h"
#include "fbutil.h"
#include "kmq/fallback.h"
#include "testutil.h"

#ifndef KMQCTL_BIN
#error "KMQCTL_BIN must name the kmqctl binary"
#endif

#define USERS 3
#define PER 4

static char store_args[1024]; /* -X kmq.fallback.* of the test's store */

/* Runs `kmqctl -b $KMQ_BOOTSTRAP <store_args> <args>`, stdout into out;
 * returns the exit status. The store arguments are not echoed (a MariaDB
 * URL holds a password). */
static int run(char *out, size_t size, int broker, const char *args) {
  char cmd[2048];
  if (broker)
    snprintf(cmd, sizeof(cmd), "%s -b %s %s %s </dev/null", KMQCTL_BIN,
             kt_bootstrap(), store_args, args);
  else /* no -b, no $KMQ_BOOTSTRAP, no bootstrap.servers anywhere */
    snprintf(cmd, sizeof(cmd), "env -u KMQ_BOOTSTRAP -u KMQ_CONFIG %s %s %s "
             "</dev/null", KMQCTL_BIN, store_args, args);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, size - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  fprintf(stderr, "$ kmqctl%s fallback... %s\n%s(exit %d)\n",
          broker ? "" : " (no broker)", args, out,
          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int ctl(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ctl(char *out, size_t size, const char *fmt, ...) {
  char args[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof(args), fmt, ap);
  va_end(ap);
  return run(out, size, 1, args);
}

/* The value after "name " on its own line of out; -1 when absent. */
static long long field(const char *out, const char *name) {
  size_t n = strlen(name);
  for (const char *l = out; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l)
    if (!strncmp(l, name, n) && l[n] == ' ')
      return strtoll(l + n + 1, NULL, 10);
  return -1;
}

static int lines(const char *s) {
  int n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

static void put(kmq_fallback_t *fb, const char *topic, int u, int seq) {
  char mid[64], user[32], value[64], errstr[256];
  snprintf(mid, sizeof(mid), "%s-%d-%d", topic, u, seq);
  snprintf(user, sizeof(user), "user-%d", u);
  snprintf(value, sizeof(value), "{\"u\":%d,\"seq\":%d}", u, seq);
  kmq_fallback_row_t r = {.message_id = mid,
                          .user_id = user,
                          .topic = topic,
                          .key = user,
                          .key_len = strlen(user),
                          .value = value,
                          .value_len = strlen(value),
                          .partition = -1,
                          .offset = -1,
                          .source = "producer",
                          .error = "test",
                          .created_at = 1000 + seq};
  ck_assert_msg(!kmq_fallback_put(fb, &r, NULL, errstr, sizeof(errstr)),
                "%s", errstr);
}

typedef struct {
  int last[USERS];
  int n;
} seen_t;

static void on_replayed(const rd_kafka_message_t *m, void *opaque) {
  seen_t *s = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  int u = (int)json_integer_value(json_object_get(j, "u"));
  int seq = (int)json_integer_value(json_object_get(j, "seq"));
  json_decref(j);
  ck_assert(u >= 0 && u < USERS);
  ck_assert_int_eq(seq, s->last[u] + 1); /* the user's order, no repeat */
  s->last[u] = seq;
  s->n++;
}

START_TEST(stats_list_replay) {
  char topic[96], where[512], errstr[512];
  static char out[1 << 16];
  kt_unique_name(topic, sizeof(topic), "kmq-fbctl");
  kt_create_topics(topic, 2, NULL);
  kmq_conf_t *c = kmq_conf_new();
  kt_fb_conf(c, _i, where, sizeof(where));
  ck_assert(!kmq_conf_set(c, "kmq.fallback.max.retries", "1", errstr,
                          sizeof(errstr)));
  const char *url = kmq_conf_get(c, "kmq.fallback.url");
  snprintf(store_args, sizeof(store_args),
           "-X kmq.fallback.backend=%s -X kmq.fallback.%s=%s",
           kt_fb_name(_i), _i == KT_FB_SQLITE ? "path" : "url",
           _i == KT_FB_SQLITE ? kmq_conf_get(c, "kmq.fallback.path") : url);
  kmq_fallback_t *fb = kmq_fallback_new(c, errstr, sizeof(errstr));
  ck_assert_msg(fb, "%s", errstr);
  for (int s = 0; s < PER; s++)
    for (int u = 0; u < USERS; u++)
      put(fb, topic, u, s);

  ck_assert_int_eq(ctl(out, sizeof(out), "fallback stats"), 0);
  ck_assert_int_eq(field(out, "stored"), USERS * PER);
  ck_assert_int_eq(field(out, "pending"), USERS * PER);
  ck_assert_int_eq(field(out, "success"), 0);
  ck_assert_int_gt(field(out, "oldest_pending_age_seconds"), 0);

  /* One user's rows, in created order, as JSON lines. */
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "fallback list --user user-1 --status pending"), 0);
  ck_assert_int_eq(lines(out), PER);
  int k = 0;
  for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n"), k++) {
    json_t *j = json_loads(l, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "user_id")),
                     "user-1");
    ck_assert_str_eq(json_string_value(json_object_get(j, "status")),
                     "pending");
    char want[32];
    snprintf(want, sizeof(want), "{\"u\":1,\"seq\":%d}", k);
    ck_assert_str_eq(json_string_value(json_object_get(j, "value")), want);
    json_decref(j);
  }
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback list --max 5"), 0);
  ck_assert_int_eq(lines(out), 5);
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback list --status bogus"), 2);
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback stats --dry-run"), 2);

  /* A dry run lists what a replay takes and changes nothing. */
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback replay --dry-run"), 0);
  ck_assert_int_eq(lines(out), USERS * PER);
  /* Reading the store needs no broker; producing does. */
  ck_assert_int_eq(run(out, sizeof(out), 0, "fallback stats"), 0);
  ck_assert_int_eq(field(out, "pending"), USERS * PER);
  ck_assert_int_eq(run(out, sizeof(out), 0, "fallback list --max 3"), 0);
  ck_assert_int_eq(lines(out), 3);
  ck_assert_int_eq(run(out, sizeof(out), 0, "fallback replay --dry-run"), 0);
  ck_assert_int_eq(lines(out), USERS * PER);
  ck_assert_int_eq(run(out, sizeof(out), 0, "fallback replay"), 2);
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback stats"), 0);
  ck_assert_int_eq(field(out, "pending"), USERS * PER);

  /* The replay: every row to its topic, each user in order. */
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback replay --max-time 30000"),
                   0);
  ck_assert_int_eq(field(out, "delivered"), USERS * PER);
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback stats"), 0);
  ck_assert_int_eq(field(out, "success"), USERS * PER);
  ck_assert_int_eq(field(out, "pending") + field(out, "retrying"), 0);
  seen_t seen;
  for (int u = 0; u < USERS; u++)
    seen.last[u] = -1;
  seen.n = 0;
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), topic, USERS * PER, 30000,
                                 on_replayed, &seen),
                   USERS * PER);

  /* Rows that cannot be delivered: exit 1, given up after max.retries. */
  put(fb, "kmq-invalid/topic", 0, 100);
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "-X producer.message.timeout.ms=2000 fallback replay"),
                   1);
  ck_assert_int_eq(field(out, "failed"), 1);
  ck_assert_int_eq(ctl(out, sizeof(out), "fallback list --status failed"), 0);
  ck_assert_int_eq(lines(out), 1);
  kmq_fallback_destroy(fb);
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("kmqctl_fallback");
  TCase *tc = tcase_create("broker");
  tcase_set_timeout(tc, 55);
  tcase_add_loop_test(tc, stats_list_replay, 0, KT_FB_NBACKENDS);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
