/* Secrets never appear in a text kmq makes (lib/redact.h, issue 12): a
 * planted secret value is looked for in kmq_conf_dump()'s output, in the
 * errors of kmq_conf_set() and of every constructor that builds a client,
 * and in everything written to stderr meanwhile (kmq's and librdkafka's log
 * lines). No broker is needed: the clients fail, or log, before connecting. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmq/kmq.h"
#include "lib/redact.h"

#include "testutil.h"

/* Two words, so that a quoted remainder of the value is caught too. */
#define SECRET "Plant3d-s3cret-7fa1"
#define SECRET2 "0therPlant3d-9c2e"

/* Everything a test saw, to be searched for the secrets at the end. */
typedef struct {
  char text[65536];
  size_t len;
} seen_t;

static void seen_add(seen_t *s, const char *what, const char *text) {
  int n = snprintf(s->text + s->len, sizeof(s->text) - s->len, "%s: %s\n",
                   what, text);
  if (n > 0)
    s->len += (size_t)n < sizeof(s->text) - s->len
                  ? (size_t)n
                  : sizeof(s->text) - s->len - 1;
}

static void assert_clean(const seen_t *s) {
  ck_assert_msg(!strstr(s->text, SECRET) && !strstr(s->text, SECRET2),
                "a secret leaked into:\n%s", s->text);
  /* Nor a part of one (a cut text ends inside it). */
  ck_assert_msg(!strstr(s->text, "s3cret") && !strstr(s->text, "Plant3d"),
                "part of a secret leaked into:\n%s", s->text);
}

/* stderr into a temporary file, so that log lines can be searched. */
typedef struct {
  int saved;
  FILE *f;
} capture_t;

static void capture_begin(capture_t *c) {
  fflush(stderr);
  c->f = tmpfile();
  ck_assert_ptr_nonnull(c->f);
  c->saved = dup(STDERR_FILENO);
  ck_assert_int_ge(c->saved, 0);
  ck_assert_int_ge(dup2(fileno(c->f), STDERR_FILENO), 0);
}

/* Appends what was written since capture_begin to s; returns whether the
 * log contained "[redacted]". */
static int capture_end(capture_t *c, seen_t *s) {
  fflush(stderr);
  dup2(c->saved, STDERR_FILENO);
  close(c->saved);
  char log[32768];
  rewind(c->f);
  size_t n = fread(log, 1, sizeof(log) - 1, c->f);
  log[n] = '\0';
  fclose(c->f);
  seen_add(s, "stderr", log);
  return strstr(log, KMQ__REDACTED) != NULL;
}

START_TEST(secret_names) {
  const char *secret[] = {
      "sasl.password", "ssl.key.password", "ssl.keystore.password",
      "ssl.key.pem", "sasl.oauthbearer.client.secret",
      "sasl.oauthbearer.config", "producer.sasl.password",
      "consumer.ssl.key.pem", "SASL.PASSWORD", "kmq.wecom.token",
      "kmq.wecom.aes_key", "kmq.wecom.encoding_aes_key", "kmq.wecom.secret"};
  const char *plain[] = {"bootstrap.servers", "sasl.username", "kmq.topic",
                         "ssl.certificate.pem", "ssl.key.location",
                         "security.protocol", "kmq.sched.workers"};
  for (size_t i = 0; i < sizeof(secret) / sizeof(*secret); i++)
    ck_assert_msg(kmq__conf_is_secret(secret[i]), "%s", secret[i]);
  for (size_t i = 0; i < sizeof(plain) / sizeof(*plain); i++)
    ck_assert_msg(!kmq__conf_is_secret(plain[i]), "%s", plain[i]);
}
END_TEST

START_TEST(redact_text) {
  char buf[64];
  snprintf(buf, sizeof(buf), "a %s b %s", SECRET, SECRET);
  kmq__redact(buf, sizeof(buf), SECRET);
  ck_assert_str_eq(buf, "a [redacted] b [redacted]");

  /* A word of a multi-word value, and the value of a key=value word. */
  snprintf(buf, sizeof(buf), "Unrecognized config beginning at: abcd1234");
  kmq__redact(buf, sizeof(buf), "principal=x abcd1234");
  ck_assert_str_eq(buf, "Unrecognized config beginning at: [redacted]");
  snprintf(buf, sizeof(buf), "bad scope wxyz9876 here");
  kmq__redact(buf, sizeof(buf), "principal=x scope=wxyz9876");
  ck_assert_str_eq(buf, "bad scope [redacted] here");

  /* Longer after redaction than the buffer: cut, never overflowed. */
  char small[16];
  snprintf(small, sizeof(small), "0123456789ab%s", "xy");
  kmq__redact(small, sizeof(small), "xy");
  ck_assert_str_eq(small, "0123456789ab[re");

  /* The text was cut inside the secret: its remaining prefix goes too. */
  snprintf(buf, sizeof(buf), "key: %.8s", SECRET);
  kmq__redact(buf, sizeof(buf), SECRET);
  ck_assert_str_eq(buf, "key: [redacted]");

  /* Short words are not redacted (they would hit unrelated text). */
  snprintf(buf, sizeof(buf), "x is fine");
  kmq__redact(buf, sizeof(buf), "principal=x " SECRET);
  ck_assert_str_eq(buf, "x is fine");
  kmq__redact(buf, sizeof(buf), "");
  kmq__redact(buf, sizeof(buf), NULL);
  ck_assert_str_eq(buf, "x is fine");
}
END_TEST

static void dump_cb(const char *name, const char *value, const char *desc,
                    void *opaque) {
  char line[1024];
  snprintf(line, sizeof(line), "%s = %s (%s)", name, value, desc);
  seen_add(opaque, "dump", line);
}

START_TEST(conf_dump_redacts) {
  seen_t seen = {.len = 0}; /* 64 KiB, on the test's stack */
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(conf, "sasl.password", SECRET, errstr,
                                sizeof(errstr)), KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(conf, "producer.ssl.key.password", SECRET2,
                                errstr, sizeof(errstr)), KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(conf, "sasl.oauthbearer.config",
                                "principal=app " SECRET, errstr,
                                sizeof(errstr)), KMQ_OK);
  ck_assert_int_eq(kmq_conf_set(conf, "bootstrap.servers", "127.0.0.1:1",
                                errstr, sizeof(errstr)), KMQ_OK);
  kmq_conf_dump(conf, dump_cb, &seen);
  assert_clean(&seen);
  /* The keys are listed, their values redacted; the others are shown. */
  ck_assert_ptr_nonnull(strstr(seen.text, "sasl.password = [redacted]"));
  ck_assert_ptr_nonnull(
      strstr(seen.text, "producer.ssl.key.password = [redacted]"));
  ck_assert_ptr_nonnull(strstr(seen.text, "bootstrap.servers = 127.0.0.1:1"));
  ck_assert_ptr_nonnull(strstr(seen.text, "kmq.topic = "));
  /* The application still gets its value back. */
  ck_assert_str_eq(kmq_conf_get(conf, "sasl.password"), SECRET);
  kmq_conf_destroy(conf);
}
END_TEST

START_TEST(conf_set_errors_redact) {
  seen_t seen = {.len = 0}; /* 64 KiB, on the test's stack */
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  /* kmq keys that do not exist yet (the WeCom ones), and a librdkafka one
   * this build of librdkafka lacks (no libcurl). A bad value of a kmq
   * integer key is quoted unless the key is a secret (none is yet). */
  const char *bad[][2] = {
      {"kmq.wecom.token", SECRET},
      {"kmq.wecom.aes_key", SECRET},
      {"sasl.oauthbearer.client.secret", SECRET},
      {"consumer.sasl.oauthbearer.client.secret", SECRET},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    errstr[0] = '\0';
    ck_assert_int_ne(kmq_conf_set(conf, bad[i][0], bad[i][1], errstr,
                                  sizeof(errstr)), KMQ_OK);
    ck_assert_msg(errstr[0], "no error text for %s", bad[i][0]);
    seen_add(&seen, bad[i][0], errstr);
  }
  assert_clean(&seen);
  kmq_conf_destroy(conf);
}
END_TEST

static kmq_proc_result_t on_any(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                                void *opaque) {
  (void)msg, (void)ctx, (void)opaque;
  return KMQ_PROC_OK;
}

/* A conf whose every client fails in rd_kafka_new: ssl.key.pem is not a key,
 * so librdkafka refuses it (after reading it). */
static kmq_conf_t *bad_ssl_conf(void) {
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  const char *kv[][2] = {{"bootstrap.servers", "127.0.0.1:1"},
                         {"group.id", "kmq-test-redact"},
                         {"kmq.topic", "kmq-test-redact"},
                         {"kmq.sched.workers", "1"},
                         {"security.protocol", "ssl"},
                         {"ssl.key.pem", SECRET},
                         {"ssl.key.password", SECRET2}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(*kv); i++)
    ck_assert_msg(!kmq_conf_set(conf, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s: %s", kv[i][0], errstr);
  return conf;
}

START_TEST(client_errors_redact) {
  seen_t seen = {.len = 0}; /* 64 KiB, on the test's stack */
  char errstr[512];
  kmq_conf_t *conf = bad_ssl_conf();
  capture_t cap;
  capture_begin(&cap);

  errstr[0] = '\0';
  ck_assert_ptr_null(
      kmq_producer_new(conf, NULL, NULL, NULL, NULL, errstr, sizeof(errstr)));
  seen_add(&seen, "kmq_producer_new", errstr);
  errstr[0] = '\0';
  ck_assert_ptr_null(kmq_consumer_new(conf, NULL, errstr, sizeof(errstr)));
  seen_add(&seen, "kmq_consumer_new", errstr);
  errstr[0] = '\0';
  ck_assert_ptr_null(kmq_dlq_new(conf, NULL, NULL, errstr, sizeof(errstr)));
  seen_add(&seen, "kmq_dlq_new", errstr);
  errstr[0] = '\0';
  ck_assert_int_ne(kmq_admin_create_topic(conf, "kmq-test-redact", 1, 1, NULL,
                                          1, 1000, errstr, sizeof(errstr)),
                   KMQ_OK);
  seen_add(&seen, "kmq_admin_create_topic", errstr);

  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_ptr_nonnull(reg);
  ck_assert_int_eq(kmq_proc_set_default(reg, on_any, NULL), KMQ_OK);
  errstr[0] = '\0';
  ck_assert_ptr_null(
      kmq_runtime_new(conf, reg, NULL, NULL, errstr, sizeof(errstr)));
  seen_add(&seen, "kmq_runtime_new", errstr);
  kmq_proc_registry_destroy(reg);

  /* kmq_conf_build_rdkafka's own client, as an application builds one. */
  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_PRODUCER, errstr, sizeof(errstr));
  ck_assert_ptr_nonnull(rc);
  char text[256];
  snprintf(text, sizeof(text), "pem %s password %s", SECRET, SECRET2);
  kmq__rdk_conf_redact(rc, text, sizeof(text));
  ck_assert_str_eq(text, "pem [redacted] password [redacted]");
  rd_kafka_conf_destroy(rc);
  /* The same from the kmq_conf_t, for an application's own texts. */
  snprintf(text, sizeof(text), "pem %s password %s", SECRET, SECRET2);
  kmq_conf_redact(conf, text, sizeof(text));
  ck_assert_str_eq(text, "pem [redacted] password [redacted]");

  capture_end(&cap, &seen);
  /* Each failed with librdkafka's reason, not with an empty text. */
  ck_assert_msg(strstr(seen.text, "ssl.key.pem failed"), "%s", seen.text);
  assert_clean(&seen);
  kmq_conf_destroy(conf);
}
END_TEST

/* librdkafka quotes a bad sasl.oauthbearer.config in an error that reaches
 * kmq's error callback (the producer's, served by its poller thread) or
 * kmq's log callback (its dead-letter producer has no error callback): both
 * must redact it. */
START_TEST(librdkafka_logs_redact) {
  seen_t seen = {.len = 0}; /* 64 KiB, on the test's stack */
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", "127.0.0.1:1"},
      {"group.id", "kmq-test-redact"},
      {"kmq.topic", "kmq-test-redact"},
      {"security.protocol", "sasl_plaintext"},
      {"sasl.mechanisms", "OAUTHBEARER"},
      {"enable.sasl.oauthbearer.unsecure.jwt", "true"},
      {"sasl.oauthbearer.config", "principal=app " SECRET}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(*kv); i++)
    ck_assert_msg(!kmq_conf_set(conf, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s: %s", kv[i][0], errstr);
  capture_t cap;
  capture_begin(&cap);
  kmq_producer_t *p =
      kmq_producer_new(conf, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  ck_assert_msg(p, "%s", errstr);
  /* The token refresh fails at once, on librdkafka's threads. */
  usleep(1000 * 1000);
  kmq_producer_destroy(p);
  int redacted = capture_end(&cap, &seen);
  assert_clean(&seen);
  ck_assert_msg(redacted, "librdkafka did not quote the value (nothing was "
                "redacted), the test proves nothing:\n%s", seen.text);
  kmq_conf_destroy(conf);
}
END_TEST

int main(void) {
  Suite *s = suite_create("redact");
  TCase *tc = tcase_create("redact");
  tcase_add_test(tc, secret_names);
  tcase_add_test(tc, redact_text);
  tcase_add_test(tc, conf_dump_redacts);
  tcase_add_test(tc, conf_set_errors_redact);
  tcase_add_test(tc, client_errors_redact);
  tcase_add_test(tc, librdkafka_logs_redact);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
