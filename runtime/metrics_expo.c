/* Exposition and JSON writers (runtime/metrics_expo.h). */
#include "runtime/metrics_expo.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int kmq__sb_reserve(kmq__sb_t *sb, size_t more) {
  if (sb->oom)
    return -1;
  if (sb->len + more + 1 <= sb->cap)
    return 0;
  size_t cap = sb->cap ? sb->cap : 4096;
  while (cap < sb->len + more + 1)
    cap *= 2;
  char *n = realloc(sb->buf, cap);
  if (!n) {
    sb->oom = 1;
    return -1;
  }
  sb->buf = n;
  sb->cap = cap;
  return 0;
}

void kmq__sb_put(kmq__sb_t *sb, const char *s, size_t len) {
  if (kmq__sb_reserve(sb, len))
    return;
  memcpy(sb->buf + sb->len, s, len);
  sb->len += len;
  sb->buf[sb->len] = '\0';
}

void kmq__sb_printf(kmq__sb_t *sb, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || kmq__sb_reserve(sb, (size_t)n))
    return;
  va_start(ap, fmt);
  vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sb->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (at most left bytes), 0 when it
 * is not one (overlong forms and surrogates included). */
static size_t kmq__utf8_len(const unsigned char *s, size_t left) {
  if (s[0] < 0x80)
    return 1;
  size_t n = s[0] >= 0xF0 && s[0] <= 0xF4   ? 4
             : s[0] >= 0xE0                 ? 3
             : s[0] >= 0xC2 && s[0] <= 0xDF ? 2
                                            : 0;
  if (!n || n > left)
    return 0;
  for (size_t i = 1; i < n; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
    return 0;
  if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
    return 0;
  return n;
}

/* Escapes len bytes of s: json selects JSON's rules, else the exposition
 * format's label-value rules (help text uses label rules without quote
 * escaping: quote_ok). */
static void kmq__escape(kmq__sb_t *sb, const char *s, size_t len, int json,
                        int quote_ok) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    size_t start = i;
    /* Copy a run of bytes that need nothing. */
    while (i < len && u[i] >= 0x20 && u[i] < 0x80 && u[i] != '\\' &&
           (quote_ok || u[i] != '"'))
      i++;
    kmq__sb_put(sb, s + start, i - start);
    if (i == len)
      break;
    unsigned char ch = u[i];
    if (ch >= 0x80) {
      size_t n = kmq__utf8_len(u + i, len - i);
      if (n) {
        kmq__sb_put(sb, s + i, n);
        i += n;
      } else {
        kmq__sb_put(sb, "\xEF\xBF\xBD", 3); /* U+FFFD */
        i++;
      }
      continue;
    }
    i++;
    if (ch == '\\')
      kmq__sb_put(sb, "\\\\", 2);
    else if (ch == '"')
      kmq__sb_put(sb, "\\\"", 2);
    else if (ch == '\n')
      kmq__sb_put(sb, "\\n", 2);
    else if (json)
      kmq__sb_printf(sb, "\\u%04x", ch);
    else /* other control bytes are legal in label values; keep them
            visible instead */
      kmq__sb_printf(sb, "\\\\x%02x", ch);
  }
}

void kmq__expo_family(kmq__sb_t *sb, const char *name, const char *type,
                      const char *help) {
  kmq__sb_printf(sb, "# HELP %s ", name);
  kmq__escape(sb, help, strlen(help), 0, 1);
  kmq__sb_printf(sb, "\n# TYPE %s %s\n", name, type);
}

static void kmq__labels(kmq__sb_t *sb, const kmq__label_t *l,
                        const char *le) {
  if ((!l || !l->name) && !le)
    return;
  kmq__sb_put(sb, "{", 1);
  int first = 1;
  for (; l && l->name; l++) {
    kmq__sb_printf(sb, "%s%s=\"", first ? "" : ",", l->name);
    kmq__escape(sb, l->value, strlen(l->value), 0, 0);
    kmq__sb_put(sb, "\"", 1);
    first = 0;
  }
  if (le)
    kmq__sb_printf(sb, "%sle=\"%s\"", first ? "" : ",", le);
  kmq__sb_put(sb, "}", 1);
}

void kmq__expo_int(kmq__sb_t *sb, const char *name, const kmq__label_t *l,
                   int64_t v) {
  kmq__sb_put(sb, name, strlen(name));
  kmq__labels(sb, l, NULL);
  kmq__sb_printf(sb, " %lld\n", (long long)v);
}

/* The format's spelling of a float: Go's ParseFloat reads %.17g, and the
 * special values are +Inf, -Inf, NaN. */
static void kmq__fmt_double(char *buf, size_t size, double v) {
  if (isnan(v))
    snprintf(buf, size, "NaN");
  else if (isinf(v))
    snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
  else
    snprintf(buf, size, "%.17g", v);
}

void kmq__expo_double(kmq__sb_t *sb, const char *name, const kmq__label_t *l,
                      double v) {
  char num[64];
  kmq__fmt_double(num, sizeof(num), v);
  kmq__sb_put(sb, name, strlen(name));
  kmq__labels(sb, l, NULL);
  kmq__sb_printf(sb, " %s\n", num);
}

void kmq__expo_histogram(kmq__sb_t *sb, const char *name,
                         const kmq__label_t *l, const double *le_s,
                         const uint64_t *counts, size_t n, uint64_t count,
                         double sum) {
  char le[64];
  for (size_t i = 0; i < n; i++) {
    /* %g: bounds such as 0.005 print as they were written. */
    snprintf(le, sizeof(le), "%g", le_s[i]);
    kmq__sb_printf(sb, "%s_bucket", name);
    kmq__labels(sb, l, le);
    kmq__sb_printf(sb, " %llu\n", (unsigned long long)counts[i]);
  }
  kmq__sb_printf(sb, "%s_bucket", name);
  kmq__labels(sb, l, "+Inf");
  kmq__sb_printf(sb, " %llu\n", (unsigned long long)count);
  char num[64];
  kmq__fmt_double(num, sizeof(num), sum);
  kmq__sb_printf(sb, "%s_sum", name);
  kmq__labels(sb, l, NULL);
  kmq__sb_printf(sb, " %s\n%s_count", num, name);
  kmq__labels(sb, l, NULL);
  kmq__sb_printf(sb, " %llu\n", (unsigned long long)count);
}

void kmq__json_str(kmq__sb_t *sb, const char *s, size_t len) {
  kmq__sb_put(sb, "\"", 1);
  kmq__escape(sb, s, len, 1, 0);
  kmq__sb_put(sb, "\"", 1);
}
