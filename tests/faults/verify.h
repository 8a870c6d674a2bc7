/*
 * Fault-test checker: counts what was lost, processed twice and processed
 * out of order, per user, from what was produced, what processors saw (in
 * one or several processes) and what the DLQ holds.
 *
 * Input, all optional except the size of the traffic:
 *   produced   users x per_user messages, user u's seq s being the traffic
 *              generator's message_id "m-<u>-<s>" (tools/traffic.h). Each is
 *              DELIVERED unless its delivery report said otherwise
 *              (kf_verify_produced).
 *   processed  processing events (user, seq, partition, offset, t_ns, src):
 *              t_ns is CLOCK_MONOTONIC when the processor started, which is
 *              system-wide, so events from several processes merge in time.
 *   committed  observations "partition's committed offset was >= offset at
 *              t_ns" (from the consumer's own bookkeeping or from the group
 *              seen by an outside observer); they tell a redelivery inside
 *              the uncommitted window from one past a commit.
 *   DLQ        records read back from the DLQ topic: (user, seq) when the
 *              payload carries a traffic message_id, else user -1; reason.
 *
 * Per user, events are ordered by t_ns (ties: source, then arrival) and
 * walked with the last seq seen, `cur`:
 *   s == next(cur)  in order. next() skips seqs that are not in the topic
 *                   (producer DLQ/fallback/lost) or were dead-lettered by the
 *                   consumer;
 *   s <= cur        a backward jump. A redelivery restart is legitimate when
 *                   the restart offset is at or above every commit observed
 *                   before it for that partition; otherwise it counts as
 *                   reordered ("restart below a commit");
 *   s >  next(cur)  a gap: reordered.
 * A (user, seq) processed again is a duplicate: "uncommitted" (allowed by
 * at-least-once) when its offset is at or above every commit observed
 * before the re-processing started, "committed" (a violation) otherwise. The
 * same (user, seq) seen at two different offsets is a duplicate in the
 * topic (the producer wrote it twice).
 * Lost: a message in the topic neither processed nor dead-lettered, one
 * the producer reported LOST or never reported, and one the producer said
 * was dead-lettered that the DLQ topic does not hold (when the DLQ was read).
 *
 * Log files (kf_verify_load) hold one event per line, fields separated by
 * spaces; a process appends with one write(2) per line, so a SIGKILL loses
 * at most the line being formatted:
 *   P <user> <seq> <partition> <offset> <t_ns>    processed OK
 *   C <partition> <offset> <t_ns>                 committed >= offset
 *   D <user> <seq> <reason>                       DLQ record (user -1: other)
 *   S <user> <seq> <status>                       delivery report status
 *                                                 (delivered|dlq|fallback|lost)
 * Other lines are ignored (comments, process markers).
 *
 * Threads: adding events is thread-safe (one mutex); kf_verify_run() must
 * not race with additions.
 */
#ifndef KMQ_TESTS_FAULTS_VERIFY_H
#define KMQ_TESTS_FAULTS_VERIFY_H

#include <stdint.h>
#include <stdio.h>

typedef struct kf_verify_s kf_verify_t;

typedef enum {
  KF_PROD_DELIVERED = 0, /* default: in the topic */
  KF_PROD_DLQ,           /* delivery failed, the DLQ has it */
  KF_PROD_FALLBACK,      /* delivery and DLQ failed, the fallback has it */
  KF_PROD_LOST,          /* reported LOST */
  KF_PROD_NONE,          /* no delivery report (yet) */
} kf_prod_status_t;

#define KF_MAX_REASONS 24
#define KF_MAX_PARTITIONS 256

typedef struct {
  int64_t produced;        /* users x per_user */
  int64_t in_topic;        /* delivered by the producer */
  int64_t producer_dlq;    /* producer DLQ outcome */
  int64_t producer_fallback;
  int64_t producer_lost;   /* LOST or no report: counted in lost too */
  int64_t events;          /* processing events */
  int64_t processed;       /* distinct (user, seq) processed */
  int64_t consumer_dlq;    /* distinct traffic messages the consumer DLQ'd */
  int64_t dlq_and_processed; /* producer said failed, yet it was processed
                                (a timed-out message that was persisted) */
  int64_t dlq_missing;     /* producer said DLQ, not in the DLQ topic */
  int64_t lost;
  int64_t dup_uncommitted; /* re-processing inside the uncommitted window */
  int64_t dup_committed;   /* re-processing below an observed commit */
  int64_t dup_in_topic;    /* one (user, seq) at two offsets */
  int64_t restarts;        /* legitimate backward jumps (redelivery) */
  int64_t reordered;       /* illegitimate backward jumps + gaps */
  int64_t gaps;
  int64_t dlq_records;     /* DLQ records read, traffic or not */
  int nreasons;
  struct {
    char reason[40];
    int64_t count;
  } reasons[KF_MAX_REASONS];
  char first_problem[512]; /* a human-readable example of the first issue */
} kf_report_t;

/* A checker for users x per_user messages, all DELIVERED until told
 * otherwise. dlq_read: 1 when the DLQ topic will be read back completely
 * (then a producer-DLQ'd message missing from it is lost). NULL on OOM. */
kf_verify_t *kf_verify_new(int users, int per_user, int dlq_read);
void kf_verify_destroy(kf_verify_t *v);

void kf_verify_produced(kf_verify_t *v, int user, int seq,
                        kf_prod_status_t st);
void kf_verify_processed(kf_verify_t *v, int user, int seq, int32_t partition,
                         int64_t offset, int64_t t_ns, int src);
void kf_verify_committed(kf_verify_t *v, int32_t partition, int64_t offset,
                         int64_t t_ns);
/* user < 0: a DLQ record that is not a traffic message (poison input). */
void kf_verify_dlq(kf_verify_t *v, int user, int seq, const char *reason);

/* Loads a log file (format above); src tags its processing events. Returns
 * the number of lines used, -1 when the file cannot be read. */
int kf_verify_load(kf_verify_t *v, const char *path, int src);

void kf_verify_run(kf_verify_t *v, kf_report_t *out);

/* DLQ records with this reason (0 when none). */
int64_t kf_report_reason(const kf_report_t *r, const char *reason);

/* One line: "messages=.. lost=.. dup=..(+..) reordered=.. dlq=.. [..]". */
void kf_report_print(const kf_report_t *r, const char *title, FILE *out);

/* CLOCK_MONOTONIC in ns. */
int64_t kf_now_ns(void);

/* Appends one formatted line to fd with a single write(2). */
void kf_log_line(int fd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
