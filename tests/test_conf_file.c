/* kmq_conf_load_file: substitution, profiles, librdkafka pass-through, errors
 * with file:line, a missing file; and config/kafka.yaml itself loads. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmq/conf.h"
#include "testutil.h"

#ifndef KMQ_SOURCE_DIR
#error "KMQ_SOURCE_DIR must name the source tree (config/kafka.yaml)"
#endif

/* Writes text to a fresh temp file; path receives its name. */
static void write_tmp(char *path, size_t size, const char *text) {
  snprintf(path, size, "/tmp/kmq-conf-XXXXXX.yaml");
  int fd = mkstemps(path, 5);
  ck_assert_int_ge(fd, 0);
  size_t n = strlen(text);
  ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
  close(fd);
}

/* Loads text with profile; returns the error, errstr filled. */
static kmq_err_t load(kmq_conf_t *c, const char *text, const char *profile,
                      char *errstr, size_t size, char *path, size_t psize) {
  write_tmp(path, psize, text);
  kmq_err_t e = kmq_conf_load_file(c, path, profile, errstr, size);
  unlink(path);
  return e;
}

START_TEST(substitution) {
  setenv("KMQ_T_BOOT", "10.0.0.1:9092", 1);
  unsetenv("KMQ_T_UNSET");
  kmq_conf_t *c = kmq_conf_new();
  char err[512], path[64];
  kmq_err_t e = load(c,
                     "kafka:\n"
                     "  bootstrap.servers: ${KMQ_T_BOOT:127.0.0.1:1}\n"
                     "  client.id: $${KMQ_T_UNSET}-${KMQ_T_UNSET:kmq}\n"
                     "kmq:\n"
                     "  topic: pre-${KMQ_T_UNSET:t}-${KMQ_T_BOOT}\n",
                     NULL, err, sizeof(err), path, sizeof(path));
  ck_assert_msg(!e, "%s", err);
  ck_assert_str_eq(kmq_conf_get(c, "bootstrap.servers"), "10.0.0.1:9092");
  ck_assert_str_eq(kmq_conf_get(c, "client.id"), "${KMQ_T_UNSET}-kmq");
  ck_assert_str_eq(kmq_conf_get(c, "kmq.topic"), "pre-t-10.0.0.1:9092");
  kmq_conf_destroy(c);

  /* ${VAR} without a default and VAR unset: an error at its line. */
  c = kmq_conf_new();
  e = load(c, "kafka:\n  client.id: a\n  bootstrap.servers: ${KMQ_T_UNSET}\n",
           NULL, err, sizeof(err), path, sizeof(path));
  ck_assert_int_eq(e, KMQ_ERR_BAD_FIELD);
  char want[128];
  snprintf(want, sizeof(want), "%s:3:22: bootstrap.servers:", path);
  ck_assert_msg(strstr(err, want) && strstr(err, "KMQ_T_UNSET is not set"),
                "%s", err);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(profiles) {
  const char *text = "profile: ${KMQ_T_PROFILE:development}\n"
                     "kmq: {topic: t}\n"
                     "profiles:\n"
                     "  development:\n"
                     "    topic: {retention.ms: 1000}\n"
                     "  production:\n"
                     "    topic: {partitions: 24}\n"
                     "    kmq: {sched.workers: 16}\n"
                     "  staging:\n"
                     "    topic: {partitions: 2, replication.factor: 2}\n";
  char err[512], path[64];
  unsetenv("KMQ_T_PROFILE");
  /* The file's default profile: built-in development, then the file's. */
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_msg(!load(c, text, NULL, err, sizeof(err), path, sizeof(path)),
                "%s", err);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.partitions"), 4);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.replication.factor"), 1);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.min.insync.replicas"), 1);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.retention.ms"), 1000);
  kmq_conf_destroy(c);
  /* Asked for by alias: built-in production (RF 3, min.insync 2) under the
   * file's overrides. */
  c = kmq_conf_new();
  ck_assert_msg(!load(c, text, "prod", err, sizeof(err), path, sizeof(path)),
                "%s", err);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.partitions"), 24);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.replication.factor"), 3);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.min.insync.replicas"), 2);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.sched.workers"), 16);
  kmq_conf_destroy(c);
  /* Through the environment, a profile only the file has. */
  setenv("KMQ_T_PROFILE", "staging", 1);
  c = kmq_conf_new();
  ck_assert_msg(!load(c, text, NULL, err, sizeof(err), path, sizeof(path)),
                "%s", err);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.partitions"), 2);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.replication.factor"), 2);
  kmq_conf_destroy(c);
  unsetenv("KMQ_T_PROFILE");
  /* A profile that exists nowhere. */
  c = kmq_conf_new();
  ck_assert_int_eq(load(c, text, "qa", err, sizeof(err), path, sizeof(path)),
                   KMQ_ERR_BAD_FIELD);
  ck_assert_msg(strstr(err, "no profile \"qa\""), "%s", err);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(passthrough) {
  char err[512], path[64];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_msg(!load(c,
                      "kafka:\n"
                      "  socket.keepalive.enable: true\n"
                      "  ssl:\n"
                      "    ca:\n"
                      "      location: /etc/ssl/ca.pem\n"
                      "producer: {linger.ms: 25, batch.size: 65536}\n"
                      "consumer: {fetch.wait.max.ms: 50}\n",
                      NULL, err, sizeof(err), path, sizeof(path)),
                "%s", err);
  ck_assert_str_eq(kmq_conf_get(c, "socket.keepalive.enable"), "true");
  ck_assert_str_eq(kmq_conf_get(c, "ssl.ca.location"), "/etc/ssl/ca.pem");
  ck_assert_str_eq(kmq_conf_get(c, "producer.linger.ms"), "25");
  ck_assert_str_eq(kmq_conf_get(c, "consumer.fetch.wait.max.ms"), "50");
  ck_assert_ptr_null(kmq_conf_get(c, "linger.ms"));
  /* ...and librdkafka takes them when a client is built. */
  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(c, KMQ_CLIENT_PRODUCER, err, sizeof(err));
  ck_assert_msg(rc, "%s", err);
  char v[64];
  size_t vn = sizeof(v);
  ck_assert_int_eq(rd_kafka_conf_get(rc, "linger.ms", v, &vn),
                   RD_KAFKA_CONF_OK);
  ck_assert_str_eq(v, "25");
  rd_kafka_conf_destroy(rc);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(errors_name_file_and_line) {
  char err[512], path[64], want[128];
  struct {
    const char *text;
    kmq_err_t err;
    int line, col;
    const char *says;
  } cases[] = {
      {"kafka:\n  linger.ms: 5\n  no.such.key: 1\n", KMQ_ERR_CONF_UNKNOWN, 3,
       16, "no.such.key"},
      {"kmq:\n  topic: t\n  sched.workerz: 4\n", KMQ_ERR_CONF_UNKNOWN, 3, 18,
       "kmq.sched.workerz"},
      {"kmq:\n  proc.retries: lots\n", KMQ_ERR_CONF_INVALID, 2, 17,
       "expected an integer"},
      {"producer:\n  acks: sometimes\n", KMQ_ERR_CONF_INVALID, 2, 9,
       "producer.acks"},
      {"kafka: {linger.ms: 1}\nbrokers: x\n", KMQ_ERR_CONF_UNKNOWN, 2, 1,
       "unknown section \"brokers\""},
      {"kafka:\n  bootstrap.servers: [a, b]\n", KMQ_ERR_BAD_FIELD, 2, 22,
       "expected a value"},
      {"kafka:\n  x: 'unterminated\n", KMQ_ERR_BAD_FIELD, 3, 1, ""},
      {"profiles:\n  development:\n    topic: {partitionz: 3}\n",
       KMQ_ERR_CONF_UNKNOWN, 3, 25, "kmq.topic.partitionz"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kmq_conf_t *c = kmq_conf_new();
    kmq_err_t e = load(c, cases[i].text, i == 7 ? "dev" : NULL, err,
                       sizeof(err), path, sizeof(path));
    ck_assert_msg(e == cases[i].err, "case %zu: %d %s", i, e, err);
    snprintf(want, sizeof(want), "%s:%d:%d: ", path, cases[i].line,
             cases[i].col);
    ck_assert_msg(!strncmp(err, want, strlen(want)) &&
                      strstr(err, cases[i].says),
                  "case %zu: want \"%s...%s\", got \"%s\"", i, want,
                  cases[i].says, err);
    kmq_conf_destroy(c);
  }
}
END_TEST

START_TEST(secret_names) {
  ck_assert_int_eq(kmq_conf_is_secret("sasl.password"), 1);
  ck_assert_int_eq(kmq_conf_is_secret("consumer.ssl.key.password"), 1);
  ck_assert_int_eq(kmq_conf_is_secret("sasl.oauthbearer.client.secret"), 1);
  ck_assert_int_eq(kmq_conf_is_secret("linger.ms"), 0);
}
END_TEST

START_TEST(missing_file) {
  char err[512];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_load_file(c, "/nonexistent/kafka.yaml", NULL, err,
                                      sizeof(err)),
                   KMQ_ERR_IO);
  ck_assert_msg(strstr(err, "/nonexistent/kafka.yaml: No such file"), "%s",
                err);
  kmq_conf_destroy(c);
}
END_TEST

/* The committed example loads with both profiles and gives the design's
 * numbers. */
START_TEST(repo_example) {
  char err[512];
  unsetenv("KMQ_PROFILE");
  unsetenv("KMQ_TOPIC");
  setenv("KMQ_SASL_PASSWORD", "s3cret", 1);
  const char *path = KMQ_SOURCE_DIR "/config/kafka.yaml";
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_msg(!kmq_conf_load_file(c, path, NULL, err, sizeof(err)), "%s",
                err);
  ck_assert_str_eq(kmq_conf_get(c, "kmq.topic"), "wecom-kf");
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.partitions"), 4);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.replication.factor"), 1);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.min.insync.replicas"), 1);
  kmq_conf_destroy(c);
  c = kmq_conf_new();
  ck_assert_msg(!kmq_conf_load_file(c, path, "production", err, sizeof(err)),
                "%s", err);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.partitions"), 12);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.replication.factor"), 3);
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.min.insync.replicas"), 2);
  ck_assert_str_eq(kmq_conf_get(c, "kmq.topic.compression.type"), "producer");
  ck_assert_int_eq(kmq_conf_get_int(c, "kmq.topic.max.message.bytes"),
                   1048588);
  ck_assert_str_eq(kmq_conf_get(c, "sasl.password"), "s3cret");
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("conf_file");
  TCase *tc = tcase_create("conf_file");
  tcase_add_test(tc, substitution);
  tcase_add_test(tc, profiles);
  tcase_add_test(tc, passthrough);
  tcase_add_test(tc, errors_name_file_and_line);
  tcase_add_test(tc, secret_names);
  tcase_add_test(tc, missing_file);
  tcase_add_test(tc, repo_example);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
