/* libFuzzer target: the commit gate's metadata text (include/kmq/gate.h,
 * kmq_gate_restore_done / kmq_gate_encode_done), which comes back from the
 * broker and is therefore outside input.
 *
 * The first byte picks a mode and a window (64 .. 8192 offsets).
 *  - Decode (even first byte): the rest is a metadata text. A fresh gate is
 *    created at the committable offset the text names (so most inputs reach
 *    the run decoder), or one off it when bit 4..5 say so. The result must
 *    match a reference decoder written plainly from the format in gate.h
 *    (bits expanded into an array, one flag per offset): same accept /
 *    reject and error code, the same finished offsets, counters consistent;
 *    a refused text leaves the gate exactly as new. An accepted text is then
 *    re-encoded, whole and cut to a size from the input, and restored again:
 *    exact below covered_end, nothing claimed at or past it.
 *  - Encode (odd first byte): the rest drives a gate (track, gaps,
 *    mark_done in any order); its finished set is encoded at a size from
 *    the input and restored into a fresh gate, with the same checks. With
 *    bit 4 set, the restored gate is then driven by what input is left
 *    (track, mark_done, is_done anywhere around the window) against a
 *    model of one flag per offset: restored offsets are finished, track
 *    refuses them, the counters stay what they mean.
 * ASan and UBSan watch memory and arithmetic throughout.
 *
 *   CC=clang cmake -S . -B build-fuzz -G Ninja -DKMQ_FUZZ=ON
 *   ninja -C build-fuzz fuzz_gate_meta
 *   build-fuzz/tests/fuzz_gate_meta -max_total_time=60 tests/fuzz/corpus/gate_meta
 * or bash tests/faults/fuzz.sh gate_meta
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/gate.h"

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "gate metadata contract violated: %s: ", #cond);        \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static kmq_gate_t *gate(int64_t start, size_t window) {
  char errstr[128];
  kmq_gate_t *g = kmq_gate_new(start, window, errstr, sizeof(errstr));
  CHECK(g, "kmq_gate_new(%lld, %zu): %s", (long long)start, window, errstr);
  return g;
}

/* ---- The reference decoder: gate.h's format, the slow obvious way ---- */

static int ref_b64(unsigned char c) {
  const char *a =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const char *p = c ? strchr(a, c) : NULL;
  return p ? (int)(p - a) : -1;
}

/* Reads an order-k exp-Golomb code from bits[*i..n). 0 on success. */
static int ref_eg(const unsigned char *bits, size_t n, size_t *i, int k,
                  unsigned __int128 *v) {
  int z = 0;
  while (*i < n && !bits[*i]) {
    z++;
    (*i)++;
  }
  if (*i == n || z + k > 61) /* no terminating 1, or past 2^62 */
    return -1;
  unsigned __int128 q = 0;
  for (int b = 0; b <= z; b++) {
    if (*i == n)
      return -1;
    q = q << 1 | bits[(*i)++];
  }
  unsigned __int128 low = 0;
  for (int b = 0; b < k; b++) {
    if (*i == n)
      return -1;
    low = low << 1 | bits[(*i)++];
  }
  *v = ((q - 1) << k) | low;
  return 0;
}

/* flags[o - start] for o in [start, start + window): finished. */
static kmq_err_t ref_parse(const char *t, size_t n, int64_t start,
                           size_t window, unsigned char *flags) {
  memset(flags, 0, window);
  if (n < 3 || memcmp(t, "k1:", 3))
    return KMQ_ERR_BAD_FIELD;
  size_t i = 3, d = 0;
  unsigned __int128 c = 0;
  while (i < n && t[i] >= '0' && t[i] <= '9') {
    c = c * 10 + (unsigned)(t[i] - '0');
    if (c > INT64_MAX)
      return KMQ_ERR_BAD_FIELD;
    i++;
    d++;
  }
  if (d == 0 || (d > 1 && t[3] == '0'))
    return KMQ_ERR_BAD_FIELD;
  if (n - i < 3 || t[i] != ':')
    return KMQ_ERR_BAD_FIELD;
  int bitmap = t[i + 1] == '_' && t[i + 2] == 'A';
  int ku = ref_b64((unsigned char)t[i + 1]), kf = ref_b64((unsigned char)t[i + 2]);
  if (!bitmap && (ku < 0 || ku > 40 || kf < 0 || kf > 40))
    return KMQ_ERR_BAD_FIELD;
  i += 3;
  size_t nbits = (n - i) * 6;
  unsigned char *bits = malloc(nbits + 1);
  for (size_t j = i; j < n; j++) {
    int v = ref_b64((unsigned char)t[j]);
    if (v < 0) {
      free(bits);
      return KMQ_ERR_BAD_FIELD;
    }
    for (int b = 0; b < 6; b++)
      bits[(j - i) * 6 + (size_t)b] = (unsigned char)((v >> (5 - b)) & 1);
  }
  if ((int64_t)c != start) {
    free(bits);
    return KMQ_ERR_STATE;
  }
  size_t last1 = nbits; /* one past the last 1 bit, 0 when none */
  while (last1 && !bits[last1 - 1])
    last1--;
  kmq_err_t err = KMQ_OK;
  size_t b = 0;
  __int128 pos = start;
  for (int first = 1;; first = 0) {
    if (b >= last1) { /* only zeros left: the padding, or too many */
      if (nbits - b >= 6)
        err = KMQ_ERR_BAD_FIELD;
      break;
    }
    __int128 s, e;
    if (bitmap) {
      while (!bits[b])
        b++;
      s = start + (__int128)b;
      while (b < nbits && bits[b])
        b++;
      e = start + (__int128)b;
      if (e > INT64_MAX) {
        err = KMQ_ERR_BAD_FIELD;
        break;
      }
    } else {
      unsigned __int128 vu, vf;
      if (ref_eg(bits, nbits, &b, ku, &vu) || ref_eg(bits, nbits, &b, kf, &vf)) {
        err = KMQ_ERR_BAD_FIELD;
        break;
      }
      s = pos + (__int128)vu + (first ? 0 : 1);
      e = s + (__int128)vf + 1;
      if (e > INT64_MAX) {
        err = KMQ_ERR_BAD_FIELD;
        break;
      }
    }
    for (__int128 o = s; o < e && o < start + (__int128)window; o++)
      flags[o - start] = 1;
    pos = e;
  }
  free(bits);
  if (err)
    memset(flags, 0, window);
  return err;
}

/* ---- Checks shared by both modes ---- */

static void assert_pristine(kmq_gate_t *g, int64_t start) {
  CHECK(kmq_gate_committable(g) == start && kmq_gate_high(g) == start &&
            kmq_gate_backlog(g) == 0 && kmq_gate_in_flight(g) == 0,
        "refused restore changed the gate (committable %lld high %lld)",
        (long long)kmq_gate_committable(g), (long long)kmq_gate_high(g));
  for (size_t i = 0; i < kmq_gate_window(g); i++)
    CHECK((int64_t)i > INT64_MAX - start ||
              !kmq_gate_is_done(g, start + (int64_t)i),
          "refused restore marked %lld", (long long)(start + (int64_t)i));
}

/* A gate restored at `start` against the expected flags. */
static void assert_restored(kmq_gate_t *g, int64_t start,
                            const unsigned char *flags, size_t window,
                            int64_t restored) {
  int64_t count = 0, open = -1;
  for (size_t i = 0; i < window; i++) {
    if ((int64_t)i > INT64_MAX - start) /* past the largest offset */
      break;
    int64_t o = start + (int64_t)i;
    CHECK(kmq_gate_is_done(g, o) == flags[i], "offset %lld: gate %d, want %d",
          (long long)o, kmq_gate_is_done(g, o), flags[i]);
    count += flags[i];
    if (!flags[i] && open < 0)
      open = o;
  }
  CHECK(restored == count, "restored %lld, want %lld", (long long)restored,
        (long long)count);
  if (open >= 0) {
    CHECK(kmq_gate_committable(g) == open, "committable %lld, want %lld",
          (long long)kmq_gate_committable(g), (long long)open);
    CHECK(kmq_gate_backlog(g) == count - (open - start), "backlog %lld",
          (long long)kmq_gate_backlog(g));
  }
  CHECK(kmq_gate_high(g) == kmq_gate_committable(g), "high %lld",
        (long long)kmq_gate_high(g));
  CHECK(kmq_gate_in_flight(g) == 0, "in flight %lld",
        (long long)kmq_gate_in_flight(g));
}

static char text[1 << 16];

/* Encodes a at `size`, restores into a fresh gate, compares with a. */
static void round_trip(kmq_gate_t *a, size_t size) {
  int64_t c = kmq_gate_committable(a);
  size_t w = kmq_gate_window(a), len = 0;
  int64_t end = -1, left = -1;
  CHECK(kmq_gate_encode_done(a, text, size, &len, &end, &left) == KMQ_OK,
        "encode at size %zu", size);
  CHECK(len < size && strlen(text) == len, "length %zu at size %zu", len, size);
  for (size_t i = 0; i < len; i++)
    CHECK(ref_b64((unsigned char)text[i]) >= 0 || text[i] == ':',
          "byte %zu of the text is %d", i, text[i]);
  unsigned char *flags = malloc(w);
  int64_t missing = 0;
  memset(flags, 0, w);
  for (size_t i = 0; i < w && (int64_t)i <= INT64_MAX - c; i++) {
    int64_t o = c + (int64_t)i;
    int d = kmq_gate_is_done(a, o);
    flags[i] = (unsigned char)(o < end && d);
    missing += o >= end && d;
  }
  CHECK(left == missing, "left_out %lld, counted %lld", (long long)left,
        (long long)missing);
  CHECK(left > 0 ? kmq_gate_is_done(a, end)
                 : end == (c > INT64_MAX - (int64_t)w ? INT64_MAX
                                                      : c + (int64_t)w),
        "covered_end %lld (left out %lld)", (long long)end, (long long)left);
  /* The reference agrees with what the encoder meant. */
  unsigned char *ref = malloc(w);
  CHECK(ref_parse(text, len, c, w, ref) == KMQ_OK, "reference refuses \"%s\"",
        text);
  CHECK(!memcmp(ref, flags, w), "reference decodes \"%s\" differently", text);
  kmq_gate_t *b = gate(c, w);
  int64_t restored = -1;
  CHECK(kmq_gate_restore_done(b, text, len, &restored) == KMQ_OK,
        "own text refused: \"%s\"", text);
  assert_restored(b, c, flags, w, restored);
  kmq_gate_destroy(b);
  free(ref);
  free(flags);
}

static void decode_mode(const uint8_t *data, size_t size, size_t window,
                        int skew) {
  const char *t = (const char *)data;
  /* The committable the text names, leniently, to aim at the run decoder. */
  int64_t start = 100;
  if (size > 3 && !memcmp(t, "k1:", 3)) {
    unsigned __int128 v = 0;
    size_t i = 3;
    while (i < size && i < 24 && t[i] >= '0' && t[i] <= '9')
      v = v * 10 + (unsigned)(t[i++] - '0');
    if (i > 3 && v <= INT64_MAX)
      start = (int64_t)v;
  }
  if (skew && start < INT64_MAX)
    start++;
  kmq_gate_t *g = gate(start, window);
  unsigned char *flags = malloc(window);
  kmq_err_t want = ref_parse(t, size, start, window, flags);
  int64_t restored = -7;
  kmq_err_t got = kmq_gate_restore_done(g, t, size, &restored);
  if (size == 0)
    want = KMQ_OK; /* Kafka's empty metadata: nothing to restore */
  CHECK(got == want, "restore: %d, reference %d", got, want);
  if (got != KMQ_OK) {
    CHECK(restored == -7, "output written on error");
    assert_pristine(g, start);
  } else {
    assert_restored(g, start, flags, window, restored);
    round_trip(g, sizeof(text));
    size_t cut = KMQ_GATE_META_MIN + (size ? data[size - 1] : 0);
    round_trip(g, cut);
  }
  free(flags);
  kmq_gate_destroy(g);
}

/* Input reader: bytes in order, zeros once exhausted. */
typedef struct {
  const uint8_t *p;
  size_t n;
} in_t;

static uint64_t take(in_t *in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) {
    v <<= 8;
    if (in->n) {
      v |= *in->p++;
      in->n--;
    }
  }
  return v;
}

/* ---- A restored gate driven by track / mark_done against a model ----
 * The model states the intended semantics with one flag per offset from
 * `origin`: restored offsets are finished like any other, track refuses them,
 * a jump is allowed while nothing is tracked, base skips finished offsets and
 * high never lags base. */
typedef struct {
  int64_t base, high, origin;
  size_t window;
  unsigned char *f;
  size_t cap;
} model_t;

static unsigned char *m_at(model_t *m, int64_t o) {
  size_t i = (size_t)(o - m->origin);
  if (i >= m->cap) {
    size_t ncap = m->cap ? m->cap : 256;
    while (i >= ncap)
      ncap *= 2;
    m->f = realloc(m->f, ncap);
    memset(m->f + m->cap, 0, ncap - m->cap);
    m->cap = ncap;
  }
  return &m->f[i];
}

static int m_done(model_t *m, int64_t o) {
  return o < m->base ||
         (o - m->base < (int64_t)m->window && *m_at(m, o));
}

static int64_t m_backlog(model_t *m) {
  int64_t n = 0;
  for (int64_t o = m->base; o < m->base + (int64_t)m->window; o++)
    n += *m_at(m, o);
  return n;
}

static void m_advance(model_t *m) {
  while (*m_at(m, m->base))
    m->base++;
  if (m->high < m->base)
    m->high = m->base;
  /* Keep the array window-sized: drop flags below base. */
  size_t drop = (size_t)(m->base - m->origin);
  if (!m->cap) {
  } else if (drop >= m->cap) {
    memset(m->f, 0, m->cap);
  } else if (drop) {
    memmove(m->f, m->f + drop, m->cap - drop);
    memset(m->f + m->cap - drop, 0, drop);
  }
  m->origin = m->base;
}

static kmq_err_t m_track(model_t *m, int64_t o) {
  if (o < m->high)
    return KMQ_ERR_STATE;
  if (m->high == m->base &&
      (m_backlog(m) == 0 || o - m->base >= (int64_t)m->window)) {
    if (m->cap)
      memset(m->f, 0, m->cap);
    m->base = m->origin = o;
    m->high = o + 1;
    return KMQ_OK;
  }
  if (o - m->base >= (int64_t)m->window)
    return KMQ_ERR_GATE_WINDOW;
  if (*m_at(m, o))
    return KMQ_ERR_DUPLICATE;
  for (int64_t s = m->high; s < o; s++)
    *m_at(m, s) = 1;
  m->high = o + 1;
  m_advance(m);
  return KMQ_OK;
}

static kmq_err_t m_mark(model_t *m, int64_t o) {
  if (o < m->base)
    return KMQ_ERR_DUPLICATE;
  if (o - m->base >= (int64_t)m->window)
    return KMQ_ERR_GATE_WINDOW;
  if (*m_at(m, o))
    return KMQ_ERR_DUPLICATE;
  *m_at(m, o) = 1;
  if (o >= m->high)
    m->high = o + 1;
  m_advance(m);
  return KMQ_OK;
}

static void m_compare(kmq_gate_t *g, model_t *m, const char *op, int64_t o) {
  CHECK(kmq_gate_committable(g) == m->base, "%s(%lld): committable %lld, "
        "model %lld", op, (long long)o, (long long)kmq_gate_committable(g),
        (long long)m->base);
  CHECK(kmq_gate_high(g) == m->high, "%s(%lld): high %lld, model %lld", op,
        (long long)o, (long long)kmq_gate_high(g), (long long)m->high);
  int64_t bl = m_backlog(m), open = 0;
  for (int64_t x = m->base; x < m->high; x++)
    open += !*m_at(m, x);
  CHECK(kmq_gate_backlog(g) == bl, "%s(%lld): backlog %lld, model %lld", op,
        (long long)o, (long long)kmq_gate_backlog(g), (long long)bl);
  CHECK(kmq_gate_in_flight(g) == open, "%s(%lld): in flight %lld, model %lld",
        op, (long long)o, (long long)kmq_gate_in_flight(g), (long long)open);
  CHECK(kmq_gate_would_overflow(g, m->base + (int64_t)m->window) ==
            (m->high != m->base),
        "%s(%lld): would_overflow", op, (long long)o);
}

/* Restores a's whole finished set into a fresh gate and drives it with the
 * rest of the input, comparing with the model after every operation. */
static void drive_restored(kmq_gate_t *a, in_t *in);

static void encode_mode(const uint8_t *data, size_t size, size_t window,
                        int drive) {
  in_t in = {data, size};
  int64_t start = (int64_t)(take(&in, 3));
  /* Now and then near the top of int64, with room for every track below
   * (a gate refuses nothing there, but high = offset + 1 must not wrap). */
  if (take(&in, 1) == 0xff)
    start = INT64_MAX - (1 << 20) - (int64_t)take(&in, 2);
  size_t cut = KMQ_GATE_META_MIN + (size_t)take(&in, 2) % 2048;
  kmq_gate_t *a = gate(start, window);
  /* Up to 4080 operations; what is left after them drives the restored
   * gate (drive_restored). */
  int nops = (int)take(&in, 1) * 16;
  for (int steps = 0; in.n && steps < nops; steps++) {
    uint8_t op = (uint8_t)take(&in, 1);
    int64_t base = kmq_gate_committable(a), high = kmq_gate_high(a);
    int64_t o;
    switch (op % 4) {
    case 0: /* the next offset, or after a gap */
      o = high + (int64_t)(op & 0x80 ? take(&in, 1) % 16 : 0);
      if (o > 0)
        kmq_gate_track(a, o);
      break;
    case 1: /* a run of next offsets */
      for (int k = 0; k < op / 4; k++)
        kmq_gate_track(a, kmq_gate_high(a));
      break;
    default: /* finish something outstanding */
      if (high > base) {
        o = base + (int64_t)(take(&in, 2) % (uint64_t)(high - base));
        kmq_gate_mark_done(a, o, NULL);
      }
      break;
    }
  }
  round_trip(a, cut);
  round_trip(a, sizeof(text));
  if (drive)
    drive_restored(a, &in);
  kmq_gate_destroy(a);
}

static void drive_restored(kmq_gate_t *a, in_t *in) {
  size_t len, w = kmq_gate_window(a);
  int64_t c = kmq_gate_committable(a), restored;
  CHECK(kmq_gate_encode_done(a, text, sizeof(text), &len, NULL, NULL) ==
            KMQ_OK, "encode");
  kmq_gate_t *g = gate(c, w);
  CHECK(kmq_gate_restore_done(g, text, len, &restored) == KMQ_OK, "restore");
  model_t m = {c, c, c, w, NULL, 0};
  for (size_t i = 0; i < w && (int64_t)i <= INT64_MAX - c; i++)
    *m_at(&m, c + (int64_t)i) = (unsigned char)kmq_gate_is_done(a, c + (int64_t)i);
  m_advance(&m);
  m_compare(g, &m, "restore", c);
  for (int steps = 0; in->n && steps < 1024; steps++) {
    uint8_t op = (uint8_t)take(in, 1);
    int64_t o = m.base + (int16_t)take(in, 2) % (int64_t)(2 * w);
    if (op % 8 < 3) /* the consumer's way: the next offset, maybe a gap */
      o = m.high + (op & 0x80 ? (int64_t)(take(in, 1) % 8) : 0);
    if (o < 0)
      o = 0;
    if (o > INT64_MAX - 2 * (int64_t)w) /* leave room: high = o + 1 */
      o = INT64_MAX - 2 * (int64_t)w;
    kmq_err_t got, want;
    switch (op % 8) {
    case 0: case 1: case 2: case 3:
      got = kmq_gate_track(g, o);
      want = m_track(&m, o);
      CHECK(got == want, "track(%lld): %d, model %d", (long long)o, got, want);
      m_compare(g, &m, "track", o);
      break;
    case 4: case 5: case 6:
      got = kmq_gate_mark_done(g, o, NULL);
      want = m_mark(&m, o);
      CHECK(got == want, "mark_done(%lld): %d, model %d", (long long)o, got,
            want);
      m_compare(g, &m, "mark_done", o);
      break;
    default:
      CHECK(kmq_gate_is_done(g, o) == m_done(&m, o), "is_done(%lld): %d, "
            "model %d", (long long)o, kmq_gate_is_done(g, o), m_done(&m, o));
      break;
    }
  }
  round_trip(g, sizeof(text)); /* and what it has become still encodes */
  kmq_gate_destroy(g);
  free(m.f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  uint8_t ctl = data[0];
  size_t window = (size_t)64 << ((ctl >> 1) & 7);
  if (ctl & 1)
    encode_mode(data + 1, size - 1, window, ctl & 0x10);
  else
    decode_mode(data + 1, size - 1, window, ((ctl >> 4) & 3) == 3);
  return 0;
}
