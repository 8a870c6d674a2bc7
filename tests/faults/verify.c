/* Fault-test checker: see verify.h for the rules it applies. */
#include "verify.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int seq;
  int32_t part;
  int64_t off;
  int64_t t;
  int64_t t_end; /* processor returned; < t: unknown (no interval) */
  int src;
  int64_t idx; /* arrival order: the last tie-breaker */
} kf_event_t;

typedef struct {
  kf_event_t *ev;
  size_t n, size;
} kf_user_t;

typedef struct {
  int64_t off, t;
} kf_commit_t;

typedef struct {
  kf_commit_t *c;
  size_t n, size;
  int has_end;
  int64_t end, deadline; /* kf_verify_end */
} kf_part_t;

struct kf_verify_s {
  pthread_mutex_t lock;
  int users, per_user, dlq_read;
  uint8_t *status;       /* kf_prod_status_t per (user, seq) */
  uint16_t *dlq_cons;    /* consumer DLQ records per (user, seq) */
  uint16_t *dlq_prod;    /* delivery_failed DLQ records per (user, seq) */
  kf_user_t *u;
  kf_part_t parts[KF_MAX_PARTITIONS];
  int64_t nevents;
  int64_t dlq_records;
  int nreasons;
  char reasons[KF_MAX_REASONS][40];
  int64_t reason_cnt[KF_MAX_REASONS];
  int64_t foreign; /* events outside users x per_user */
};

int64_t kf_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void kf_log_line(int fd, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof(buf))
    n = sizeof(buf) - 1;
  /* One write per line on an O_APPEND fd: lines from several threads never
   * interleave, and a line is in the page cache (survives SIGKILL) as soon
   * as write returns. */
  ssize_t w = write(fd, buf, (size_t)n);
  (void)w;
}

kf_verify_t *kf_verify_new(int users, int per_user, int dlq_read) {
  kf_verify_t *v = calloc(1, sizeof(*v));
  if (!v)
    return NULL;
  size_t n = (size_t)users * (size_t)per_user;
  v->users = users;
  v->per_user = per_user;
  v->dlq_read = dlq_read;
  v->status = calloc(n ? n : 1, 1);
  v->dlq_cons = calloc(n ? n : 1, sizeof(uint16_t));
  v->dlq_prod = calloc(n ? n : 1, sizeof(uint16_t));
  v->u = calloc((size_t)users ? (size_t)users : 1, sizeof(kf_user_t));
  if (!v->status || !v->dlq_cons || !v->dlq_prod || !v->u) {
    kf_verify_destroy(v);
    return NULL;
  }
  pthread_mutex_init(&v->lock, NULL);
  return v;
}

void kf_verify_destroy(kf_verify_t *v) {
  if (!v)
    return;
  if (v->u)
    for (int i = 0; i < v->users; i++)
      free(v->u[i].ev);
  for (int p = 0; p < KF_MAX_PARTITIONS; p++)
    free(v->parts[p].c);
  free(v->u);
  free(v->status);
  free(v->dlq_cons);
  free(v->dlq_prod);
  pthread_mutex_destroy(&v->lock);
  free(v);
}

static int kf_in_range(const kf_verify_t *v, int user, int seq) {
  return user >= 0 && user < v->users && seq >= 0 && seq < v->per_user;
}

void kf_verify_produced(kf_verify_t *v, int user, int seq,
                        kf_prod_status_t st) {
  if (!kf_in_range(v, user, seq))
    return;
  pthread_mutex_lock(&v->lock);
  v->status[(size_t)user * (size_t)v->per_user + (size_t)seq] = (uint8_t)st;
  pthread_mutex_unlock(&v->lock);
}

void kf_verify_processed(kf_verify_t *v, int user, int seq, int32_t partition,
                         int64_t offset, int64_t t_ns, int src) {
  kf_verify_processed_span(v, user, seq, partition, offset, t_ns, -1, src);
}

void kf_verify_processed_span(kf_verify_t *v, int user, int seq,
                              int32_t partition, int64_t offset, int64_t t_ns,
                              int64_t t_end_ns, int src) {
  if (t_end_ns < t_ns)
    t_end_ns = -1;
  pthread_mutex_lock(&v->lock);
  if (!kf_in_range(v, user, seq)) {
    v->foreign++;
    pthread_mutex_unlock(&v->lock);
    return;
  }
  kf_user_t *u = &v->u[user];
  if (u->n == u->size) {
    size_t ns = u->size ? u->size * 2 : 16;
    kf_event_t *e = realloc(u->ev, ns * sizeof(*e));
    if (!e) {
      pthread_mutex_unlock(&v->lock);
      abort(); /* a checker that drops events would lie */
    }
    u->ev = e;
    u->size = ns;
  }
  u->ev[u->n++] = (kf_event_t){seq,      partition, offset,
                               t_ns,     t_end_ns,  src,
                               v->nevents++};
  pthread_mutex_unlock(&v->lock);
}

void kf_verify_committed(kf_verify_t *v, int32_t partition, int64_t offset,
                         int64_t t_ns) {
  if (partition < 0 || partition >= KF_MAX_PARTITIONS || offset < 0)
    return;
  pthread_mutex_lock(&v->lock);
  kf_part_t *p = &v->parts[partition];
  if (p->n == p->size) {
    size_t ns = p->size ? p->size * 2 : 64;
    kf_commit_t *c = realloc(p->c, ns * sizeof(*c));
    if (!c) {
      pthread_mutex_unlock(&v->lock);
      abort();
    }
    p->c = c;
    p->size = ns;
  }
  p->c[p->n++] = (kf_commit_t){offset, t_ns};
  pthread_mutex_unlock(&v->lock);
}

void kf_verify_end(kf_verify_t *v, int32_t partition, int64_t end,
                   int64_t deadline_ns) {
  if (partition < 0 || partition >= KF_MAX_PARTITIONS)
    return;
  pthread_mutex_lock(&v->lock);
  kf_part_t *p = &v->parts[partition];
  p->has_end = 1;
  p->end = end;
  p->deadline = deadline_ns;
  pthread_mutex_unlock(&v->lock);
}

void kf_verify_dlq(kf_verify_t *v, int user, int seq, const char *reason) {
  pthread_mutex_lock(&v->lock);
  v->dlq_records++;
  if (!reason)
    reason = "(none)";
  int i;
  for (i = 0; i < v->nreasons; i++)
    if (!strcmp(v->reasons[i], reason))
      break;
  if (i == v->nreasons && i < KF_MAX_REASONS) {
    snprintf(v->reasons[i], sizeof(v->reasons[i]), "%s", reason);
    v->nreasons++;
  }
  if (i < KF_MAX_REASONS)
    v->reason_cnt[i]++;
  if (kf_in_range(v, user, seq)) {
    size_t k = (size_t)user * (size_t)v->per_user + (size_t)seq;
    if (!strcmp(reason, "delivery_failed"))
      v->dlq_prod[k]++;
    else
      v->dlq_cons[k]++;
  }
  pthread_mutex_unlock(&v->lock);
}

int kf_verify_load(kf_verify_t *v, const char *path, int src) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  char line[1024];
  int used = 0;
  while (fgets(line, sizeof(line), f)) {
    int u, s, n;
    long long p, o, t, te = -1;
    char word[64];
    if (line[0] == 'P' &&
        (n = sscanf(line + 1, "%d %d %lld %lld %lld %lld", &u, &s, &p, &o, &t,
                    &te)) >= 5) {
      kf_verify_processed_span(v, u, s, (int32_t)p, o, t, n == 6 ? te : -1,
                               src);
      used++;
    } else if (line[0] == 'C' &&
               sscanf(line + 1, "%lld %lld %lld", &p, &o, &t) == 3) {
      kf_verify_committed(v, (int32_t)p, o, t);
      used++;
    } else if (line[0] == 'D' &&
               sscanf(line + 1, "%d %d %63s", &u, &s, word) == 3) {
      kf_verify_dlq(v, u, s, word);
      used++;
    } else if (line[0] == 'S' &&
               sscanf(line + 1, "%d %d %63s", &u, &s, word) == 3) {
      kf_prod_status_t st = !strcmp(word, "delivered") ? KF_PROD_DELIVERED
                            : !strcmp(word, "dlq")     ? KF_PROD_DLQ
                            : !strcmp(word, "fallback") ? KF_PROD_FALLBACK
                            : !strcmp(word, "lost")     ? KF_PROD_LOST
                                                        : KF_PROD_NONE;
      kf_verify_produced(v, u, s, st);
      used++;
    }
  }
  fclose(f);
  return used;
}

static int kf_cmp_event(const void *a, const void *b) {
  const kf_event_t *x = a, *y = b;
  if (x->t != y->t)
    return x->t < y->t ? -1 : 1;
  if (x->src != y->src)
    return x->src < y->src ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int kf_cmp_commit(const void *a, const void *b) {
  const kf_commit_t *x = a, *y = b;
  return x->t < y->t ? -1 : x->t > y->t;
}

/* The highest commit observed strictly before t on partition p, -1 if none.
 * Commits are sorted by time with their offsets turned into a prefix max. */
static int64_t kf_commit_before(const kf_verify_t *v, int32_t p, int64_t t) {
  if (p < 0 || p >= KF_MAX_PARTITIONS)
    return -1;
  const kf_part_t *pp = &v->parts[p];
  size_t lo = 0, hi = pp->n; /* first index with c.t >= t */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (pp->c[mid].t < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo ? pp->c[lo - 1].off : -1;
}

#define KF_PROBLEM(r, ...)                                                     \
  do {                                                                         \
    if (!(r)->first_problem[0])                                                \
      snprintf((r)->first_problem, sizeof((r)->first_problem), __VA_ARGS__);   \
  } while (0)

/* Pairs of u's processings that ran at once. u->ev is sorted by start;
 * running[] (capacity u->n) holds the events whose interval is still open at
 * the current start. Intervals that only touch (one ends when the next
 * starts) do not overlap: that is one worker handing the user on. */
static void kf_count_overlaps(const kf_user_t *u, int user, size_t *running,
                              kf_report_t *r) {
  size_t nrun = 0;
  for (size_t i = 0; i < u->n; i++) {
    const kf_event_t *e = &u->ev[i];
    if (e->t_end < e->t)
      continue; /* no end time: no interval */
    r->spans++;
    size_t keep = 0;
    for (size_t k = 0; k < nrun; k++) {
      const kf_event_t *a = &u->ev[running[k]];
      if (a->t_end <= e->t)
        continue; /* ended before e started */
      running[keep++] = running[k];
      int64_t both = (a->t_end < e->t_end ? a->t_end : e->t_end) - e->t;
      if (both <= 0)
        continue; /* e has zero length at a's start */
      r->overlaps++;
      if (both / 1e6 > r->max_overlap_ms)
        r->max_overlap_ms = both / 1e6;
      if (!r->first_overlap[0])
        snprintf(r->first_overlap, sizeof(r->first_overlap),
                 "user %d ran twice at once for %.1f ms: seq %d (source %d, "
                 "partition %d offset %lld, t %lld..%lld) and seq %d (source "
                 "%d, partition %d offset %lld, t %lld..%lld)",
                 user, both / 1e6, a->seq, a->src, a->part, (long long)a->off,
                 (long long)a->t, (long long)a->t_end, e->seq, e->src,
                 e->part, (long long)e->off, (long long)e->t,
                 (long long)e->t_end);
    }
    nrun = keep;
    running[nrun++] = i;
  }
  if (r->first_overlap[0])
    KF_PROBLEM(r, "%s", r->first_overlap);
}

/* Partitions given an end that no commit observed by their deadline
 * reached. Needs the commits sorted with prefix-max offsets. */
static void kf_count_stalled(const kf_verify_t *v, kf_report_t *r) {
  for (int p = 0; p < KF_MAX_PARTITIONS; p++) {
    const kf_part_t *pp = &v->parts[p];
    if (!pp->has_end)
      continue;
    r->ended_partitions++;
    if (pp->end <= 0)
      continue; /* empty: nothing to commit */
    int64_t c = kf_commit_before(v, p, pp->deadline + 1);
    if (c >= pp->end)
      continue;
    if (!r->stalled_partitions++)
      snprintf(r->first_stalled, sizeof(r->first_stalled),
               "partition %d was not committed at its end offset %lld by "
               "the deadline (highest commit seen by then: %lld)",
               p, (long long)pp->end, (long long)c);
  }
  if (r->first_stalled[0])
    KF_PROBLEM(r, "%s", r->first_stalled);
}

void kf_verify_run(kf_verify_t *v, kf_report_t *r) {
  memset(r, 0, sizeof(*r));
  size_t per = (size_t)v->per_user;
  r->produced = (int64_t)v->users * v->per_user;
  r->events = v->nevents;
  r->dlq_records = v->dlq_records;
  r->nreasons = v->nreasons;
  for (int i = 0; i < v->nreasons; i++) {
    snprintf(r->reasons[i].reason, sizeof(r->reasons[i].reason), "%s",
             v->reasons[i]);
    r->reasons[i].count = v->reason_cnt[i];
  }
  if (v->foreign)
    KF_PROBLEM(r, "%lld processing events of messages outside the traffic",
               (long long)v->foreign);

  for (int p = 0; p < KF_MAX_PARTITIONS; p++) {
    kf_part_t *pp = &v->parts[p];
    if (pp->n)
      qsort(pp->c, pp->n, sizeof(*pp->c), kf_cmp_commit);
    for (size_t i = 1; i < pp->n; i++)
      if (pp->c[i].off < pp->c[i - 1].off)
        pp->c[i].off = pp->c[i - 1].off;
  }

  kf_count_stalled(v, r);

  size_t maxn = 1;
  for (int user = 0; user < v->users; user++)
    if (v->u[user].n > maxn)
      maxn = v->u[user].n;
  size_t *running = malloc(maxn * sizeof(size_t));
  int *nproc = calloc(per ? per : 1, sizeof(int));
  int64_t *first_off = malloc((per ? per : 1) * sizeof(int64_t));
  /* skip_before[k]: number of NON-skippable seqs in [0, k). */
  int *nonskip = malloc((per + 1) * sizeof(int));
  if (!running || !nproc || !first_off || !nonskip)
    abort();

  for (int user = 0; user < v->users; user++) {
    kf_user_t *u = &v->u[user];
    size_t base = (size_t)user * per;
    nonskip[0] = 0;
    for (size_t s = 0; s < per; s++) {
      int skippable = v->status[base + s] != KF_PROD_DELIVERED ||
                      v->dlq_cons[base + s] > 0;
      nonskip[s + 1] = nonskip[s] + !skippable;
      nproc[s] = 0;
    }
    if (u->n)
      qsort(u->ev, u->n, sizeof(*u->ev), kf_cmp_event);
    kf_count_overlaps(u, user, running, r);
    int cur = -1;
    for (size_t i = 0; i < u->n; i++) {
      const kf_event_t *e = &u->ev[i];
      int s = e->seq;
      int64_t c = kf_commit_before(v, e->part, e->t);
      if (nproc[s]++) {
        if (e->off != first_off[s]) {
          r->dup_in_topic++;
          KF_PROBLEM(r, "user %d seq %d is in the topic twice: offsets %lld "
                        "and %lld",
                     user, s, (long long)first_off[s], (long long)e->off);
        } else if (e->off < c) {
          r->dup_committed++;
          KF_PROBLEM(r, "user %d seq %d (partition %d offset %lld) processed "
                        "again after offset %lld was committed",
                     user, s, e->part, (long long)e->off, (long long)c);
        } else {
          r->dup_uncommitted++;
        }
      } else {
        first_off[s] = e->off;
      }
      if (s <= cur) {
        if (e->off >= c) {
          r->restarts++;
        } else {
          r->reordered++;
          KF_PROBLEM(r, "user %d went back from seq %d to %d (offset %lld) "
                        "below the commit %lld of partition %d",
                     user, cur, s, (long long)e->off, (long long)c, e->part);
        }
      } else if (nonskip[s] - nonskip[cur + 1] > 0) {
        r->gaps++;
        r->reordered++;
        KF_PROBLEM(r, "user %d jumped from seq %d to %d: %d message(s) "
                      "between them not processed yet",
                   user, cur, s, nonskip[s] - nonskip[cur + 1]);
      }
      cur = s;
    }
    for (size_t s = 0; s < per; s++) {
      int st = v->status[base + s];
      int dlq = v->dlq_cons[base + s] > 0;
      if (nproc[s])
        r->processed++;
      if (dlq)
        r->consumer_dlq++;
      switch (st) {
      case KF_PROD_DELIVERED:
        r->in_topic++;
        break;
      case KF_PROD_DLQ:
        r->producer_dlq++;
        break;
      case KF_PROD_FALLBACK:
        r->producer_fallback++;
        break;
      default:
        r->producer_lost++;
        break;
      }
      if (st != KF_PROD_DELIVERED && nproc[s])
        r->dlq_and_processed++;
      if (nproc[s] || dlq)
        continue;
      if (st == KF_PROD_DELIVERED) {
        r->lost++;
        KF_PROBLEM(r, "user %d seq %d was delivered but never processed nor "
                      "dead-lettered",
                   user, (int)s);
      } else if (st == KF_PROD_DLQ && v->dlq_read &&
                 !v->dlq_prod[base + s]) {
        r->dlq_missing++;
        r->lost++;
        KF_PROBLEM(r, "user %d seq %d: the producer reported DLQ but the DLQ "
                      "topic does not hold it",
                   user, (int)s);
      } else if (st == KF_PROD_LOST || st == KF_PROD_NONE) {
        r->lost++;
        KF_PROBLEM(r, "user %d seq %d: producer status %s", user, (int)s,
                   st == KF_PROD_LOST ? "LOST" : "no delivery report");
      }
    }
  }
  free(running);
  free(nproc);
  free(first_off);
  free(nonskip);
}

int64_t kf_report_reason(const kf_report_t *r, const char *reason) {
  for (int i = 0; i < r->nreasons; i++)
    if (!strcmp(r->reasons[i].reason, reason))
      return r->reasons[i].count;
  return 0;
}

void kf_report_print(const kf_report_t *r, const char *title, FILE *out) {
  fprintf(out,
          "[%s] messages=%lld in_topic=%lld processed=%lld events=%lld "
          "lost=%lld dup_uncommitted=%lld dup_committed=%lld "
          "dup_in_topic=%lld reordered=%lld (gaps=%lld) restarts=%lld "
          "overlaps=%lld max_overlap_ms=%.1f (timed=%lld) "
          "stalled=%lld (of %lld) "
          "producer_dlq=%lld producer_fallback=%lld producer_lost=%lld "
          "consumer_dlq=%lld dlq_and_processed=%lld dlq_records=%lld",
          title, (long long)r->produced, (long long)r->in_topic,
          (long long)r->processed, (long long)r->events, (long long)r->lost,
          (long long)r->dup_uncommitted, (long long)r->dup_committed,
          (long long)r->dup_in_topic, (long long)r->reordered,
          (long long)r->gaps, (long long)r->restarts, (long long)r->overlaps,
          r->max_overlap_ms, (long long)r->spans,
          (long long)r->stalled_partitions, (long long)r->ended_partitions,
          (long long)r->producer_dlq, (long long)r->producer_fallback,
          (long long)r->producer_lost, (long long)r->consumer_dlq,
          (long long)r->dlq_and_processed, (long long)r->dlq_records);
  for (int i = 0; i < r->nreasons; i++)
    fprintf(out, " %s=%lld", r->reasons[i].reason,
            (long long)r->reasons[i].count);
  if (r->first_problem[0])
    fprintf(out, "\n[%s] first problem: %s", title, r->first_problem);
  if (r->first_overlap[0] && strcmp(r->first_overlap, r->first_problem))
    fprintf(out, "\n[%s] first overlap: %s", title, r->first_overlap);
  fputc('\n', out);
  fflush(out);
}
