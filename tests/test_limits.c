/* Size limits checked at start (lib/limits.h): kmq.msg.max.bytes must fit
 * the producers' message.max.bytes with room for key and headers. The
 * refusal names both keys and values; the defaults agree. No broker: the
 * clients are created, never connected. */
#include <check.h>
#include <string.h>

#include "kmq/producer.h"
#include "kmq/runtime.h"
#include "lib/limits.h"
#include "testutil.h"

static kmq_conf_t *conf(const char *msg_max, const char *producer_max) {
  char errstr[256];
  kmq_conf_t *c = kmq_conf_new();
  ck_assert(!kmq_conf_set(c, "bootstrap.servers", "127.0.0.1:1", errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "kmq.topic", "kmq-limits", errstr,
                          sizeof(errstr)));
  ck_assert(!kmq_conf_set(c, "group.id", "kmq-limits", errstr,
                          sizeof(errstr)));
  /* No broker to ask about the DLQ topic (test_dlq_broker covers it). */
  ck_assert(!kmq_conf_set(c, "kmq.dlq.check.timeout.ms", "0", errstr,
                          sizeof(errstr)));
  if (msg_max)
    ck_assert(!kmq_conf_set(c, "kmq.msg.max.bytes", msg_max, errstr,
                            sizeof(errstr)));
  if (producer_max)
    ck_assert(!kmq_conf_set(c, "producer.message.max.bytes", producer_max,
                            errstr, sizeof(errstr)));
  return c;
}

START_TEST(check_message_names_both) {
  char errstr[512];
  ck_assert_int_eq(kmq__limits_check(983040, 1000000, errstr, sizeof(errstr)),
                   0);
  ck_assert_int_eq(kmq__limits_check(1048576, 1000000, errstr,
                                     sizeof(errstr)),
                   -1);
  ck_assert_str_eq(
      errstr,
      "kmq.msg.max.bytes=1048576 does not fit the producers' "
      "message.max.bytes=1000000: a record kmq accepts must be producible "
      "again (compensator, replay) with its key and headers, so "
      "kmq.msg.max.bytes + 16384 must not exceed message.max.bytes; lower "
      "kmq.msg.max.bytes to at most 983616 or raise "
      "producer.message.max.bytes (and the topics' max.message.bytes, "
      "kmq.topic.max.message.bytes)");
  /* Equal is too tight: no room for key and headers. */
  ck_assert_int_eq(kmq__limits_check(1000000, 1000000, errstr,
                                     sizeof(errstr)),
                   -1);
  ck_assert_int_eq(kmq__limits_check(100, 1000, errstr, sizeof(errstr)), -1);
  ck_assert_ptr_nonnull(strstr(errstr, "at most 0 "));
}
END_TEST

static kmq_proc_result_t ok(const kmq_chat_msg_t *m, kmq_proc_ctx_t *ctx,
                            void *o) {
  (void)m;
  (void)ctx;
  (void)o;
  return KMQ_PROC_OK;
}

static kmq_runtime_t *runtime(kmq_conf_t *c, char *errstr, size_t size,
                              kmq_proc_registry_t **reg) {
  *reg = kmq_proc_registry_new(errstr, size);
  ck_assert_int_eq(kmq_proc_set_raw(*reg, ok, NULL), KMQ_OK);
  return kmq_runtime_new(c, *reg, NULL, NULL, errstr, size);
}

START_TEST(runtime_refuses_and_defaults_agree) {
  char errstr[512];
  kmq_proc_registry_t *reg;
  kmq_conf_t *c = conf(NULL, NULL);
  kmq_runtime_t *rt = runtime(c, errstr, sizeof(errstr), &reg);
  ck_assert_msg(rt, "defaults: %s", errstr);
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);

  c = conf("1048576", NULL); /* the old default */
  ck_assert_ptr_null(runtime(c, errstr, sizeof(errstr), &reg));
  ck_assert_ptr_nonnull(strstr(errstr, "kmq.msg.max.bytes=1048576 "));
  ck_assert_ptr_nonnull(strstr(errstr, "message.max.bytes=1000000:"));
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);

  c = conf("1048576", "2000000"); /* raised together: fine */
  rt = runtime(c, errstr, sizeof(errstr), &reg);
  ck_assert_msg(rt, "%s", errstr);
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(c);
}
END_TEST

START_TEST(producer_refuses) {
  char errstr[512];
  kmq_conf_t *c = conf(NULL, NULL);
  kmq_producer_t *p = kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr,
                                       sizeof(errstr));
  ck_assert_msg(p, "defaults: %s", errstr);
  kmq_producer_destroy(p);
  kmq_conf_destroy(c);
  c = conf(NULL, "500000");
  ck_assert_ptr_null(kmq_producer_new(c, NULL, NULL, NULL, NULL, errstr,
                                      sizeof(errstr)));
  ck_assert_ptr_nonnull(strstr(errstr, "kmq.msg.max.bytes=983040 "));
  ck_assert_ptr_nonnull(strstr(errstr, "message.max.bytes=500000:"));
  kmq_conf_destroy(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("limits");
  TCase *tc = tcase_create("limits");
  tcase_add_test(tc, check_message_names_both);
  tcase_add_test(tc, runtime_refuses_and_defaults_agree);
  tcase_add_test(tc, producer_refuses);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
