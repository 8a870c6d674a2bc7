/*
 * Fault-test checker: counts what was lost, processed twice and processed
 * out of order, per user, from what was produced, what processors saw (in
 * one or several processes) and what the DLQ holds; also the users that ran
 * twice at once (overlaps) and the partitions not committed at their end in
 * time (stalled).
 *
 * Input, all optional except the size of the traffic:
 *   produced   users x per_user messages, user u's seq s being the traffic
 *              generator's message_id "m-<u>-<s>" (tools/traffic.h). Each is
 *              DELIVERED unless its delivery report said otherwise
 *              (kf_verify_produced).
 *   processed  processing events (user, seq, partition, offset, t_ns,
 *              [t_end_ns], src): t_ns is CLOCK_MONOTONIC when the processor
 *              started, t_end_ns when it returned (optional), both
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
 * Overlaps: per user, every pair of processings (any seqs, any sources)
 * whose [start, end] intervals intersect for a positive time: one user must
 * never run on two members, or two workers, at once. Only events with an
 * end time take part. Per user the events are sorted by start and swept with
 * the set of intervals still running, so the cost is n log n plus the pairs.
 *
 * Stalled partitions: a partition given an end offset and a deadline
 * (kf_verify_end) is stalled when no commit >= its end was observed at or
 * before the deadline. The scenario waits for those commits while at least
 * one member is alive and feeds what it observes as commits; the checker
 * decides from the observations it was given (the count reported).
 *
 * Log files (kf_verify_load) hold one event per line, fields separated by
 * spaces; a process appends with one write(2) per line, so a SIGKILL loses
 * at most the line being formatted:
 *   P <user> <seq> <partition> <offset> <t_ns> [<t_end_ns>]
 *                                                 processed OK; the end time
 *                                                 (processor returned) is
 *                                                 optional: without it the
 *                                                 event has no interval
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
  int64_t spans;           /* processing events with an end time */
  int64_t overlaps;        /* pairs of one user's processings running at
                              once (intervals intersecting) */
  double max_overlap_ms;   /* the longest such intersection */
  int64_t ended_partitions;   /* partitions given an end (kf_verify_end) */
  int64_t stalled_partitions; /* of those, not committed at their end by
                                 the deadline */
  int nreasons;
  struct {
    char reason[40];
    int64_t count;
  } reasons[KF_MAX_REASONS];
  char first_problem[512]; /* a human-readable example of the first issue */
  char first_overlap[320]; /* the first overlap found, "" when none */
  char first_stalled[160]; /* the first stalled partition, "" when none */
} kf_report_t;

/* A checker for users x per_user messages, all DELIVERED until told
 * otherwise. dlq_read: 1 when the DLQ topic will be read back completely
 * (then a producer-DLQ'd message missing from it is lost). NULL on OOM. */
kf_verify_t *kf_verify_new(int users, int per_user, int dlq_read);
void kf_verify_destroy(kf_verify_t *v);

void kf_verify_produced(kf_verify_t *v, int user, int seq,
                        kf_prod_status_t st);
/* A processing that started at t_ns; no end time, so it takes no part in
 * the overlap count. */
void kf_verify_processed(kf_verify_t *v, int user, int seq, int32_t partition,
                         int64_t offset, int64_t t_ns, int src);
/* A processing that ran from t_ns until t_end_ns (processor returned);
 * t_end_ns < t_ns means unknown, as in kf_verify_processed. */
void kf_verify_processed_span(kf_verify_t *v, int user, int seq,
                              int32_t partition, int64_t offset, int64_t t_ns,
                              int64_t t_end_ns, int src);
void kf_verify_committed(kf_verify_t *v, int32_t partition, int64_t offset,
                         int64_t t_ns);
/* The partition's end offset once the traffic stopped (its high
 * watermark) and the time by which a commit at that end had to be seen
 * (kf_verify_committed). A partition with end <= 0 has nothing to commit.
 * A second call for the same partition replaces the first. */
void kf_verify_end(kf_verify_t *v, int32_t partition, int64_t end,
                   int64_t deadline_ns);
/* user < 0: a DLQ record that is not a traffic message (poison input). */
void kf_verify_dlq(kf_verify_t *v, int user, int seq, const char *reason);

/* Loads a log file (format above); src tags its processing events. Returns
 * the number of lines used, -1 when the file cannot be read. */
int kf_verify_load(kf_verify_t *v, const char *path, int src);

void kf_verify_run(kf_verify_t *v, kf_report_t *out);

/* DLQ records with this reason (0 when none). */
int64_t kf_report_reason(const kf_report_t *r, const char *reason);

/* One line: "messages=.. lost=.. dup_..=.. reordered=.. overlaps=..
 * max_overlap_ms=.. stalled=../.. dlq..=.. [reason=..]". */
void kf_report_print(const kf_report_t *r, const char *title, FILE *out);

/* CLOCK_MONOTONIC in ns. */
int64_t kf_now_ns(void);

/* Appends one formatted line to fd with a single write(2). */
void kf_log_line(int fd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
