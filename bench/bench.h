/*
 * kmq-bench: shared types of the benchmark harness.
 *
 * One program, four modes (produce, consume, e2e, sched). A mode runs one
 * repetition and fills a bench_run_t with rows: one row per implementation
 * (kmq, raw librdkafka, Java reference, ...) and phase (flat out, fixed rate,
 * N users, ...). kmq_bench.c repeats the mode, takes the median of every
 * field of every row over the repetitions, derives the ratios and the design
 * targets, and writes the table (stdout), the JSON file and the PNG plot
 * (bench_out.c).
 *
 * Everything here runs on the bench's main thread unless a function says
 * otherwise; the modes start and join their own threads.
 */
#ifndef KMQ_BENCH_H
#define KMQ_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"

#define BENCH_MAX_ROWS 48
#define BENCH_MAX_EXTRA 32
#define BENCH_MAX_RATIOS 8
#define BENCH_MAX_REPS 16
#define BENCH_MAX_LIST 8

typedef struct {
  const char *mode;
  const char *bootstrap;
  const char *out_dir;
  const char *java_lib; /* NULL: no Java reference rows */
  int reps;
  int plot;
  int smoke;
  const char *only; /* run only this implementation (for profiling) */
  const char *set[8]; /* extra "key=value" for kmq's conf (--set) */
  int nset;

  /* produce / consume / e2e */
  int64_t messages; /* produce, consume: messages per run; sched: items */
  int size;         /* value bytes (envelopes padded up to it) */
  int users;        /* produce, consume: user keys */
  int partitions;
  int rate;         /* msg/s: produce rate phase, e2e */
  double rate_secs; /* duration of a fixed-rate phase (produce, e2e) */
  int workers;      /* kmq.sched.workers (consume, e2e) */
  int work_us;      /* e2e: simulated work per message */
  int work_spin;    /* e2e: busy-wait instead of sleeping */
  int decode_row;   /* consume: also run raw librdkafka + kmq_msg_decode */
  int users_list[BENCH_MAX_LIST], n_users_list;     /* e2e, sched */
  int workers_list[BENCH_MAX_LIST], n_workers_list; /* sched */
  int rss_users;                                    /* sched */
} bench_opts_t;

typedef struct {
  char key[32];
  double v;
} bench_kv_t;

/* One measured line of the table. Numbers are doubles so that medians of
 * every field come out the same way; -1 means "not applicable". */
typedef struct {
  char impl[24];  /* kmq, raw, raw+decode, java, sched */
  char phase[40]; /* max, rate=5000, users=100, w=2 u=100, ... */
  double n;       /* messages measured */
  double secs;    /* measured interval */
  double msg_s, mb_s;
  double p50_us, p99_us, p999_us, max_us;
  int nextra;
  bench_kv_t extra[BENCH_MAX_EXTRA];
} bench_row_t;

typedef struct {
  bench_row_t rows[BENCH_MAX_ROWS];
  int nrows;
  bench_kv_t ratios[BENCH_MAX_RATIOS];
  int nratios;
  int failed; /* the run is not trustworthy (lost messages, order, ...) */
  double loadavg; /* 1-minute load average when the run started */
  char note[256];
} bench_run_t;

/* ---- rows (bench_util.c) ---- */

/* A new row with every number -1 (n/a). */
bench_row_t *bench_row_add(bench_run_t *run, const char *impl,
                           const char *phase);
void bench_row_extra(bench_row_t *r, const char *key, double v);
/* The extra called key, or -1. */
double bench_row_get_extra(const bench_row_t *r, const char *key);
bench_row_t *bench_row_find(bench_run_t *run, const char *impl,
                            const char *phase);
void bench_ratio(bench_run_t *run, const char *key, double v);

/* Median of every field of rows with the same (impl, phase), and of every
 * ratio, over runs[0..n). */
void bench_median(const bench_run_t *runs, int n, bench_run_t *out);

/* ---- helpers (bench_util.c) ---- */

int64_t bench_now_us(void); /* CLOCK_MONOTONIC */
int64_t bench_now_ns(void);
void bench_sleep_until_us(int64_t t_us); /* absolute, CLOCK_MONOTONIC */
void bench_sleep_us(int64_t us);
/* The number after "field:" in a /proc status file (path), -1 if none. */
long long bench_status_field(const char *path, const char *field);
long bench_rss_kb(void); /* VmRSS of this process, -1 if unknown */
/* The peak RSS (VmHWM) from now on: resets it to the current RSS and
 * returns that, -1 if the kernel cannot. Rows run one after the other, so
 * a row's peak is its own (minus what earlier rows left allocated). */
long bench_rss_peak_reset(void);
long bench_rss_peak_kb(void); /* VmHWM since the last reset, -1 if unknown */
double bench_loadavg(void); /* 1-minute load average, -1 if unknown */
/* CPU time (user + system) this process used so far, in microseconds: all
 * of its threads, librdkafka's included; the broker is another process. */
int64_t bench_cpu_us(void);
uint64_t bench_rand(uint64_t *state); /* xorshift64*, state != 0 */

/* ---- CPU per thread group (bench_threads.c) ---- */

#define BENCH_MAX_THREADS 256
typedef struct {
  int tid;
  char comm[16];
  int64_t cpu_us; /* user + system, in clock ticks' resolution */
  int64_t sys_us; /* system (the kernel's share of cpu_us) */
  int64_t ctxsw;  /* voluntary + involuntary context switches */
} bench_thread_t;
typedef struct {
  bench_thread_t t[BENCH_MAX_THREADS];
  int n;
  int complete; /* 0: more than BENCH_MAX_THREADS threads, or no /proc */
} bench_threads_t;
/* Every thread of this process now (/proc/self/task); threads that end
 * while it reads are skipped. */
void bench_threads_snap(bench_threads_t *s);
/* Adds to row, between snapshots a and b, the CPU µs per message and the
 * part of it spent in the kernel (sys_us_...), and the context switches
 * (voluntary + involuntary) per 1000 messages of the bench's thread
 * (cpu_us_poll, sys_us_poll, ctxsw_per_kmsg_poll), kmq's workers
 * (..._workers), librdkafka's threads (..._rdkafka) and the rest
 * (..._other); a group without threads is left out. Adds nothing (and
 * says so on stderr) when either snapshot is not complete. */
void bench_threads_extra(bench_row_t *row, const bench_threads_t *a,
                         const bench_threads_t *b, int64_t messages);

/* Writes a valid kmq envelope (tools/traffic.h) of user u's message seq
 * into buf, padded with a top-level "pad" string of pseudo-random letters
 * up to `size` bytes when it is shorter, and with "bench_t_us": t_us (the
 * scheduled send time) and "bench_s_us": s_us (the actual one) inside its
 * content when they are >= 0. Returns its length. */
size_t bench_envelope(int u, int seq, int64_t t_us, int64_t s_us, int size,
                      uint64_t *rng, char *buf, size_t cap);

/* A kmq_conf_t with bootstrap.servers (and kmq.topic / group.id when not
 * NULL). Exits the program on a refused key: a bench bug. */
kmq_conf_t *bench_conf(const bench_opts_t *o, const char *topic,
                       const char *group);
void bench_conf_set(kmq_conf_t *c, const char *k, const char *v);
/* Creates topic with o->partitions partitions; exits on failure. */
void bench_create_topic(const bench_opts_t *o, const char *topic);
/* Unique name: "<prefix>-<unix time>-<pid>-<counter>". */
void bench_name(char *buf, size_t size, const char *prefix);
/* Sum of the group's lag on topic, -1 on failure. */
int64_t bench_group_lag(const bench_opts_t *o, const char *group,
                        const char *topic);

void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- modes: one repetition each. Return 0, or -1 on a harness error. ---- */

int bench_produce(const bench_opts_t *o, int rep, bench_run_t *run);
int bench_consume(const bench_opts_t *o, int rep, bench_run_t *run);
int bench_e2e(const bench_opts_t *o, int rep, bench_run_t *run);
int bench_sched(const bench_opts_t *o, int rep, bench_run_t *run);
int bench_decode(const bench_opts_t *o, int rep, bench_run_t *run);

/* ---- Java reference (bench_java.c) ---- */

/* Runs Kafka's ProducerPerformance on topic (created by the caller) and
 * adds a "java" row. Returns 0, or -1 (no row) when it failed. */
int bench_java_produce(const bench_opts_t *o, const char *topic,
                       bench_run_t *run);
/* Runs ConsumerPerformance over o->messages records of topic. */
int bench_java_consume(const bench_opts_t *o, const char *topic,
                       bench_run_t *run);

/* ---- output (bench_out.c) ---- */

typedef struct {
  char name[64];
  char value[64];
  char goal[48];
  int pass;
} bench_target_t;

/* Design targets and ratio goals checked against the median run. */
int bench_targets(const bench_opts_t *o, const bench_run_t *med,
                  bench_target_t *t, int max);

void bench_print_table(const bench_opts_t *o, const bench_run_t *runs,
                       int nruns, const bench_run_t *med,
                       const bench_target_t *t, int nt);
/* Writes <out>/<mode>-<stamp>.json (and .png); paths into json_path /
 * png_path ("" when not written). Returns 0 or -1. */
int bench_write_json(const bench_opts_t *o, int argc, char **argv,
                     const char *stamp, const bench_run_t *runs, int nruns,
                     const bench_run_t *med, const bench_target_t *t, int nt,
                     char *json_path, size_t jsize);
int bench_plot(const bench_opts_t *o, const char *stamp,
               const bench_run_t *med, char *png_path, size_t psize);
/* 0 when path holds a bench JSON document (mode, runs, median). */
int bench_check_json(const char *path);

#endif /* KMQ_BENCH_H */
