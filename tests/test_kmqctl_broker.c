/* kmqctl against the real broker ($KMQ_BOOTSTRAP): every subcommand runs
 * as the operator would run it (the binary, through the shell), and what it
 * claims is checked with librdkafka directly: topic configs, committed
 * offsets, the DLQ's and the target topic's records. */
#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "brokerutil.h"
#include "kmq/dlq.h"
#include "kmq/gate.h"
#include "testutil.h"

#ifndef KMQCTL_BIN
#error "KMQCTL_BIN must name the kmqctl binary"
#endif

/* Runs `kmqctl -b $KMQ_BOOTSTRAP <args>` (stdin /dev/null: no terminal),
 * output (stdout and stderr) into out; returns the exit status. */
static int ctl(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ctl(char *out, size_t size, const char *fmt, ...) {
  char args[2048], cmd[2300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof(args), fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof(cmd), "%s -b %s %s </dev/null 2>&1", KMQCTL_BIN,
           kt_bootstrap(), args);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, size - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  fprintf(stderr, "$ kmqctl %s\n%s(exit %d)\n", args, out,
          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static rd_kafka_t *consumer(const char *group) {
  char err[256];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  rd_kafka_conf_set(rc, "bootstrap.servers", kt_bootstrap(), err, sizeof(err));
  rd_kafka_conf_set(rc, "group.id", group, err, sizeof(err));
  rd_kafka_conf_set(rc, "enable.auto.commit", "false", err, sizeof(err));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, err, sizeof(err));
  ck_assert_msg(rk, "%s", err);
  return rk;
}

/* The group's committed offset on topic [0]; -1 when none. */
static int64_t committed(const char *group, const char *topic) {
  rd_kafka_t *rk = consumer(group);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, 0);
  ck_assert_int_eq(rd_kafka_committed(rk, l, 10000), 0);
  int64_t o = l->elems[0].offset;
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return o >= 0 ? o : -1;
}

/* Commits offset with metadata for group on topic [0]. */
static void commit(const char *group, const char *topic, int64_t offset,
                   const char *meta) {
  rd_kafka_t *rk = consumer(group);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_add(l, topic, 0);
  p->offset = offset;
  p->metadata = strdup(meta);
  p->metadata_size = strlen(meta);
  ck_assert_int_eq(rd_kafka_commit(rk, l, 0), 0);
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
}

static void produce(rd_kafka_t *rk, const char *topic, const char *key,
                    const void *val, size_t len, rd_kafka_headers_t *h) {
  if (!h)
    h = rd_kafka_headers_new(0);
  ck_assert_int_eq(
      rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                        RD_KAFKA_V_KEY(key, strlen(key)),
                        RD_KAFKA_V_VALUE((void *)val, len),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
      0);
}

/* A dead letter of (user, reason, payload) failed at time ms, with the
 * original header h1=v1, as the DLQ writes it; cut: a truncated one. */
static void letter(rd_kafka_t *rk, const char *dlq, const char *origin,
                   const char *user, const char *reason, int64_t ms,
                   const char *payload, int cut) {
  rd_kafka_headers_t *oh = rd_kafka_headers_new(1);
  rd_kafka_header_add(oh, "h1", -1, "v1", -1);
  kmq_dlq_record_t rec = {.original_topic = origin,
                          .original_partition = 0,
                          .original_offset = 7,
                          .key = user,
                          .key_len = strlen(user),
                          .payload = payload,
                          .payload_len = strlen(payload),
                          .headers = oh,
                          .reason = reason,
                          .source = "processor"};
  kmq_dlq_letter_t l;
  char err[256];
  ck_assert_msg(!kmq_dlq_letter_build(&rec, ms, cut ? 1200 : SIZE_MAX, &l, err,
                                      sizeof(err)),
                "%s", err);
  ck_assert_int_eq(l.truncated, cut);
  produce(rk, dlq, user, l.value, l.value_len, l.headers);
  l.headers = NULL; /* taken by producev */
  kmq_dlq_letter_clear(&l);
  rd_kafka_headers_destroy(oh);
}

/* topics bootstrap --profile dev: created with the profile's settings
 * (read back here with DescribeConfigs), the second run reports no drift,
 * --check against prod reports drift with exit 1. */
START_TEST(topics_bootstrap_dev) {
  char t[128], out[16384];
  kt_unique_name(t, sizeof(t), "ctl-topics");
  ck_assert_int_eq(ctl(out, sizeof(out), "topics bootstrap --profile dev "
                                         "--topic %s", t),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "created"));
  ck_assert_ptr_nonnull(strstr(out, "no drift"));

  /* Independently: partitions from metadata, configs from the broker. */
  rd_kafka_t *rk = consumer("ctl-verify");
  char dlq[160];
  snprintf(dlq, sizeof(dlq), "%s.dlq", t);
  const char *names[] = {t, dlq};
  const char *retention[] = {"86400000", "604800000"};
  for (int i = 0; i < 2; i++) {
    const rd_kafka_metadata_t *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, names[i], NULL);
    ck_assert_int_eq(rd_kafka_metadata(rk, 0, rkt, &md, 10000), 0);
    ck_assert_int_eq(md->topics[0].partition_cnt, 4);
    ck_assert_int_eq(md->topics[0].partitions[0].replica_cnt, 1);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_ConfigResource_t *res =
        rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DescribeConfigs(rk, &res, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    ck_assert_ptr_nonnull(ev);
    size_t n, ne;
    const rd_kafka_ConfigResource_t **rs =
        rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &n);
    ck_assert_int_eq(n, 1);
    const rd_kafka_ConfigEntry_t **es =
        rd_kafka_ConfigResource_configs(rs[0], &ne);
    int seen = 0;
    for (size_t k = 0; k < ne; k++) {
      const char *nm = rd_kafka_ConfigEntry_name(es[k]);
      const char *v = rd_kafka_ConfigEntry_value(es[k]);
      const char *want = !strcmp(nm, "min.insync.replicas") ? "1"
                         : !strcmp(nm, "retention.ms")        ? retention[i]
                         : !strcmp(nm, "max.message.bytes")   ? "1048588"
                         : !strcmp(nm, "compression.type")    ? "producer"
                                                              : NULL;
      if (want) {
        ck_assert_str_eq(v, want);
        seen++;
      }
    }
    ck_assert_int_eq(seen, 4);
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy(res);
  }
  rd_kafka_destroy(rk);

  int64_t t0 = kt_now_ms();
  ck_assert_int_eq(ctl(out, sizeof(out), "topics bootstrap --profile dev "
                                         "--topic %s --check", t),
                   0);
  ck_assert_int_lt(kt_now_ms() - t0, 15000); /* no wait on an existing one */
  ck_assert_ptr_null(strstr(out, "DRIFT"));
  ck_assert_ptr_nonnull(strstr(out, "no drift"));
  ck_assert_int_eq(ctl(out, sizeof(out), "topics bootstrap --profile prod "
                                         "--topic %s --check", t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "DRIFT: profile wants 12"));
  ck_assert_int_eq(ctl(out, sizeof(out), "topics bootstrap --profile dev "
                                         "--topic %s-missing --check", t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "MISSING"));
}
END_TEST

/* A fresh topic t with its DLQ d (one partition each), a group name g,
 * and n records keyed u0, u1, ... with values {"n":i} on t. */
static void scenario(char *t, char *d, char *g, const char *prefix, int n) {
  char gp[64];
  kt_unique_name(t, 128, prefix);
  snprintf(gp, sizeof(gp), "%s-g", prefix);
  kt_unique_name(g, 128, gp);
  snprintf(d, 160, "%s.dlq", t);
  kt_create_topics(t, 1, d);
  rd_kafka_t *p = kt_producer_new();
  for (int i = 0; i < n; i++) {
    char k[8], v[32];
    snprintf(k, sizeof(k), "u%d", i);
    snprintf(v, sizeof(v), "{\"n\":%d}", i);
    produce(p, t, k, v, strlen(v), NULL);
  }
  kt_producer_done(p);
}

/* health: ISR, members, lag against --max-lag. */
START_TEST(health_probe) {
  char t[128], d[160], g[128], out[16384];
  scenario(t, d, g, "ctl-health", 5);
  commit(g, t, 2, "");
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "health --topic %s --group %s --min-members 0", t, g),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "healthy"));
  ck_assert_ptr_nonnull(strstr(out, "total lag 3"));
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "health --topic %s --group %s --min-members 0 "
                       "--max-lag 2",
                       t, g),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "over --max-lag"));
  ck_assert_int_eq(ctl(out, sizeof(out), "health --topic %s --group %s", t, g),
                   1); /* no member */
  ck_assert_ptr_nonnull(strstr(out, "fewer than --min-members"));
  ck_assert_int_eq(ctl(out, sizeof(out), "health --topic %s-none", t), 3);
}
END_TEST

/* stuck shows the record at the committed offset and the finished offsets
 * beyond it; skip refuses the wrong offset, a missing confirmation and a
 * group with members, then dead-letters and commits past it. */
START_TEST(stuck_then_skip) {
  char t[128], d[160], g[128], out[16384];
  scenario(t, d, g, "ctl-stuck", 6);
  /* Committed 2, offset 3 finished: the metadata the runtime writes. */
  char err[128], meta[256];
  kmq_gate_t *gate = kmq_gate_new(2, 64, err, sizeof(err));
  int64_t c;
  kmq_gate_track(gate, 2);
  kmq_gate_track(gate, 3);
  kmq_gate_mark_done(gate, 3, &c);
  kmq_gate_encode_done(gate, meta, sizeof(meta), NULL, NULL, NULL);
  kmq_gate_destroy(gate);
  commit(g, t, 2, meta);

  ck_assert_int_eq(ctl(out, sizeof(out), "stuck --group %s --topic %s", g, t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "partition 0: committed 2, end 6"));
  ck_assert_ptr_nonnull(strstr(out, "record at 2: user \"u2\""));
  ck_assert_ptr_nonnull(
      strstr(out, "finished beyond it (commit metadata): 1 offsets: 3"));

  ck_assert_int_eq(ctl(out, sizeof(out),
                       "skip --group %s --topic %s --partition 0 --offset 3 "
                       "--yes",
                       g, t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "not the group's committed offset 2"));
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "skip --group %s --topic %s --partition 0 --offset 2",
                       g, t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "not confirmed"));
  rd_kafka_t *member = kt_member_join(kt_bootstrap(), g, t, NULL);
  ck_assert_int_eq(ctl(out, sizeof(out), "health --topic %s --group %s", t, g),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "Stable, 1 member\n  member "));
  ck_assert_ptr_nonnull(strstr(out, "): 1 partitions"));
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "skip --group %s --topic %s --partition 0 --offset 2 "
                       "--yes",
                       g, t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "active member"));
  /* --force gets past kmqctl's check, not the broker's: refused before
   * anything is written. */
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "skip --group %s --topic %s --partition 0 --offset 2 "
                       "--yes --force",
                       g, t),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "nothing written"));
  kt_member_leave(member);
  ck_assert_int_eq(committed(g, t), 2); /* nothing moved so far */
  /* The member's LeaveGroup empties the group (the broker takes a moment
   * to complete the rebalance it starts). */
  int64_t t0 = kt_now_ms();
  while (ctl(out, sizeof(out), "health --topic %s --group %s --min-members 0",
             t, g) != 0 ||
         !strstr(out, ", 0 members"))
    ck_assert_msg(kt_now_ms() - t0 < 30000, "the group did not empty");
  fprintf(stderr, "group empty after %lld ms\n", (long long)(kt_now_ms() - t0));

  ck_assert_int_eq(ctl(out, sizeof(out),
                       "skip --group %s --topic %s --partition 0 --offset 2 "
                       "--yes",
                       g, t),
                   0);
  /* Past 2 and past 3, which was finished already. */
  ck_assert_int_eq(committed(g, t), 4);
  /* One dead letter: the refused attempts wrote none. */
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), d, 2, 3000, NULL, NULL), 1);
  ck_assert_ptr_nonnull(strstr(out, "committed"));
  ck_assert_ptr_nonnull(strstr(out, "at 4"));
}
END_TEST

static void skipped_letter_cb(const rd_kafka_message_t *m, void *opaque) {
  char buf[64];
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  ck_assert_str_eq(json_string_value(json_object_get(j, "reason")),
                   "skipped_by_operator");
  ck_assert_int_eq(json_integer_value(json_object_get(j, "original_offset")),
                   2);
  ck_assert_str_eq(json_string_value(json_object_get(j, "payload")),
                   "{\"n\":2}");
  ck_assert_str_eq(kt_header(m, "dlq_reason", buf, sizeof(buf)),
                   "skipped_by_operator");
  ck_assert_int_eq(m->key_len, 2);
  ck_assert_int_eq(memcmp(m->key, "u2", 2), 0);
  json_decref(j);
  (*(int *)opaque)++;
}

START_TEST(skip_wrote_the_letter) {
  /* The same scenario's DLQ check, separate so the letter is read fresh. */
  char t[128], d[160], g[128], out[16384];
  scenario(t, d, g, "ctl-skip", 3);
  commit(g, t, 2, "");
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "skip --group %s --topic %s --partition 0 --offset 2 "
                       "--yes",
                       g, t),
                   0);
  int seen = 0;
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), d, 1, 20000,
                                 skipped_letter_cb, &seen),
                   1);
  ck_assert_int_eq(seen, 1);
  ck_assert_int_eq(committed(g, t), 3);
}
END_TEST

/* 2026-01-0N 00:00:00 UTC in ms. */
static int64_t jan(int day) {
  return (1767225600LL + (int64_t)(day - 1) * 86400) * 1000;
}

typedef struct {
  int n;
  char keys[32][16];
} seen_t;

static void target_cb(const rd_kafka_message_t *m, void *opaque) {
  seen_t *s = opaque;
  char buf[64];
  ck_assert_str_eq(kt_header(m, "replayed", buf, sizeof(buf)), "true");
  ck_assert_str_eq(kt_header(m, "h1", buf, sizeof(buf)), "v1");
  ck_assert_str_eq(kt_header(m, "dlq_reason", buf, sizeof(buf)), "");
  if (s->n < 32)
    snprintf(s->keys[s->n], sizeof(s->keys[0]), "%.*s", (int)m->key_len,
             (const char *)m->key);
  s->n++;
}

/* Reads until expect records arrived (20 s at most); exact: asks for one
 * more and waits 3 s for it, so that a record too many is seen. */
static int target_count(const char *topic, int expect, seen_t *s, int exact) {
  memset(s, 0, sizeof(*s));
  return kt_read_topic(kt_bootstrap(), topic, expect + exact,
                       exact ? 3000 : 20000, target_cb, s);
}

/* dlq inspect counts; replay with each filter, its header, its memory per
 * filter, a dry run, truncated letters. */
START_TEST(dlq_inspect_and_replay) {
  char t[128], d[160], out[16384];
  kt_unique_name(t, sizeof(t), "ctl-replay");
  snprintf(d, sizeof(d), "%s.dlq", t);
  kt_create_topics(t, 1, d);
  rd_kafka_t *p = kt_producer_new();
  letter(p, d, t, "a", "processor_failed", jan(1), "{\"a\":1}", 0);
  letter(p, d, t, "b", "bad_json", jan(2), "not json", 0);
  letter(p, d, t, "a", "retries_exhausted", jan(3), "{\"a\":2}", 0);
  char big[4000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  letter(p, d, t, "c", "too_large", jan(4), big, 1);
  kt_producer_done(p);

  ck_assert_int_eq(ctl(out, sizeof(out), "dlq inspect --topic %s", d), 0);
  ck_assert_ptr_nonnull(strstr(out, ": 4 letters"));
  ck_assert_ptr_nonnull(strstr(out, "by reason (4 distinct)"));
  ck_assert_ptr_nonnull(strstr(out, "       2  a\n"));
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "dlq inspect --topic %s --json --max 2", d),
                   0);
  json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  ck_assert_ptr_nonnull(j);
  ck_assert_str_eq(json_string_value(json_object_get(j, "topic")), d);
  ck_assert_str_eq(json_string_value(json_object_get(j, "key")), "a");
  ck_assert_int_eq(json_integer_value(json_object_get(j, "offset")), 0);
  ck_assert(json_is_array(json_object_get(j, "headers")));
  ck_assert_ptr_nonnull(strstr(
      json_string_value(json_object_get(j, "payload")), "processor_failed"));
  json_decref(j);
  ck_assert_ptr_nonnull(strchr(strchr(out, '\n') + 1, '\n'));

  seen_t s;
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "replay --dlq-topic %s --user a --dry-run", d),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "would replay DLQ [0] offset 0: user \"a\""));
  ck_assert_ptr_nonnull(strstr(out, "would replay DLQ [0] offset 2: user \"a\""));
  ck_assert_int_eq(target_count(t, 0, &s, 1), 0);

  ck_assert_int_eq(ctl(out, sizeof(out), "replay --dlq-topic %s --user a", d),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "replayed 2,"));
  ck_assert_int_eq(target_count(t, 2, &s, 0), 2);
  ck_assert_str_eq(s.keys[0], "a");
  ck_assert_str_eq(s.keys[1], "a");
  /* The same filter again: nothing new. */
  ck_assert_int_eq(ctl(out, sizeof(out), "replay --dlq-topic %s --user a", d),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "replayed 0,"));
  /* Another filter still sees the older letters. */
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "replay --dlq-topic %s --reason bad_json", d),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "replayed 1,"));
  ck_assert_int_eq(target_count(t, 3, &s, 0), 3);
  ck_assert_str_eq(s.keys[2], "b");
  /* Time range: 2 and 3 January (4 January excluded by --until). */
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "replay --dlq-topic %s --since 2026-01-02 "
                       "--until 2026-01-04T00:00:00Z",
                       d),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "replayed 2,"));
  ck_assert_int_eq(target_count(t, 5, &s, 0), 5);
  ck_assert_str_eq(s.keys[3], "b");
  ck_assert_str_eq(s.keys[4], "a");
  /* No filter: three replayed, the truncated one skipped and counted. */
  ck_assert_int_eq(ctl(out, sizeof(out), "replay --topic %s", t), 1);
  ck_assert_ptr_nonnull(strstr(out, "replayed 3,"));
  ck_assert_ptr_nonnull(strstr(out, "truncated 1"));
  ck_assert_int_eq(target_count(t, 8, &s, 1), 8);
  /* A DLQ that does not exist: exit 3, nothing replayed. */
  ck_assert_int_eq(ctl(out, sizeof(out), "replay --dlq-topic %s-none", d), 3);
  ck_assert_ptr_nonnull(strstr(out, "Unknown topic"));
}
END_TEST

/* A re-produce that fails is not committed past, and nothing behind it in
 * its partition is replayed; the next run replays both. */
START_TEST(replay_failure_not_committed) {
  char t[128], d[160], g[128], out[16384];
  kt_unique_name(t, sizeof(t), "ctl-rfail");
  kt_unique_name(g, sizeof(g), "ctl-rfail-g");
  snprintf(d, sizeof(d), "%s.dlq", t);
  kt_create_topics(t, 1, d);
  rd_kafka_t *p = kt_producer_new();
  char big[5000];
  memset(big, 'y', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  letter(p, d, t, "a", "processor_failed", jan(1), "{\"a\":0}", 0);
  letter(p, d, t, "d", "processor_failed", jan(1), big, 0);
  letter(p, d, t, "d", "processor_failed", jan(2), "{\"d\":2}", 0);
  kt_producer_done(p);

  seen_t s;
  ck_assert_int_eq(ctl(out, sizeof(out),
                       "replay --dlq-topic %s --group %s --batch 1 "
                       "-X producer.message.max.bytes=3000",
                       d, g),
                   1);
  ck_assert_ptr_nonnull(strstr(out, "failed 1"));
  ck_assert_ptr_nonnull(strstr(out, "held back behind a failure 1"));
  ck_assert_int_eq(committed(g, d), 1); /* past the first, not the failed */
  ck_assert_int_eq(target_count(t, 1, &s, 0), 1);

  ck_assert_int_eq(ctl(out, sizeof(out), "replay --dlq-topic %s --group %s",
                       d, g),
                   0);
  ck_assert_ptr_nonnull(strstr(out, "replayed 2,"));
  ck_assert_int_eq(committed(g, d), 3);
  ck_assert_int_eq(target_count(t, 3, &s, 1), 3);
  ck_assert_str_eq(s.keys[1], "d");
  ck_assert_str_eq(s.keys[2], "d");
}
END_TEST

int main(void) {
  Suite *su = suite_create("kmqctl_broker");
  TCase *tc = tcase_create("kmqctl");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, topics_bootstrap_dev);
  tcase_add_test(tc, health_probe);
  tcase_add_test(tc, stuck_then_skip);
  tcase_add_test(tc, skip_wrote_the_letter);
  tcase_add_test(tc, dlq_inspect_and_replay);
  tcase_add_test(tc, replay_failure_not_committed);
  suite_add_tcase(su, tc);
  return kt_run(su);
}
