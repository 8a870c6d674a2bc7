/* A poison record of any size never stalls its partition (issue 9, item 4),
 * on a real broker with kmq's defaults (kmq.msg.max.bytes 960 KiB, the DLQ
 * producer's message.max.bytes 1000000) and no fallback hook: records of
 * 1 MiB + 1 and 10 MB (too_large) and one just under kmq.msg.max.bytes
 * whose processor fails and whose escaped envelope is ~3.6 MB all end in the
 * DLQ as truncated letters with their size and SHA-256, nothing is LOST,
 * the user's other messages are processed and the committed offset reaches
 * the end of every partition.
 *
 * And the start-up check of the DLQ topic's own limit: a DLQ topic whose
 * max.message.bytes is below the DLQ producer's message.max.bytes is
 * refused by kmq_runtime_new with both values named; a missing DLQ topic
 * or an unreachable cluster only costs a WARN line and at most
 * kmq.dlq.check.timeout.ms (+1 s). */
#include <check.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmq/runtime.h"
#include "testutil.h"
#include "traffic.h"

#define NPART 3
#define USERS 10
#define PER_USER 20
#define BIG1 (1024 * 1024 + 1)   /* just over kmq.msg.max.bytes */
#define BIG2 (10 * 1000 * 1000)  /* far over */
#define POISON (900 * 1000)      /* under kmq.msg.max.bytes, escapes to 3.6 MB */
#define NPOISON 3
#define DLQ_MAX_BYTES 1000000    /* librdkafka's default message.max.bytes */

static char topic[96], dlq_topic[112], user0[16];

/* The three poison values, kept to check their dead letters. */
typedef struct {
  const char *reason;
  unsigned char *value;
  size_t len;
  char sha256[65];
  int seen;
} poison_t;

static poison_t poison[NPOISON];

static void sha256_hex(const void *p, size_t n, char hex[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  ck_assert(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL));
  for (unsigned i = 0; i < mdlen; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static void make_poison(void) {
  /* 1 MiB + 1 of multibyte text: a "payload" prefix cut on a character. */
  static const char unit[] = "\xe4\xb8\xad\xf0\x9f\x98\x80" "a";
  poison_t *p = &poison[0];
  p->reason = "too_large";
  p->len = BIG1;
  p->value = malloc(p->len);
  size_t whole = p->len / 8 * 8;
  for (size_t i = 0; i < p->len; i++)
    p->value[i] = i < whole ? (unsigned char)unit[i % 8] : 'z';
  /* 10 MB of bytes that are not UTF-8: a "payload_base64" prefix. */
  p = &poison[1];
  p->reason = "too_large";
  p->len = BIG2;
  p->value = malloc(p->len);
  unsigned s = 7;
  for (size_t i = 0; i < p->len; i++) {
    s = s * 1103515245u + 12345u;
    p->value[i] = (unsigned char)(s >> 16) | 0x80;
  }
  p->value[0] = 0xff;
  /* Under kmq.msg.max.bytes, so dispatched; quotes and control characters
   * make its envelope 4 bytes a byte: far over message.max.bytes. */
  p = &poison[2];
  p->reason = "processor_failed";
  p->len = POISON;
  p->value = malloc(p->len);
  for (size_t i = 0; i < p->len; i++)
    p->value[i] = i % 2 ? '"' : '\x01';
  for (int k = 0; k < NPOISON; k++)
    sha256_hex(poison[k].value, poison[k].len, poison[k].sha256);
}

static void setup_topics(void) {
  char errstr[512];
  kt_unique_name(topic, sizeof(topic), "kmq-dlqbig");
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  /* The main topic takes 11 MiB records; the DLQ keeps the broker's
   * default limit (1048588), above the DLQ producer's 1000000. */
  const char *big[] = {"max.message.bytes", "11534336", NULL};
  ck_assert_msg(!kmq_admin_create_topic(c, topic, NPART, 1, big, 0, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  ck_assert_msg(!kmq_admin_create_topic(c, dlq_topic, NPART, 1, NULL, 0,
                                        30000, errstr, sizeof(errstr)),
                "%s", errstr);
  kmq_conf_destroy(c);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  (void)rk;
  if (m->err)
    atomic_fetch_add((atomic_int *)opaque, 1);
}

/* A raw producer that may send 10 MB records (kmq's producer keeps
 * librdkafka's 1000000). */
static void produce_one(rd_kafka_t *rk, const char *key, const void *v,
                        size_t len) {
  ck_assert_int_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                     RD_KAFKA_V_KEY(key, strlen(key)),
                                     RD_KAFKA_V_VALUE((void *)v, len),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_END),
                   0);
}

/* Users 0..USERS-1 get PER_USER traffic envelopes each; user 0's poison
 * records sit between its own messages, so that they block it if they
 * never finish. */
static void produce_all(void) {
  char errstr[512], buf[1024], user[16];
  atomic_int failed = 0;
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  ck_assert_int_eq(rd_kafka_conf_set(rc, "bootstrap.servers", kt_bootstrap(),
                                     errstr, sizeof(errstr)),
                   RD_KAFKA_CONF_OK);
  ck_assert_int_eq(rd_kafka_conf_set(rc, "message.max.bytes", "12000000",
                                     errstr, sizeof(errstr)),
                   RD_KAFKA_CONF_OK);
  rd_kafka_conf_set(rc, "partitioner", "murmur2_random", errstr,
                    sizeof(errstr));
  rd_kafka_conf_set(rc, "acks", "all", errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "linger.ms", "5", errstr, sizeof(errstr));
  rd_kafka_conf_set_dr_msg_cb(rc, on_delivery);
  rd_kafka_conf_set_opaque(rc, &failed);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  kmq_traffic_user(0, user0, sizeof(user0));
  for (int s = 0; s < PER_USER; s++) {
    for (int u = 0; u < USERS; u++) {
      int n = kmq_traffic_envelope(u, s, buf, sizeof(buf));
      kmq_traffic_user(u, user, sizeof(user));
      produce_one(rk, user, buf, (size_t)n);
    }
    if (s % 6 == 5) /* after seq 5, 11, 17 */
      produce_one(rk, user0, poison[s / 6].value, poison[s / 6].len);
  }
  ck_assert_int_eq(rd_kafka_flush(rk, 30000), 0);
  ck_assert_int_eq(atomic_load(&failed), 0);
  rd_kafka_destroy(rk);
}

static atomic_int processed_user0;

/* Processes the traffic, fails the record that is far too big to be one. */
static kmq_proc_result_t raw_proc(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)opaque;
  size_t len, klen;
  kmq_proc_ctx_value(ctx, &len);
  const char *key = kmq_proc_ctx_user(ctx, &klen);
  if (len > 4096) {
    kmq_proc_ctx_set_reason(ctx, "poison record of %zu bytes", len);
    return KMQ_PROC_FAIL;
  }
  if (klen == strlen(user0) && !memcmp(key, user0, klen))
    atomic_fetch_add(&processed_user0, 1);
  return KMQ_PROC_OK;
}

/* Each dead letter is one of the poison records, truncated, and fits. */
static void on_dlq(const rd_kafka_message_t *m, void *opaque) {
  int *other = opaque;
  ck_assert_uint_le(m->len, DLQ_MAX_BYTES);
  ck_assert_uint_eq(m->key_len, strlen(user0));
  ck_assert(!memcmp(m->key, user0, m->key_len));
  json_error_t je;
  json_t *j = json_loadb(m->payload, m->len, 0, &je);
  ck_assert_msg(j, "dead letter is not JSON: %s", je.text);
  json_int_t size = json_integer_value(json_object_get(j, "payload_size"));
  poison_t *p = NULL;
  for (int k = 0; k < NPOISON; k++)
    if ((json_int_t)poison[k].len == size)
      p = &poison[k];
  if (!p) {
    (*other)++;
    json_decref(j);
    return;
  }
  p->seen++;
  ck_assert_str_eq(json_string_value(json_object_get(j, "reason")),
                   p->reason);
  ck_assert(json_is_true(json_object_get(j, "payload_truncated")));
  ck_assert_str_eq(json_string_value(json_object_get(j, "payload_sha256")),
                   p->sha256);
  /* The prefix is the original's (text ones decode back to their bytes). */
  json_t *pv = json_object_get(j, "payload");
  if (pv) {
    size_t n = json_string_length(pv);
    ck_assert_uint_gt(n, 0);
    ck_assert(!memcmp(json_string_value(pv), p->value, n));
  } else {
    ck_assert(json_is_string(json_object_get(j, "payload_base64")));
    ck_assert_uint_gt(
        json_string_length(json_object_get(j, "payload_base64")), 0);
  }
  char h[64];
  ck_assert_str_eq(kt_header(m, "dlq_reason", h, sizeof(h)), p->reason);
  json_decref(j);
}

START_TEST(poison_records_of_any_size_end_in_the_dlq) {
  make_poison();
  setup_topics();
  produce_all();
  char group[64], errstr[512];
  kt_unique_name(group, sizeof(group), "dlqbig");
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr));
  kmq_conf_set(c, "group.id", group, errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.commit.interval.ms", "200", errstr, sizeof(errstr));
  kmq_conf_set(c, "kmq.sched.workers", "2", errstr, sizeof(errstr));
  /* kmq.msg.max.bytes and every message.max.bytes stay at their defaults,
   * and there is no fallback hook: the README's embedding. */
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, raw_proc, NULL), KMQ_OK);
  kmq_runtime_t *rt = kmq_runtime_new(c, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  kmq_runtime_metrics_t mx;
  int64_t deadline = kt_now_ms() + 60000;
  do {
    ck_assert_int_ge(kmq_runtime_poll(rt, 100), 0);
    kmq_runtime_metrics(rt, &mx);
  } while ((mx.processed < USERS * PER_USER ||
            mx.failed + mx.dlq_lost < NPOISON) &&
           kt_now_ms() < deadline);
  ck_assert_int_eq(mx.dlq_lost, 0);
  ck_assert_int_eq(mx.failed, NPOISON);
  ck_assert_int_eq(mx.processed, USERS * PER_USER);
  ck_assert_int_eq(atomic_load(&processed_user0), PER_USER);
  kmq_runtime_destroy(rt);
  /* Every offset finished: nothing is read again after a restart. */
  kt_assert_committed_at_end(kt_bootstrap(), group, topic);

  int other = 0;
  ck_assert_int_eq(
      kt_read_topic(kt_bootstrap(), dlq_topic, NPOISON, 30000, on_dlq, &other),
      NPOISON);
  ck_assert_int_eq(other, 0);
  for (int k = 0; k < NPOISON; k++) {
    ck_assert_msg(poison[k].seen == 1, "poison %d seen %d times", k,
                  poison[k].seen);
    free(poison[k].value);
  }
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

typedef struct {
  atomic_int warned;
  char line[1024];
} warn_seen_t;

static void on_log(int level, const char *fac, const char *msg, void *o) {
  warn_seen_t *w = o;
  if (level == 4 && !strcmp(fac, "runtime") &&
      strstr(msg, "max.message.bytes was not checked")) {
    snprintf(w->line, sizeof(w->line), "%s", msg);
    atomic_fetch_add(&w->warned, 1);
  }
}

/* A runtime on the main topic with the given DLQ topic and bootstrap;
 * NULL with errstr when refused. */
static kmq_runtime_t *runtime_with_dlq(const char *bootstrap, const char *dlq,
                                       const char *check_ms, warn_seen_t *w,
                                       kmq_proc_registry_t *reg,
                                       kmq_conf_t **c, char *errstr,
                                       size_t size) {
  *c = kmq_conf_new();
  ck_assert(!kmq_conf_set(*c, "bootstrap.servers", bootstrap, errstr, size));
  ck_assert(!kmq_conf_set(*c, "kmq.topic", topic, errstr, size));
  ck_assert(!kmq_conf_set(*c, "kmq.dlq.topic", dlq, errstr, size));
  ck_assert(!kmq_conf_set(*c, "group.id", "dlqcheck", errstr, size));
  if (check_ms)
    ck_assert(!kmq_conf_set(*c, "kmq.dlq.check.timeout.ms", check_ms, errstr,
                            size));
  kmq_conf_set_log_cb(*c, on_log, w);
  return kmq_runtime_new(*c, reg, NULL, NULL, errstr, size);
}

START_TEST(dlq_topic_too_small_is_refused_at_start) {
  char errstr[1024], small[128], missing[128];
  kt_unique_name(topic, sizeof(topic), "dlqcheck");
  kt_unique_name(small, sizeof(small), "dlqcheck-small");
  kt_unique_name(missing, sizeof(missing), "dlqcheck-missing");
  kmq_conf_t *c = kmq_conf_new();
  kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr, sizeof(errstr));
  ck_assert(!kmq_admin_create_topic(c, topic, 1, 1, NULL, 0, 30000, errstr,
                                    sizeof(errstr)));
  const char *small_cfg[] = {"max.message.bytes", "500000", NULL};
  ck_assert_msg(!kmq_admin_create_topic(c, small, 1, 1, small_cfg, 0, 30000,
                                        errstr, sizeof(errstr)),
                "%s", errstr);
  /* Kafka's own default (1048588) takes librdkafka's 1000000. */
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  ck_assert(!kmq_admin_create_topic(c, dlq_topic, 1, 1, NULL, 0, 30000,
                                    errstr, sizeof(errstr)));
  kmq_conf_destroy(c);
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_int_eq(kmq_proc_set_raw(reg, raw_proc, NULL), KMQ_OK);

  warn_seen_t w = {0};
  kmq_runtime_t *rt = runtime_with_dlq(kt_bootstrap(), small, NULL, &w, reg,
                                       &c, errstr, sizeof(errstr));
  ck_assert_msg(!rt, "a DLQ topic of 500000 bytes was accepted");
  ck_assert_msg(strstr(errstr, "max.message.bytes=500000") &&
                    strstr(errstr, "message.max.bytes=1000000") &&
                    strstr(errstr, small),
                "%s", errstr);
  kmq_conf_destroy(c);

  /* The same with producer.message.max.bytes lowered to fit it (and
   * kmq.msg.max.bytes with it): accepted. */
  c = kmq_conf_new();
  ck_assert(!kmq_conf_set(c, "bootstrap.servers", kt_bootstrap(), errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.topic", topic, errstr, sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.dlq.topic", small, errstr, sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "group.id", "dlqcheck", errstr, sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "producer.message.max.bytes", "500000", errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.msg.max.bytes", "400000", errstr,
                          sizeof(errstr)));
  rt = kmq_runtime_new(c, reg, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  kmq_runtime_destroy(rt);
  kmq_conf_destroy(c);

  /* A DLQ topic of Kafka's default size: no refusal, no warning. */
  rt = runtime_with_dlq(kt_bootstrap(), dlq_topic, NULL, &w, reg, &c, errstr,
                        sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  ck_assert_int_eq(atomic_load(&w.warned), 0);
  kmq_runtime_destroy(rt);
  kmq_conf_destroy(c);

  /* No DLQ topic yet (created on first use, or by hand later): a WARN line
   * says what was not checked, and the runtime starts. */
  rt = runtime_with_dlq(kt_bootstrap(), missing, NULL, &w, reg, &c, errstr,
                        sizeof(errstr));
  ck_assert_msg(rt, "%s", errstr);
  ck_assert_int_eq(atomic_load(&w.warned), 1);
  ck_assert_msg(strstr(w.line, missing), "%s", w.line);
  kmq_runtime_destroy(rt);
  kmq_conf_destroy(c);

  /* Nothing listens: the check gives up within its bound. */
  int64_t t0 = kt_now_ms();
  rt = runtime_with_dlq("127.0.0.1:1", dlq_topic, "500", &w, reg, &c, errstr,
                        sizeof(errstr));
  int64_t took = kt_now_ms() - t0;
  ck_assert_msg(rt, "%s", errstr);
  ck_assert_int_eq(atomic_load(&w.warned), 2);
  ck_assert_msg(took < 500 + 1000 + 1500, "runtime_new took %lld ms",
                (long long)took);
  kmq_runtime_destroy(rt);
  kmq_conf_destroy(c);
  kmq_proc_registry_destroy(reg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("dlq_broker");
  TCase *tc = tcase_create("poison");
  tcase_add_test(tc, poison_records_of_any_size_end_in_the_dlq);
  tcase_add_test(tc, dlq_topic_too_small_is_refused_at_start);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
