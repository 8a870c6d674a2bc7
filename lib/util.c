#include "lib/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t kmq__wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void *kmq__zalloc_lines(size_t size) {
  size = (size + KMQ__CACHELINE - 1) / KMQ__CACHELINE * KMQ__CACHELINE;
  void *p = aligned_alloc(KMQ__CACHELINE, size);
  if (p)
    memset(p, 0, size);
  return p;
}

int64_t kmq__mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kmq__mono_deadline(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(ms / 1000);
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

void kmq__rfc3339(int64_t wall_ms, char *buf, size_t size) {
  time_t s = (time_t)(wall_ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  char tmp[32];
  strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, size, "%s.%03dZ", tmp, (int)(wall_ms % 1000));
}

char *kmq__base64(const void *in, size_t len, size_t *out_len) {
  static const char tbl[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = in;
  size_t n = 4 * ((len + 2) / 3);
  char *out = malloc(n + 1), *o = out;
  if (!out)
    return NULL;
  size_t i = 0;
  for (; i + 2 < len; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = tbl[v >> 18];
    *o++ = tbl[(v >> 12) & 63];
    *o++ = tbl[(v >> 6) & 63];
    *o++ = tbl[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < len)
      v |= (uint32_t)p[i + 1] << 8;
    *o++ = tbl[v >> 18];
    *o++ = tbl[(v >> 12) & 63];
    *o++ = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
  *o = '\0';
  if (out_len)
    *out_len = n;
  return out;
}

/* The inverse of kmq__base64 (a dead letter's payload_base64, for replay). */
unsigned char *kmq__unbase64(const char *s, size_t *out_len) {
  size_t n = strlen(s), k = 0;
  unsigned char *o = malloc(n / 4 * 3 + 3);
  uint32_t acc = 0;
  int bits = 0;
  if (!o)
    return NULL;
  for (size_t i = 0; i < n && s[i] != '='; i++) {
    int c = (unsigned char)s[i];
    int v = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+'             ? 62
            : c == '/'             ? 63
                                   : -1;
    if (v < 0) {
      free(o);
      return NULL;
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[k++] = (unsigned char)(acc >> bits);
    }
  }
  *out_len = k;
  return o;
}

static void *kmq__poller_main(void *arg) {
  kmq__poller_t *p = arg;
  /* Relaxed is enough: the flag carries no data, and pthread_join in
   * kmq__poller_stop orders everything the thread did before the caller. */
  while (!atomic_load_explicit(&p->stop, memory_order_relaxed))
    rd_kafka_poll(p->rk, 100);
  return NULL;
}

void kmq__flush_then_purge(rd_kafka_t *rk, int64_t deadline_ms) {
  int64_t left = deadline_ms - kmq__mono_ms();
  rd_kafka_flush(rk, left > 0 ? (int)left : 0);
  if (rd_kafka_outq_len(rk) == 0)
    return;
  rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  /* Purged messages get their reports without a network round trip; this
   * only runs the callbacks. */
  rd_kafka_flush(rk, KMQ__PURGE_SERVE_MS);
}

int kmq__poller_start(kmq__poller_t *p, rd_kafka_t *rk) {
  p->rk = rk;
  atomic_init(&p->stop, 0);
  if (pthread_create(&p->thread, NULL, kmq__poller_main, p))
    return -1;
  pthread_setname_np(p->thread, "kmq-poller"); /* cosmetic: top, gdb, perf */
  p->running = 1;
  return 0;
}

void kmq__poller_stop(kmq__poller_t *p) {
  if (!p->running)
    return;
  atomic_store_explicit(&p->stop, 1, memory_order_relaxed);
  pthread_join(p->thread, NULL);
  p->running = 0;
}

void kmq__log(const char *level, const char *who, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%%KMQ|%s|%s: %s\n", level, who, msg);
}
