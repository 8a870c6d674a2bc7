/* Reason strings and strict UTF-8 validation for the message model. */
#include "processors/msg_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static size_t kmq__utf8_seqlen(unsigned char lead) {
  if (lead < 0x80)
    return 1;
  if (lead >= 0xC0 && lead < 0xE0)
    return 2;
  if (lead >= 0xE0 && lead < 0xF0)
    return 3;
  if (lead >= 0xF0 && lead < 0xF8)
    return 4;
  return 0; /* continuation or invalid */
}

size_t kmq__utf8_trim(const char *s, size_t len) {
  if (!len)
    return 0;
  const unsigned char *p = (const unsigned char *)s;
  size_t k = len - 1;
  while (k > 0 && (p[k] & 0xC0) == 0x80 && len - k < 4)
    k--;
  size_t need = kmq__utf8_seqlen(p[k]);
  if (need && k + need > len)
    return k; /* the last character was cut */
  return len;
}

void kmq__verrset(char *errstr, size_t errstr_size, const char *fmt,
                  va_list ap) {
  if (!errstr || !errstr_size)
    return;
  int n = vsnprintf(errstr, errstr_size, fmt, ap);
  if (n >= 0 && (size_t)n >= errstr_size)
    errstr[kmq__utf8_trim(errstr, errstr_size - 1)] = '\0';
}

void kmq__errset(char *errstr, size_t errstr_size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kmq__verrset(errstr, errstr_size, fmt, ap);
  va_end(ap);
}

void kmq__quote(char *dst, size_t dst_size, const char *s, size_t len) {
  if (!dst || !dst_size)
    return;
  size_t take = len, o = 0;
  int cut = 0;
  if (take > KMQ__QUOTE_MAX) {
    take = kmq__utf8_trim(s, KMQ__QUOTE_MAX);
    cut = 1;
  }
#define KMQ__PUT(c)                                                            \
  do {                                                                         \
    if (o + 1 < dst_size)                                                      \
      dst[o++] = (c);                                                          \
  } while (0)
  KMQ__PUT('"');
  for (size_t i = 0; i < take; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7F) {
      char hex[5];
      snprintf(hex, sizeof(hex), "\\x%02x", c);
      for (int j = 0; j < 4; j++)
        KMQ__PUT(hex[j]);
    } else if (c == '"' || c == '\\') {
      KMQ__PUT('\\');
      KMQ__PUT((char)c);
    } else {
      KMQ__PUT((char)c);
    }
  }
  KMQ__PUT('"');
  if (cut)
    for (int j = 0; j < 3; j++)
      KMQ__PUT('.');
#undef KMQ__PUT
  dst[o] = '\0';
  /* A tiny dst may have cut a character: keep the output valid UTF-8. */
  dst[kmq__utf8_trim(dst, o)] = '\0';
}

/* Length of the valid UTF-8 character at p (avail bytes readable), or 0. */
static size_t kmq__utf8_char_len(const unsigned char *p, size_t avail) {
  size_t need = kmq__utf8_seqlen(p[0]);
  if (!need || need > avail)
    return 0;
  uint32_t cp = p[0] & (0xFFu >> (need + 1));
  for (size_t k = 1; k < need; k++) {
    if ((p[k] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[k] & 0x3Fu);
  }
  static const uint32_t kmin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kmin[need] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return 0;
  return need;
}

void kmq__utf8_scrub(char *s) {
  unsigned char *p = (unsigned char *)s;
  size_t len = strlen(s);
  for (size_t i = 0; i < len;) {
    size_t n = kmq__utf8_char_len(p + i, len - i);
    if (!n || p[i] < 0x20 || p[i] == 0x7F) {
      p[i++] = '?';
      continue;
    }
    i += n;
  }
}

/* "0xe0 0x80 0x80": the n bytes at p, for reasons. */
static void kmq__hexbytes(char *dst, size_t size, const unsigned char *p,
                          size_t n) {
  size_t o = 0;
  dst[0] = '\0';
  for (size_t i = 0; i < n && o < size; i++) {
    int w = snprintf(dst + o, size - o, "%s0x%02x", i ? " " : "", p[i]);
    if (w < 0)
      break;
    o += (size_t)w;
  }
}

/* The ASCII fast path reads 8 bytes at a time; memcpy keeps it free of
 * alignment and aliasing assumptions (compilers turn it into one load). */
static size_t kmq__ascii_prefix(const unsigned char *p, size_t len) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if (w & UINT64_C(0x8080808080808080))
      break;
  }
  while (i < len && p[i] < 0x80)
    i++;
  return i;
}

int kmq__utf8_check(const void *buf, size_t len, char *errstr,
                    size_t errstr_size) {
  const unsigned char *p = buf;
  char hex[32];
  size_t i = 0;
  while (i < len) {
    i += kmq__ascii_prefix(p + i, len - i);
    if (i >= len)
      break;
    unsigned char c = p[i];
    size_t need = kmq__utf8_seqlen(c);
    if (!need) {
      if (c < 0xC0)
        kmq__errset(errstr, errstr_size,
                    "invalid UTF-8 at byte %zu: unexpected continuation byte "
                    "0x%02x",
                    i, c);
      else
        kmq__errset(errstr, errstr_size,
                    "invalid UTF-8 at byte %zu: byte 0x%02x never appears in "
                    "UTF-8",
                    i, c);
      return -1;
    }
    /* Every byte present must continue the sequence before we complain
     * about the end of input: "0xe4 0x41" is a bad continuation, not a
     * truncation. */
    uint32_t cp = c & (0xFFu >> (need + 1));
    for (size_t k = 1; k < need; k++) {
      if (i + k >= len) {
        kmq__hexbytes(hex, sizeof(hex), p + i, len - i);
        kmq__errset(errstr, errstr_size,
                    "invalid UTF-8 at byte %zu: %zu-byte sequence truncated "
                    "by the end of the value (%s)",
                    i, need, hex);
        return -1;
      }
      if ((p[i + k] & 0xC0) != 0x80) {
        kmq__hexbytes(hex, sizeof(hex), p + i, k + 1);
        kmq__errset(errstr, errstr_size,
                    "invalid UTF-8 at byte %zu: byte 0x%02x does not continue "
                    "the %zu-byte sequence (%s)",
                    i, p[i + k], need, hex);
        return -1;
      }
      cp = (cp << 6) | (p[i + k] & 0x3Fu);
    }
    static const uint32_t kmin[5] = {0, 0, 0x80, 0x800, 0x10000};
    /* The hex dump is built on the error paths only: valid text is the
     * common case and pays nothing for the message. */
    if (cp < kmin[need]) {
      kmq__hexbytes(hex, sizeof(hex), p + i, need);
      kmq__errset(errstr, errstr_size,
                  "invalid UTF-8 at byte %zu: overlong %zu-byte encoding of "
                  "U+%04X (%s)",
                  i, need, (unsigned)cp, hex);
      return -1;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) {
      kmq__hexbytes(hex, sizeof(hex), p + i, need);
      kmq__errset(errstr, errstr_size,
                  "invalid UTF-8 at byte %zu: UTF-16 surrogate U+%04X encoded "
                  "as UTF-8 (%s)",
                  i, (unsigned)cp, hex);
      return -1;
    }
    if (cp > 0x10FFFF) {
      kmq__hexbytes(hex, sizeof(hex), p + i, need);
      kmq__errset(errstr, errstr_size,
                  "invalid UTF-8 at byte %zu: code point U+%X is above "
                  "U+10FFFF (%s)",
                  i, (unsigned)cp, hex);
      return -1;
    }
    i += need;
  }
  return 0;
}
