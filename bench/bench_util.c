/* kmq-bench helpers: rows and medians, clocks, RSS, payloads, topics. */
#include "bench.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kmq/admin.h"
#include "traffic.h"

void bench_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kmq-bench: error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

void bench_log(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kmq-bench: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

/* ---- rows ---- */

bench_row_t *bench_row_add(bench_run_t *run, const char *impl,
                           const char *phase) {
  if (run->nrows == BENCH_MAX_ROWS)
    bench_die("too many rows");
  bench_row_t *r = &run->rows[run->nrows++];
  memset(r, 0, sizeof(*r));
  snprintf(r->impl, sizeof(r->impl), "%s", impl);
  snprintf(r->phase, sizeof(r->phase), "%s", phase);
  r->n = r->secs = r->msg_s = r->mb_s = -1;
  r->p50_us = r->p99_us = r->p999_us = r->max_us = -1;
  return r;
}

void bench_row_extra(bench_row_t *r, const char *key, double v) {
  for (int i = 0; i < r->nextra; i++)
    if (!strcmp(r->extra[i].key, key)) {
      r->extra[i].v = v;
      return;
    }
  if (r->nextra == BENCH_MAX_EXTRA)
    bench_die("too many extras in a row");
  snprintf(r->extra[r->nextra].key, sizeof(r->extra[0].key), "%s", key);
  r->extra[r->nextra++].v = v;
}

double bench_row_get_extra(const bench_row_t *r, const char *key) {
  for (int i = 0; i < r->nextra; i++)
    if (!strcmp(r->extra[i].key, key))
      return r->extra[i].v;
  return -1;
}

bench_row_t *bench_row_find(bench_run_t *run, const char *impl,
                            const char *phase) {
  for (int i = 0; i < run->nrows; i++)
    if (!strcmp(run->rows[i].impl, impl) &&
        !strcmp(run->rows[i].phase, phase))
      return &run->rows[i];
  return NULL;
}

void bench_ratio(bench_run_t *run, const char *key, double v) {
  if (run->nratios == BENCH_MAX_RATIOS)
    bench_die("too many ratios");
  snprintf(run->ratios[run->nratios].key, sizeof(run->ratios[0].key), "%s",
           key);
  run->ratios[run->nratios++].v = v;
}

static int bench__cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of the values that are not -1 (n/a); -1 when there is none. */
static double bench__med(double *v, int n) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (v[i] != -1)
      v[k++] = v[i];
  if (!k)
    return -1;
  qsort(v, (size_t)k, sizeof(*v), bench__cmp);
  return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

void bench_median(const bench_run_t *runs, int n, bench_run_t *out) {
  memset(out, 0, sizeof(*out));
  double v[BENCH_MAX_REPS];
  /* Rows in the order of their first appearance. */
  for (int r = 0; r < n; r++)
    for (int i = 0; i < runs[r].nrows; i++) {
      const bench_row_t *src = &runs[r].rows[i];
      if (bench_row_find(out, src->impl, src->phase))
        continue;
      bench_row_t *m = bench_row_add(out, src->impl, src->phase);
#define BENCH__MED(field)                                                      \
  do {                                                                         \
    int k = 0;                                                                 \
    for (int q = 0; q < n; q++) {                                              \
      bench_row_t *x =                                                         \
          bench_row_find((bench_run_t *)&runs[q], src->impl, src->phase);      \
      if (x)                                                                   \
        v[k++] = x->field;                                                     \
    }                                                                          \
    m->field = bench__med(v, k);                                               \
  } while (0)
      BENCH__MED(n);
      BENCH__MED(secs);
      BENCH__MED(msg_s);
      BENCH__MED(mb_s);
      BENCH__MED(p50_us);
      BENCH__MED(p99_us);
      BENCH__MED(p999_us);
      BENCH__MED(max_us);
#undef BENCH__MED
      for (int e = 0; e < src->nextra; e++) {
        int k = 0;
        for (int q = 0; q < n; q++) {
          bench_row_t *x =
              bench_row_find((bench_run_t *)&runs[q], src->impl, src->phase);
          if (x)
            v[k++] = bench_row_get_extra(x, src->extra[e].key);
        }
        bench_row_extra(m, src->extra[e].key, bench__med(v, k));
      }
    }
  for (int i = 0; n && i < runs[0].nratios; i++) {
    const char *key = runs[0].ratios[i].key;
    int k = 0;
    for (int q = 0; q < n; q++)
      for (int j = 0; j < runs[q].nratios; j++)
        if (!strcmp(runs[q].ratios[j].key, key))
          v[k++] = runs[q].ratios[j].v;
    bench_ratio(out, key, bench__med(v, k));
  }
  for (int q = 0; q < n; q++)
    out->failed |= runs[q].failed;
}

/* ---- clocks, memory, randomness ---- */

int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_now_us(void) { return bench_now_ns() / 1000; }

void bench_sleep_until_us(int64_t t_us) {
  struct timespec ts = {(time_t)(t_us / 1000000), (long)(t_us % 1000000) * 1000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL))
    ;
}

void bench_sleep_us(int64_t us) {
  struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

long long bench_status_field(const char *path, const char *field) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  char line[256];
  long long v = -1;
  size_t n = strlen(field);
  /* "Field:\t123 kB" or "Field:\t123": the ':' right after the name, so
   * that a field is never taken for a longer one it begins. */
  while (fgets(line, sizeof(line), f))
    if (!strncmp(line, field, n) && sscanf(line + n, ": %lld", &v) == 1)
      break;
  fclose(f);
  return v;
}

static long bench__status_kb(const char *field) {
  return (long)bench_status_field("/proc/self/status", field);
}

long bench_rss_kb(void) { return bench__status_kb("VmRSS"); }

long bench_rss_peak_reset(void) {
  /* "5" resets the peak (VmHWM) to the current RSS (Linux 4.0+,
   * Documentation/filesystems/proc.rst). */
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f)
    return -1;
  int ok = fputs("5", f) >= 0;
  ok &= fclose(f) == 0;
  return ok ? bench__status_kb("VmHWM") : -1;
}

long bench_rss_peak_kb(void) { return bench__status_kb("VmHWM"); }

int64_t bench_cpu_us(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru))
    return -1;
  return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
         ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

double bench_loadavg(void) {
  FILE *f = fopen("/proc/loadavg", "r");
  double v = -1;
  if (f) {
    if (fscanf(f, "%lf", &v) != 1)
      v = -1;
    fclose(f);
  }
  return v;
}

uint64_t bench_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

size_t bench_envelope(int u, int seq, int64_t t_us, int64_t s_us, int size,
                      uint64_t *rng, char *buf, size_t cap) {
  static const char alpha[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  char env[2048];
  int n = kmq_traffic_envelope(u, seq, env, sizeof(env));
  if (n <= 0 || (size_t)n >= sizeof(env))
    bench_die("kmq_traffic_envelope failed");
  const char *c = strstr(env, "\"content\":{");
  if (!c)
    bench_die("envelope without content");
  size_t head = (size_t)(c - env) + strlen("\"content\":{");
  char stamp[96] = "";
  int sl = 0;
  if (t_us >= 0)
    sl = snprintf(stamp, sizeof(stamp), "\"bench_t_us\":%lld,",
                  (long long)t_us);
  if (s_us >= 0)
    snprintf(stamp + sl, sizeof(stamp) - (size_t)sl, "\"bench_s_us\":%lld,",
             (long long)s_us);
  /* {"pad":"...",<rest of the envelope's members>} */
  size_t fixed = (size_t)n + strlen(stamp) + strlen("\"pad\":\"\",");
  size_t pad = size > 0 && (size_t)size > fixed ? (size_t)size - fixed : 0;
  size_t len = 0;
  if (fixed + pad + 1 > cap)
    bench_die("payload buffer too small (%zu bytes)", cap);
  buf[len++] = '{';
  if (pad) {
    memcpy(buf + len, "\"pad\":\"", 7);
    len += 7;
    for (size_t i = 0; i < pad; i++)
      buf[len++] = alpha[bench_rand(rng) % (sizeof(alpha) - 1)];
    memcpy(buf + len, "\",", 2);
    len += 2;
  }
  memcpy(buf + len, env + 1, head - 1);
  len += head - 1;
  memcpy(buf + len, stamp, strlen(stamp));
  len += strlen(stamp);
  memcpy(buf + len, env + head, (size_t)n - head);
  len += (size_t)n - head;
  buf[len] = '\0';
  return len;
}

/* ---- Kafka helpers ---- */

void bench_conf_set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[512];
  if (kmq_conf_set(c, k, v, errstr, sizeof(errstr)))
    bench_die("conf %s=%s: %s", k, v, errstr);
}

kmq_conf_t *bench_conf(const bench_opts_t *o, const char *topic,
                       const char *group) {
  kmq_conf_t *c = kmq_conf_new();
  if (!c)
    bench_die("out of memory");
  bench_conf_set(c, "bootstrap.servers", o->bootstrap);
  if (topic)
    bench_conf_set(c, "kmq.topic", topic);
  if (group)
    bench_conf_set(c, "group.id", group);
  for (int i = 0; i < o->nset; i++) {
    char kv[512];
    snprintf(kv, sizeof(kv), "%s", o->set[i]);
    char *eq = strchr(kv, '=');
    if (!eq)
      bench_die("--set %s: expected key=value", o->set[i]);
    *eq = '\0';
    bench_conf_set(c, kv, eq + 1);
  }
  return c;
}

void bench_create_topic(const bench_opts_t *o, const char *topic) {
  char errstr[512];
  kmq_conf_t *c = bench_conf(o, NULL, NULL);
  kmq_err_t err = kmq_admin_create_topic(c, topic, o->partitions, 1, NULL, 1,
                                         30000, errstr, sizeof(errstr));
  kmq_conf_destroy(c);
  if (err)
    bench_die("create topic %s: %s", topic, errstr);
}

void bench_name(char *buf, size_t size, const char *prefix) {
  static int counter;
  snprintf(buf, size, "%s-%ld-%d-%d", prefix, (long)time(NULL), (int)getpid(),
           counter++);
}

int64_t bench_group_lag(const bench_opts_t *o, const char *group,
                        const char *topic) {
  kmq_partition_lag_t lag[256];
  int n = 256;
  char errstr[512];
  kmq_conf_t *c = bench_conf(o, NULL, NULL);
  kmq_err_t err = kmq_admin_group_lag(c, group, topic, lag, &n, 10000, errstr,
                                      sizeof(errstr));
  kmq_conf_destroy(c);
  if (err) {
    bench_log("group lag of %s: %s", group, errstr);
    return -1;
  }
  int64_t sum = 0;
  for (int i = 0; i < n; i++)
    sum += lag[i].lag;
  return sum;
}
