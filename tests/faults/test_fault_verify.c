/* The fault checker itself: it must see every kind of violation it claims
 * to count, and nothing in a clean or legitimately redelivered history. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "verify.h"

#include "testutil.h"

/* User u's seq s sits at offset u * 100 + s of partition u % 2. */
static void proc(kf_verify_t *v, int u, int s, int64_t t, int src) {
  kf_verify_processed(v, u, s, u % 2, u * 100 + s, t, src);
}

static kf_report_t run(kf_verify_t *v) {
  kf_report_t r;
  kf_verify_run(v, &r);
  kf_report_print(&r, "verify", stderr);
  return r;
}

START_TEST(clean_history_is_clean) {
  kf_verify_t *v = kf_verify_new(3, 5, 0);
  int64_t t = 0;
  for (int s = 0; s < 5; s++)
    for (int u = 0; u < 3; u++)
      proc(v, u, s, t++, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.processed, 15);
  ck_assert_int_eq(r.lost + r.reordered + r.dup_committed + r.dup_uncommitted +
                       r.dup_in_topic,
                   0);
  ck_assert_str_eq(r.first_problem, "");
  kf_verify_destroy(v);
}
END_TEST

START_TEST(missing_message_is_lost) {
  kf_verify_t *v = kf_verify_new(2, 4, 0);
  for (int s = 0; s < 4; s++)
    proc(v, 0, s, s, 0);
  for (int s = 0; s < 3; s++) /* user 1's last one never processed */
    proc(v, 1, s, 10 + s, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.lost, 1);
  ck_assert_int_eq(r.reordered, 0);
  ck_assert_ptr_nonnull(strstr(r.first_problem, "user 1 seq 3"));
  kf_verify_destroy(v);
}
END_TEST

START_TEST(swap_is_reordered) {
  kf_verify_t *v = kf_verify_new(1, 5, 0);
  int order[] = {0, 1, 3, 2, 4};
  /* A commit after 1 makes the step back from 3 to 2 legal as a restart,
   * but not the gap 1 -> 3, nor 2 -> 4 afterwards. */
  kf_verify_committed(v, 0, 2, 2);
  for (int i = 0; i < 5; i++)
    proc(v, 0, order[i], 10 + i, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.lost, 0);
  ck_assert_int_ge(r.reordered, 1);
  ck_assert_int_ge(r.gaps, 1);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(redelivery_above_commit_is_allowed) {
  kf_verify_t *v = kf_verify_new(1, 6, 0);
  for (int s = 0; s <= 4; s++)
    proc(v, 0, s, 10 + s, 1); /* process 1 ran 0..4 */
  kf_verify_committed(v, 0, 3, 15); /* offsets 0..2 committed */
  for (int s = 3; s <= 5; s++)     /* process 2 restarts at the commit */
    proc(v, 0, s, 20 + s, 2);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.lost, 0);
  ck_assert_int_eq(r.reordered, 0);
  ck_assert_int_eq(r.restarts, 1);
  ck_assert_int_eq(r.dup_uncommitted, 2); /* 3 and 4 */
  ck_assert_int_eq(r.dup_committed, 0);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(redelivery_below_commit_is_a_violation) {
  kf_verify_t *v = kf_verify_new(1, 6, 0);
  for (int s = 0; s <= 4; s++)
    proc(v, 0, s, 10 + s, 1);
  kf_verify_committed(v, 0, 5, 15); /* everything up to 4 committed */
  for (int s = 3; s <= 5; s++)
    proc(v, 0, s, 20 + s, 2);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.dup_committed, 2);
  ck_assert_int_eq(r.reordered, 1);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(commit_seen_after_the_redelivery_does_not_count) {
  kf_verify_t *v = kf_verify_new(1, 3, 0);
  for (int s = 0; s < 3; s++)
    proc(v, 0, s, 10 + s, 1);
  proc(v, 0, 2, 20, 2);
  kf_verify_committed(v, 0, 3, 30); /* observed later */
  kf_report_t r = run(v);
  ck_assert_int_eq(r.dup_uncommitted, 1);
  ck_assert_int_eq(r.dup_committed + r.reordered, 0);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(dead_letters_fill_gaps) {
  kf_verify_t *v = kf_verify_new(1, 6, 1);
  kf_verify_produced(v, 0, 1, KF_PROD_DLQ);      /* never in the topic */
  kf_verify_produced(v, 0, 2, KF_PROD_FALLBACK); /* neither */
  kf_verify_dlq(v, 0, 1, "delivery_failed");
  kf_verify_dlq(v, 0, 4, "processor_failed"); /* the consumer gave up */
  kf_verify_dlq(v, -1, -1, "bad_json");        /* poison, not traffic */
  int order[] = {0, 3, 5};
  for (int i = 0; i < 3; i++)
    proc(v, 0, order[i], i, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.lost, 0);
  ck_assert_int_eq(r.reordered, 0);
  ck_assert_int_eq(r.producer_dlq, 1);
  ck_assert_int_eq(r.producer_fallback, 1);
  ck_assert_int_eq(r.consumer_dlq, 1);
  ck_assert_int_eq(kf_report_reason(&r, "processor_failed"), 1);
  ck_assert_int_eq(kf_report_reason(&r, "bad_json"), 1);
  ck_assert_int_eq(kf_report_reason(&r, "delivery_failed"), 1);
  ck_assert_int_eq(r.dlq_records, 3);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(producer_dlq_missing_from_topic_is_lost) {
  kf_verify_t *v = kf_verify_new(1, 2, 1);
  kf_verify_produced(v, 0, 1, KF_PROD_DLQ);
  proc(v, 0, 0, 0, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.dlq_missing, 1);
  ck_assert_int_eq(r.lost, 1);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(unreported_and_lost_sends_are_lost) {
  kf_verify_t *v = kf_verify_new(1, 3, 0);
  kf_verify_produced(v, 0, 1, KF_PROD_LOST);
  kf_verify_produced(v, 0, 2, KF_PROD_NONE);
  proc(v, 0, 0, 0, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.lost, 2);
  ck_assert_int_eq(r.producer_lost, 2);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(same_message_at_two_offsets_is_a_topic_duplicate) {
  kf_verify_t *v = kf_verify_new(1, 3, 0);
  kf_verify_processed(v, 0, 0, 0, 0, 1, 0);
  kf_verify_processed(v, 0, 1, 0, 1, 2, 0);
  kf_verify_processed(v, 0, 1, 0, 2, 3, 0); /* written twice */
  kf_verify_processed(v, 0, 2, 0, 3, 4, 0);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.dup_in_topic, 1);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(logs_of_several_processes_merge_in_time) {
  char a[] = "/tmp/kf-verify-a-XXXXXX", b[] = "/tmp/kf-verify-b-XXXXXX";
  int fa = mkstemp(a), fb = mkstemp(b);
  ck_assert(fa >= 0 && fb >= 0);
  /* Process A handles seq 0..2 and is killed; B restarts at the commit. */
  kf_log_line(fa, "# start\n");
  kf_log_line(fa, "P 0 0 0 0 100\nP 0 1 0 1 200\nC 0 2 250\nP 0 2 0 2 300\n");
  kf_log_line(fb, "P 0 2 0 2 400\nP 0 3 0 3 500\n");
  kf_log_line(fb, "D -1 -1 too_large\nS 0 4 fallback\n");
  close(fa);
  close(fb);
  kf_verify_t *v = kf_verify_new(1, 5, 0);
  ck_assert_int_eq(kf_verify_load(v, a, 1), 4);
  ck_assert_int_eq(kf_verify_load(v, b, 2), 4);
  ck_assert_int_eq(kf_verify_load(v, "/nonexistent/kf", 3), -1);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.lost, 0);
  ck_assert_int_eq(r.reordered, 0);
  ck_assert_int_eq(r.dup_uncommitted, 1);
  ck_assert_int_eq(r.restarts, 1);
  ck_assert_int_eq(kf_report_reason(&r, "too_large"), 1);
  unlink(a);
  unlink(b);
  kf_verify_destroy(v);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fault_verify");
  TCase *tc = tcase_create("verify");
  tcase_add_test(tc, clean_history_is_clean);
  tcase_add_test(tc, missing_message_is_lost);
  tcase_add_test(tc, swap_is_reordered);
  tcase_add_test(tc, redelivery_above_commit_is_allowed);
  tcase_add_test(tc, redelivery_below_commit_is_a_violation);
  tcase_add_test(tc, commit_seen_after_the_redelivery_does_not_count);
  tcase_add_test(tc, dead_letters_fill_gaps);
  tcase_add_test(tc, producer_dlq_missing_from_topic_is_lost);
  tcase_add_test(tc, unreported_and_lost_sends_are_lost);
  tcase_add_test(tc, same_message_at_two_offsets_is_a_topic_duplicate);
  tcase_add_test(tc, logs_of_several_processes_merge_in_time);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
