/* libFuzzer target: the commit gate (include/kmq/gate.h) against a
 * reference model.
 *
 * The input is a start offset, a window and a sequence of operations
 * (track, mark_done, would_overflow) aimed around the interesting places:
 * the next offset, gaps, the committable offset, the window's end, offsets
 * already done or below the start. The model keeps one flag per offset in
 * a plain array and recomputes everything the slow way; after every
 * operation the gate must agree with it on the result code and on
 * committable, high, backlog, in-flight and would_overflow. Beyond that:
 * committable never goes back, never passes an offset that is not finished,
 * and the gate never touches memory it does not own (ASan, UBSan).
 *
 *   CC=clang cmake -S . -B build-fuzz -G Ninja -DKMQ_FUZZ=ON
 *   ninja -C build-fuzz fuzz_gate
 *   build-fuzz/tests/fuzz_gate -max_total_time=60 tests/fuzz/corpus/gate
 * or bash tests/faults/fuzz.sh (both fuzzers, 20 s each).
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
      fprintf(stderr, "gate contract violated: %s: ", #cond);                 \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* The model: offsets [base, high) with a done flag each, stored from
 * `origin` (flags[o - origin]); everything below base is finished. */
typedef struct {
  int64_t base, high, origin;
  size_t window;
  unsigned char *flags;
  size_t cap;
} model_t;

static unsigned char *m_flag(model_t *m, int64_t o) {
  int64_t i = o - m->origin;
  if (i < 0)
    abort();
  if ((size_t)i >= m->cap) {
    size_t ncap = m->cap ? m->cap : 256;
    while ((size_t)i >= ncap)
      ncap *= 2;
    unsigned char *n = realloc(m->flags, ncap);
    if (!n)
      abort();
    memset(n + m->cap, 0, ncap - m->cap);
    m->flags = n;
    m->cap = ncap;
  }
  return &m->flags[i];
}

/* Drops the flags below base so the array stays window-sized. */
static void m_rebase(model_t *m) {
  int64_t drop = m->base - m->origin;
  if (drop <= 0 || !m->cap) {
    m->origin = m->base;
    return;
  }
  if ((size_t)drop >= m->cap) {
    memset(m->flags, 0, m->cap);
  } else {
    memmove(m->flags, m->flags + drop, m->cap - (size_t)drop);
    memset(m->flags + m->cap - (size_t)drop, 0, (size_t)drop);
  }
  m->origin = m->base;
}

static void m_advance(model_t *m) {
  while (m->base < m->high && *m_flag(m, m->base))
    m->base++;
  m_rebase(m);
}

static int64_t m_backlog(model_t *m) {
  int64_t n = 0;
  for (int64_t o = m->base; o < m->high; o++)
    n += *m_flag(m, o);
  return n;
}

static int m_empty(model_t *m) { return m->high == m->base; }

static kmq_err_t m_track(model_t *m, int64_t o) {
  if (o < m->high)
    return KMQ_ERR_STATE;
  if (m_empty(m)) {
    /* Nothing outstanding: everything below o is finished or will never
     * be delivered, the window moves to o. */
    m->base = m->origin = o;
    if (m->cap)
      memset(m->flags, 0, m->cap);
    m->high = o + 1;
    return KMQ_OK;
  }
  if (o - m->base >= (int64_t)m->window)
    return KMQ_ERR_GATE_WINDOW;
  for (int64_t s = m->high; s < o; s++)
    *m_flag(m, s) = 1; /* skipped: never delivered, counts as finished */
  *m_flag(m, o) = 0;
  m->high = o + 1;
  m_advance(m);
  return KMQ_OK;
}

static kmq_err_t m_done(model_t *m, int64_t o) {
  if (o < m->base)
    return KMQ_ERR_DUPLICATE;
  if (o - m->base >= (int64_t)m->window)
    return KMQ_ERR_GATE_WINDOW;
  if (o < m->high && *m_flag(m, o))
    return KMQ_ERR_DUPLICATE;
  *m_flag(m, o) = 1;
  if (o >= m->high)
    m->high = o + 1;
  m_advance(m);
  return KMQ_OK;
}

static int m_would_overflow(model_t *m, int64_t o) {
  if (m_empty(m))
    return 0;
  return o - m->base >= (int64_t)m->window;
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

static void compare(kmq_gate_t *g, model_t *m, int64_t *last_committable,
                    const char *op, int64_t o) {
  int64_t c = kmq_gate_committable(g);
  CHECK(c == m->base, "%s(%lld): committable %lld, model %lld", op,
        (long long)o, (long long)c, (long long)m->base);
  CHECK(c >= *last_committable, "%s(%lld): committable went back %lld -> %lld",
        op, (long long)o, (long long)*last_committable, (long long)c);
  *last_committable = c;
  CHECK(kmq_gate_high(g) == m->high, "%s(%lld): high %lld, model %lld", op,
        (long long)o, (long long)kmq_gate_high(g), (long long)m->high);
  int64_t bl = m_backlog(m);
  CHECK(kmq_gate_backlog(g) == bl, "%s(%lld): backlog %lld, model %lld", op,
        (long long)o, (long long)kmq_gate_backlog(g), (long long)bl);
  int64_t inflight = (m->high - m->base) - bl;
  CHECK(kmq_gate_in_flight(g) == inflight,
        "%s(%lld): in flight %lld, model %lld", op, (long long)o,
        (long long)kmq_gate_in_flight(g), (long long)inflight);
  /* The prefix below committable is all finished in the model too. */
  CHECK(m->base == m->high || !*m_flag(m, m->base),
        "model: base %lld is finished", (long long)m->base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  in_t in = {data, size};
  /* Start anywhere a Kafka offset can be, biased to small values. */
  uint64_t sb = take(&in, 1);
  int64_t start = (int64_t)(take(&in, (int)(sb % 8) + 1) &
                            ((UINT64_C(1) << 62) - 1));
  /* Power-of-two windows and others (the gate rounds up). */
  size_t wreq = (size_t)take(&in, 2) % 1100;
  char errstr[128];
  kmq_gate_t *g = kmq_gate_new(start, wreq, errstr, sizeof(errstr));
  CHECK(g, "kmq_gate_new(%lld, %zu): %s", (long long)start, wreq, errstr);
  size_t w = kmq_gate_window(g);
  CHECK(w >= 64 && w >= wreq && (w & (w - 1)) == 0 && (w / 2 < wreq || w == 64),
        "window %zu for a request of %zu", w, wreq);
  model_t m = {start, start, start, w, NULL, 0};
  int64_t last = start;
  compare(g, &m, &last, "new", start);

  for (int steps = 0; in.n && steps < 4096; steps++) {
    uint8_t op = (uint8_t)take(&in, 1);
    int64_t o;
    kmq_err_t got, want;
    switch (op % 8) {
    case 0: /* the next offset, or a small gap after it */
    case 1:
      o = m.high + (int64_t)(take(&in, 1) % 4 == 0 ? take(&in, 1) % 16 : 0);
      got = kmq_gate_track(g, o);
      want = m_track(&m, o);
      CHECK(got == want, "track(%lld): %d, model %d", (long long)o, got, want);
      compare(g, &m, &last, "track", o);
      break;
    case 2: /* anywhere around the window (re-fetch, far ahead) */
      o = m.base + (int16_t)take(&in, 2);
      if (o < 0)
        o = 0;
      got = kmq_gate_track(g, o);
      want = m_track(&m, o);
      CHECK(got == want, "track(%lld): %d, model %d", (long long)o, got, want);
      compare(g, &m, &last, "track", o);
      break;
    case 3: /* just past the window's end */
      o = m.base + (int64_t)w - 2 + (int64_t)(take(&in, 1) % 4);
      got = kmq_gate_track(g, o);
      want = m_track(&m, o);
      CHECK(got == want, "track(%lld): %d, model %d", (long long)o, got, want);
      compare(g, &m, &last, "track", o);
      break;
    case 4: /* finish an outstanding offset (the usual case) */
    case 5: {
      int64_t span = m.high - m.base;
      o = m.base + (span > 0 ? (int64_t)(take(&in, 2) % (uint64_t)span) : 0);
      int64_t got_c = -1;
      got = kmq_gate_mark_done(g, o, &got_c);
      want = m_done(&m, o);
      CHECK(got == want, "mark_done(%lld): %d, model %d", (long long)o, got,
            want);
      if (got == KMQ_OK)
        CHECK(got_c == m.base, "mark_done(%lld) reported committable %lld, "
                               "model %lld",
              (long long)o, (long long)got_c, (long long)m.base);
      compare(g, &m, &last, "mark_done", o);
      break;
    }
    case 6: /* finish anything: duplicates, below start, beyond */
      o = m.base + (int16_t)take(&in, 2);
      if (o < 0)
        o = 0;
      got = kmq_gate_mark_done(g, o, NULL);
      want = m_done(&m, o);
      CHECK(got == want, "mark_done(%lld): %d, model %d", (long long)o, got,
            want);
      compare(g, &m, &last, "mark_done", o);
      break;
    default: /* would_overflow is exactly "track would say GATE_WINDOW" */
      o = m.base + (int16_t)take(&in, 2);
      if (o < 0)
        o = 0;
      CHECK(kmq_gate_would_overflow(g, o) == m_would_overflow(&m, o),
            "would_overflow(%lld): %d, model %d", (long long)o,
            kmq_gate_would_overflow(g, o), m_would_overflow(&m, o));
      break;
    }
  }
  kmq_gate_destroy(g);
  free(m.flags);
  return 0;
}
