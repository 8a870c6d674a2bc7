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
                       r.dup_in_topic + r.overlaps + r.stalled_partitions,
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

/* Times in ms, as the checker's ns. */
static void span(kf_verify_t *v, int u, int s, int64_t t0_ms, int64_t t1_ms,
                 int src) {
  kf_verify_processed_span(v, u, s, u % 2, u * 100 + s, t0_ms * 1000000,
                           t1_ms * 1000000, src);
}

START_TEST(one_user_on_two_members_at_once_overlaps) {
  kf_verify_t *v = kf_verify_new(3, 4, 0);
  /* User 0: member 1 still runs seq 1 (10..1500 ms) when member 2, the new
   * owner, starts it again at 900 ms: one overlap of 600 ms. */
  span(v, 0, 0, 0, 5, 1);
  span(v, 0, 1, 10, 1500, 1);
  span(v, 0, 1, 900, 2100, 2);
  span(v, 0, 2, 2100, 2110, 2); /* touches the previous end: no overlap */
  span(v, 0, 3, 2120, 2130, 2);
  /* User 1: three at once, 0..100, 20..40 and 30..120: three pairs, the
   * longest 0..100 with 30..120 (70 ms). */
  span(v, 1, 0, 0, 100, 1);
  span(v, 1, 1, 20, 40, 2);
  span(v, 1, 2, 30, 120, 3);
  span(v, 1, 3, 200, 210, 1);
  /* User 2 runs at the same times as user 0 and 1: other users, no overlap;
   * an event without an end time takes no part. */
  span(v, 2, 0, 0, 2000, 3);
  kf_verify_processed(v, 2, 1, 0, 201, 2000 * 1000000LL, 1);
  span(v, 2, 2, 2500, 2600, 2);
  span(v, 2, 3, 2600, 2700, 2);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.spans, 12);
  ck_assert_int_eq(r.overlaps, 4);
  ck_assert(r.max_overlap_ms > 599.9 && r.max_overlap_ms < 600.1);
  ck_assert_ptr_nonnull(strstr(r.first_overlap, "user 0 ran twice"));
  ck_assert_ptr_nonnull(strstr(r.first_overlap, "seq 1 (source 1"));
  ck_assert_ptr_nonnull(strstr(r.first_overlap, "seq 1 (source 2"));
  ck_assert_str_eq(r.first_problem, r.first_overlap);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(back_to_back_runs_do_not_overlap) {
  kf_verify_t *v = kf_verify_new(1, 4, 0);
  span(v, 0, 0, 0, 1000, 1);
  span(v, 0, 1, 1000, 1001, 2); /* handed on exactly at the end */
  span(v, 0, 2, 1002, 1002, 2);
  span(v, 0, 3, 1003, 3000, 1);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.spans, 4);
  ck_assert_int_eq(r.overlaps, 0);
  ck_assert(r.max_overlap_ms == 0);
  ck_assert_str_eq(r.first_problem, "");
  kf_verify_destroy(v);
}
END_TEST

START_TEST(end_not_committed_by_the_deadline_is_stalled) {
  kf_verify_t *v = kf_verify_new(1, 1, 0);
  proc(v, 0, 0, 1, 0);
  int64_t deadline = 1000;
  kf_verify_committed(v, 0, 50, 900); /* at its end in time */
  kf_verify_committed(v, 1, 30, 500); /* short of its end ... */
  kf_verify_committed(v, 1, 40, 1001); /* ... and at it too late */
  kf_verify_committed(v, 2, 70, 100); /* beyond: a later end seen first */
  kf_verify_committed(v, 2, 60, 200); /* an older observation after it */
  kf_verify_end(v, 0, 50, deadline);
  kf_verify_end(v, 1, 40, deadline);
  kf_verify_end(v, 2, 70, deadline);
  kf_verify_end(v, 3, 10, deadline); /* never committed */
  kf_verify_end(v, 4, 0, deadline);  /* empty */
  kf_verify_committed(v, 5, 1, 10);  /* no end given: not judged */
  kf_report_t r = run(v);
  ck_assert_int_eq(r.ended_partitions, 5);
  ck_assert_int_eq(r.stalled_partitions, 2);
  ck_assert_ptr_nonnull(strstr(r.first_stalled, "partition 1 "));
  ck_assert_ptr_nonnull(
      strstr(r.first_stalled, "highest commit seen by then: 30"));
  ck_assert_str_eq(r.first_problem, r.first_stalled);
  kf_verify_destroy(v);
}
END_TEST

START_TEST(log_lines_carry_the_end_time) {
  char a[] = "/tmp/kf-verify-a-XXXXXX", b[] = "/tmp/kf-verify-b-XXXXXX";
  int fa = mkstemp(a), fb = mkstemp(b);
  ck_assert(fa >= 0 && fb >= 0);
  /* A (old 5-field line, then 6-field lines) still runs seq 1 when B starts
   * it again. */
  kf_log_line(fa, "P 0 0 0 0 100\nP 0 1 0 1 200 900\n");
  kf_log_line(fb, "P 0 1 0 1 500 700\nP 0 2 0 2 950 990\n");
  close(fa);
  close(fb);
  kf_verify_t *v = kf_verify_new(1, 3, 0);
  ck_assert_int_eq(kf_verify_load(v, a, 1), 2);
  ck_assert_int_eq(kf_verify_load(v, b, 2), 2);
  kf_report_t r = run(v);
  ck_assert_int_eq(r.events, 4);
  ck_assert_int_eq(r.spans, 3);
  ck_assert_int_eq(r.overlaps, 1);
  ck_assert(r.max_overlap_ms > 0.00019 && r.max_overlap_ms < 0.00021);
  ck_assert_ptr_nonnull(strstr(r.first_overlap, "t 200..900"));
  ck_assert_ptr_nonnull(strstr(r.first_overlap, "t 500..700"));
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
  tcase_add_test(tc, one_user_on_two_members_at_once_overlaps);
  tcase_add_test(tc, back_to_back_runs_do_not_overlap);
  tcase_add_test(tc, end_not_committed_by_the_deadline_is_stalled);
  tcase_add_test(tc, log_lines_carry_the_end_time);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
