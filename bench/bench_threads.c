/* kmq-bench: where a row's CPU went, per thread group. getrusage gives the
 * process's total; this splits it by the threads' names (/proc/self/task):
 * the bench's own thread (the poll thread of every consume row), kmq's
 * workers ("kmq-sched-N"), librdkafka's threads ("rdk:..."), and the rest.
 * It answers "does the decode cost more inside the pipeline, or does
 * something else (hand-offs, librdkafka) cost more" with numbers. The
 * kernel counts in clock ticks (10 ms here): a group that used less than a
 * few ticks over a row reads as noise. A thread that ended between the two
 * snapshots is missing from the later one and its CPU is not attributed.
 * In kmq's rows the poll-thread group also holds the bench's own sampling
 * after every poll (kmq_consumer_partitions), which the raw rows lack; the
 * rdkafka group also holds the runtime's DLQ producer's librdkafka threads
 * and "other" its poller thread ("kmq-poller"), all idle in the bench (no
 * dead letters). */
#include "bench.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int bench__task_read(int tid, long hz, bench_thread_t *t) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* "tid (comm) state ppid ...": comm may hold spaces and parentheses, so
   * the fields start after the last ')'. utime and stime are fields 14 and
   * 15 (proc(5)), the 11th and 12th after the state (field 3). */
  char *open = strchr(buf, '('), *close = strrchr(buf, ')');
  if (!open || !close || close < open)
    return -1;
  size_t clen = (size_t)(close - open - 1);
  if (clen >= sizeof(t->comm))
    clen = sizeof(t->comm) - 1;
  memcpy(t->comm, open + 1, clen);
  t->comm[clen] = '\0';
  unsigned long long ut = 0, st = 0;
  if (sscanf(close + 2,
             "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
             &st) != 2)
    return -1;
  t->tid = tid;
  t->cpu_us = (int64_t)((ut + st) * 1000000ULL / (unsigned long long)hz);
  t->sys_us = (int64_t)(st * 1000000ULL / (unsigned long long)hz);
  snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
  long long vol = bench_status_field(path, "voluntary_ctxt_switches");
  long long inv = bench_status_field(path, "nonvoluntary_ctxt_switches");
  t->ctxsw = (vol > 0 ? vol : 0) + (inv > 0 ? inv : 0);
  return 0;
}

void bench_threads_snap(bench_threads_t *s) {
  s->n = 0;
  s->complete = 0;
  long hz = sysconf(_SC_CLK_TCK);
  DIR *d = opendir("/proc/self/task");
  if (!d || hz <= 0) {
    if (d)
      closedir(d);
    return;
  }
  struct dirent *e;
  s->complete = 1;
  while ((e = readdir(d))) {
    int tid = atoi(e->d_name);
    if (tid <= 0)
      continue;
    if (s->n == BENCH_MAX_THREADS) {
      s->complete = 0; /* a thread left out would look new in a later one */
      break;
    }
    /* A thread that ended since readdir listed it cannot be read: it is
     * in no later snapshot either. */
    if (!bench__task_read(tid, hz, &s->t[s->n]))
      s->n++;
  }
  closedir(d);
}

static int bench__group(const bench_thread_t *t) {
  if (t->tid == getpid())
    return 0; /* the bench's thread: the poll thread of a consume row */
  if (!strncmp(t->comm, "kmq-sched-", 10))
    return 1;
  if (!strncmp(t->comm, "rdk:", 4))
    return 2;
  return 3;
}

void bench_threads_extra(bench_row_t *row, const bench_threads_t *a,
                         const bench_threads_t *b, int64_t messages) {
  static const char *const grp[] = {"poll", "workers", "rdkafka", "other"};
  double cpu[4] = {0, 0, 0, 0}, sys[4] = {0, 0, 0, 0}, cs[4] = {0, 0, 0, 0};
  int present[4] = {0, 0, 0, 0};
  if (!a->complete || !b->complete || messages <= 0) {
    bench_log("%s %s: no CPU split per thread (more than %d threads, or "
              "/proc unreadable)",
              row->impl, row->phase, BENCH_MAX_THREADS);
    return;
  }
  for (int i = 0; i < b->n; i++) {
    const bench_thread_t *t = &b->t[i];
    int64_t cpu0 = 0, sys0 = 0, cs0 = 0; /* started since a: from zero */
    for (int j = 0; j < a->n; j++)
      if (a->t[j].tid == t->tid) {
        cpu0 = a->t[j].cpu_us;
        sys0 = a->t[j].sys_us;
        cs0 = a->t[j].ctxsw;
        break;
      }
    int g = bench__group(t);
    present[g] = 1;
    cpu[g] += (double)(t->cpu_us - cpu0);
    sys[g] += (double)(t->sys_us - sys0);
    cs[g] += (double)(t->ctxsw - cs0);
  }
  char key[32];
  for (int g = 0; g < 4; g++) {
    /* Every group that has threads, idle or not: the medians over the
     * repetitions take their keys from the first repetition's row. */
    if (!present[g])
      continue; /* no such threads (the raw rows have no workers) */
    snprintf(key, sizeof(key), "cpu_us_%s", grp[g]);
    bench_row_extra(row, key, cpu[g] / (double)messages);
    snprintf(key, sizeof(key), "sys_us_%s", grp[g]);
    bench_row_extra(row, key, sys[g] / (double)messages);
    snprintf(key, sizeof(key), "ctxsw_per_kmsg_%s", grp[g]);
    bench_row_extra(row, key, cs[g] * 1000.0 / (double)messages);
  }
}
