/*
 * Prometheus text exposition (format 0.0.4) and JSON writers over a growing
 * string buffer. They run on the metrics endpoint's HTTP thread (or a
 * test), never on the hot path: the buffer grows with realloc, and an
 * allocation failure is sticky (oom set, later writes ignored) so a writer
 * checks once at the end.
 */
#ifndef KMQ_RUNTIME_METRICS_EXPO_H
#define KMQ_RUNTIME_METRICS_EXPO_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *buf; /* NUL-terminated; owned (free() it, or hand it on) */
  size_t len, cap;
  int oom;
} kmq__sb_t;

void kmq__sb_printf(kmq__sb_t *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kmq__sb_put(kmq__sb_t *sb, const char *s, size_t len);

/* "# HELP name help\n# TYPE name type\n"; type: counter, gauge, histogram.
 * Escapes the help text (backslash, newline). */
void kmq__expo_family(kmq__sb_t *sb, const char *name, const char *type,
                      const char *help);

/* Labels of one sample: pairs name, value; a NULL name ends the list (a
 * NULL list: no labels). Values are escaped (backslash, double quote,
 * newline); invalid UTF-8 bytes become U+FFFD, as the format requires
 * UTF-8. */
typedef struct {
  const char *name;
  const char *value;
} kmq__label_t;

/* One sample: name{labels} value. */
void kmq__expo_int(kmq__sb_t *sb, const char *name, const kmq__label_t *l,
                   int64_t v);
void kmq__expo_double(kmq__sb_t *sb, const char *name, const kmq__label_t *l,
                      double v);

/* A histogram's samples (after its kmq__expo_family): name_bucket{le=...}
 * for every bound (le_s in seconds, ascending) with cumulative counts, the
 * +Inf bucket (= count), name_sum and name_count. counts[] must be
 * cumulative (kmq_hist_cumulative). */
void kmq__expo_histogram(kmq__sb_t *sb, const char *name,
                         const kmq__label_t *l, const double *le_s,
                         const uint64_t *counts, size_t n, uint64_t count,
                         double sum);

/* A JSON string (with its quotes): escapes quotes, backslashes and control
 * characters; invalid UTF-8 bytes become U+FFFD. len bytes of s. */
void kmq__json_str(kmq__sb_t *sb, const char *s, size_t len);

#endif
