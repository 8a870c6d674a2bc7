/* Commit gate: a sliding bitmap over [committable, committable + window),
 * and the text that carries its finished offsets across a rebalance.
 *
 * Invariants (kept by every function below, checked by tests/fuzz/):
 *   - base <= high; bit(base) is clear: base is the lowest unfinished offset.
 *   - Bits are set only in [base, max(high, rend)), inside the window.
 *   - backlog = bits set; ahead = bits set at or past high. Those are offsets
 *     restored as finished (kmq_gate_restore_done) that the fetch has not
 *     reached yet: high stays "one past the highest offset tracked or marked
 *     here", so in_flight keeps its meaning after a restore. (A finished
 *     prefix can still carry base, and high with it, over restored offsets
 *     not read yet: a consumer's re-fetch check needs its own record of
 *     what it read, lib/part.h read_end.)
 *   - in_flight = (high - base) - (backlog - ahead).
 */
#include "kmq/gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kmq_gate_s {
  int64_t base;    /* committable: lowest offset not finished */
  int64_t high;    /* one past the highest tracked/marked offset, >= base */
  int64_t rend;    /* one past the highest restored offset (or <= high) */
  int64_t backlog; /* bits set in the window */
  int64_t ahead;   /* bits set at or past high (restored, not reached) */
  size_t window;   /* power of two, multiple of 64 */
  size_t mask;
  uint64_t *bits; /* bit (o & mask) <=> offset o finished, base <= o < base+window */
};

kmq_gate_t *kmq_gate_new(int64_t start, size_t window, char *errstr,
                         size_t errstr_size) {
  if (start < 0) {
    snprintf(errstr, errstr_size, "gate start offset %lld is negative",
             (long long)start);
    return NULL;
  }
  size_t w = 64;
  while (w < window) {
    if (w > ((size_t)1 << 40)) {
      snprintf(errstr, errstr_size, "gate window %zu too large", window);
      return NULL;
    }
    w <<= 1;
  }
  kmq_gate_t *g = calloc(1, sizeof(*g));
  if (!g)
    goto fail_nomem;
  g->bits = calloc(w / 64, sizeof(uint64_t));
  if (!g->bits)
    goto fail_bits;
  g->base = g->high = g->rend = start;
  g->window = w;
  g->mask = w - 1;
  return g;

fail_bits:
  free(g);
fail_nomem:
  snprintf(errstr, errstr_size, "out of memory allocating a gate of %zu", w);
  return NULL;
}

void kmq_gate_destroy(kmq_gate_t *gate) {
  if (!gate)
    return;
  free(gate->bits);
  free(gate);
}

static inline int kmq__bit_get(const kmq_gate_t *g, int64_t o) {
  size_t i = (size_t)o & g->mask;
  return (int)((g->bits[i >> 6] >> (i & 63)) & 1);
}

static inline void kmq__bit_set(kmq_gate_t *g, int64_t o) {
  size_t i = (size_t)o & g->mask;
  g->bits[i >> 6] |= (uint64_t)1 << (i & 63);
}

/* The part of [from, to) that lies in from's bitmap word: its index, the mask
 * of its bits, and how many offsets that is. The window is a multiple of 64,
 * so a word never straddles the wrap-around. */
static inline uint64_t kmq__chunk(const kmq_gate_t *g, int64_t from, int64_t to,
                                  size_t *word, int64_t *n) {
  size_t i = (size_t)from & g->mask;
  unsigned sh = (unsigned)(i & 63);
  *n = to - from < (int64_t)(64 - sh) ? to - from : (int64_t)(64 - sh);
  *word = i >> 6;
  uint64_t ones = *n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << *n) - 1);
  return ones << sh;
}

/* Sets (set != 0) or clears the bits of [from, to), a word at a time.
 * Requires base <= from <= to <= base + window. */
static void kmq__paint(kmq_gate_t *g, int64_t from, int64_t to, int set) {
  while (from < to) {
    size_t w;
    int64_t n;
    uint64_t m = kmq__chunk(g, from, to, &w, &n);
    g->bits[w] = set ? g->bits[w] | m : g->bits[w] & ~m;
    from += n;
  }
}

/* Bits set in [from, to). Same range rule as kmq__paint. */
static int64_t kmq__count(const kmq_gate_t *g, int64_t from, int64_t to) {
  int64_t c = 0;
  while (from < to) {
    size_t w;
    int64_t n;
    uint64_t m = kmq__chunk(g, from, to, &w, &n);
    c += __builtin_popcountll(g->bits[w] & m);
    from += n;
  }
  return c;
}

/* First offset in [from, to) whose bit is `set`, or `to`. */
static int64_t kmq__find(const kmq_gate_t *g, int64_t from, int64_t to,
                         int set) {
  while (from < to) {
    size_t w;
    int64_t n;
    uint64_t m = kmq__chunk(g, from, to, &w, &n);
    uint64_t hit = (set ? g->bits[w] : ~g->bits[w]) & m;
    if (hit) /* the bit's distance from `from`, then added: no overflow */
      return from + (__builtin_ctzll(hit) - (int64_t)((size_t)from & 63));
    from += n;
  }
  return to;
}

/* One past the window's last offset, saturated: a start near INT64_MAX must
 * not overflow (no offset can be INT64_MAX itself anyway). */
static inline int64_t kmq__lim(const kmq_gate_t *g) {
  return g->base > INT64_MAX - (int64_t)g->window ? INT64_MAX
                                                 : g->base + (int64_t)g->window;
}

/* Moves base over the run of finished offsets starting at it, a word at a
 * time: each offset is cleared once, so the cost is amortised O(1). A run of
 * restored offsets can carry base past high: high follows, and the offsets
 * passed above the old high stop counting as ahead. */
static void kmq__advance(kmq_gate_t *g) {
  if (!g->backlog || !kmq__bit_get(g, g->base))
    return;
  int64_t end = kmq__find(g, g->base, kmq__lim(g), 0);
  kmq__paint(g, g->base, end, 0);
  g->backlog -= end - g->base;
  if (end > g->high) {
    g->ahead -= end - g->high;
    g->high = end;
  }
  g->base = end;
}

int kmq_gate_would_overflow(const kmq_gate_t *g, int64_t offset) {
  /* Nothing tracked: the window can jump to `offset` (see track). */
  if (g->high == g->base)
    return 0;
  return offset - g->base >= (int64_t)g->window;
}

kmq_err_t kmq_gate_track(kmq_gate_t *g, int64_t offset) {
  if (offset < g->high)
    return KMQ_ERR_STATE;
  if (g->high == g->base &&
      (g->backlog == 0 || offset - g->base >= (int64_t)g->window)) {
    /* Nothing tracked: every offset below `offset` is finished, restored as
     * finished, or will never come. Restored bits all lie below `offset`
     * here (they are inside the window), so dropping them loses nothing. */
    if (g->backlog)
      memset(g->bits, 0, g->window / 8);
    g->backlog = g->ahead = 0;
    g->base = g->rend = offset;
    g->high = offset + 1;
    return KMQ_OK;
  }
  if (offset - g->base >= (int64_t)g->window)
    return KMQ_ERR_GATE_WINDOW;
  if (kmq__bit_get(g, offset))
    return KMQ_ERR_DUPLICATE; /* restored as finished: skip it */
  /* Skipped offsets become finished; restored ones among them already are
   * and only stop counting as ahead. */
  int64_t had = g->ahead ? kmq__count(g, g->high, offset) : 0;
  kmq__paint(g, g->high, offset, 1);
  g->ahead -= had;
  g->backlog += (offset - g->high) - had;
  g->high = offset + 1;
  kmq__advance(g);
  return KMQ_OK;
}

kmq_err_t kmq_gate_mark_done(kmq_gate_t *g, int64_t offset,
                             int64_t *committable) {
  if (offset < g->base)
    return KMQ_ERR_DUPLICATE;
  if (offset - g->base >= (int64_t)g->window)
    return KMQ_ERR_GATE_WINDOW;
  if (kmq__bit_get(g, offset))
    return KMQ_ERR_DUPLICATE;
  if (offset >= g->high) {
    if (g->ahead)
      g->ahead -= kmq__count(g, g->high, offset);
    g->high = offset + 1;
  }
  kmq__bit_set(g, offset);
  g->backlog++;
  if (offset == g->base)
    kmq__advance(g);
  if (committable)
    *committable = g->base;
  return KMQ_OK;
}

int kmq_gate_is_done(const kmq_gate_t *g, int64_t offset) {
  if (offset < g->base)
    return 1;
  if (offset - g->base >= (int64_t)g->window)
    return 0;
  return kmq__bit_get(g, offset);
}

int64_t kmq_gate_committable(const kmq_gate_t *g) { return g->base; }
int64_t kmq_gate_backlog(const kmq_gate_t *g) { return g->backlog; }
int64_t kmq_gate_high(const kmq_gate_t *g) { return g->high; }
size_t kmq_gate_window(const kmq_gate_t *g) { return g->window; }

int64_t kmq_gate_in_flight(const kmq_gate_t *g) {
  return (g->high - g->base) - (g->backlog - g->ahead);
}

/* ---- Commit metadata: "k1:<committable>:<Ku><Kf><payload>" (gate.h) ----
 *
 * Runs: alternating unfinished / finished lengths from the committable
 * offset, ending with a finished run, each an order-k exponential-Golomb
 * code of length - 1 (of length for the first run, which may be empty), with
 * one k for unfinished runs (Ku) and one for finished runs (Kf), chosen by
 * the encoder for the set at hand. Exp-Golomb rather than fixed-width or
 * varint digits: its size follows the run's logarithm, so short random runs
 * cost ~6 bits a finished run and one odd run of 50 000 about 30 bits, not
 * a broken budget. Bitmap ("_A"): one bit per offset, chosen when it goes
 * further (random sets near 50 %, strict alternation), which also bounds
 * the worst case at 6 offsets a character. Either bit string is written
 * 6 bits a base64url character, most significant bit first, zero-padded. */

#define KMQ__KMAX 40 /* largest k a text may carry */

static const char kmq__b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int kmq__b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '-' ? 62 : c == '_' ? 63 : -1;
}

static unsigned kmq__bitlen(uint64_t x) { /* x >= 1 */
  return 64u - (unsigned)__builtin_clzll(x);
}

/* Bits of the order-k exp-Golomb code of v: q = (v >> k) + 1 written as
 * bitlen(q) - 1 zeros then q, then the low k bits of v. */
static int64_t kmq__eg_bits(uint64_t v, unsigned k) {
  return 2 * (int64_t)kmq__bitlen((v >> k) + 1) - 1 + k;
}

/* Bit writer into the caller's buffer; capacity is checked by the caller
 * (the sizes are known before a code is written). */
typedef struct {
  char *out;
  uint64_t acc; /* pending bits, the oldest highest */
  unsigned n;   /* pending bit count, < 6 between calls */
} kmq__bw_t;

static void kmq__put(kmq__bw_t *w, uint64_t bits, unsigned n) { /* n <= 48 */
  w->acc = (w->acc << n) | (bits & (((uint64_t)1 << n) - 1));
  w->n += n;
  while (w->n >= 6) {
    w->n -= 6;
    *w->out++ = kmq__b64[(w->acc >> w->n) & 63];
  }
}

static void kmq__put_eg(kmq__bw_t *w, uint64_t v, unsigned k) {
  uint64_t q = (v >> k) + 1;
  unsigned nb = kmq__bitlen(q);
  for (unsigned z = nb - 1; z;) { /* zeros first, up to 48 at a time */
    unsigned c = z < 48 ? z : 48;
    kmq__put(w, 0, c);
    z -= c;
  }
  kmq__put(w, q, nb);
  if (k > 24) { /* k <= KMAX = 40: two pieces keep each put <= 48 bits */
    kmq__put(w, v >> 24, k - 24);
    kmq__put(w, v, 24);
  } else if (k) {
    kmq__put(w, v, k);
  }
}

/* The k minimising the total of a histogram of bitlen(v + 1): exact enough to
 * choose (it only affects size, never correctness). */
static unsigned kmq__best_k(const int64_t hist[65]) {
  unsigned best = 0;
  int64_t best_cost = INT64_MAX;
  for (unsigned k = 0; k <= KMQ__KMAX; k++) {
    int64_t cost = 0;
    for (unsigned b = 1; b <= 64; b++) {
      int64_t nb = (int64_t)b - (int64_t)k;
      cost += hist[b] * (2 * (nb > 1 ? nb : 1) - 1 + (int64_t)k);
    }
    if (cost < best_cost) {
      best_cost = cost;
      best = k;
    }
  }
  return best;
}

/* Appends n copies of one bit. */
static void kmq__put_fill(kmq__bw_t *w, int bit, int64_t n) {
  for (; n > 0; n -= 48)
    kmq__put(w, bit ? ~(uint64_t)0 : 0, n < 48 ? (unsigned)n : 48);
}

/* How far a payload of `cap` bits gets through the finished runs below
 * `end`, as exp-Golomb codes (bm == 0) or as a plain bitmap (bm == 1), and
 * writes it when w is not NULL. Stops at the first run that does not fit
 * (a bitmap takes the part of it that does), so the text stays exact up to
 * `covered`. */
typedef struct {
  int64_t covered;   /* first finished offset not described; lim when none */
  int64_t described; /* finished offsets described */
  int64_t bits;      /* payload bits */
} kmq__plan_t;

static kmq__plan_t kmq__runs(const kmq_gate_t *g, int64_t end, int64_t cap,
                             int bm, unsigned ku, unsigned kf, kmq__bw_t *w) {
  kmq__plan_t pl = {kmq__lim(g), 0, 0};
  for (int64_t pos = g->base, first = 1; pos < end; first = 0) {
    int64_t s = kmq__find(g, pos, end, 1);
    if (s == end)
      break;
    int64_t e = kmq__find(g, s, end, 0);
    if (bm) {
      int64_t room = cap - pl.bits;
      if (s - pos >= room) { /* not even one finished bit fits */
        pl.covered = s;
        break;
      }
      int64_t x = e - pos > room ? pos + room : e;
      if (w) {
        kmq__put_fill(w, 0, s - pos);
        kmq__put_fill(w, 1, x - s);
      }
      pl.bits += x - pos;
      pl.described += x - s;
      if (x < e) {
        pl.covered = x;
        break;
      }
    } else {
      uint64_t vu = (uint64_t)(s - pos) - (uint64_t)!first;
      uint64_t vf = (uint64_t)(e - s) - 1;
      int64_t cost = kmq__eg_bits(vu, ku) + kmq__eg_bits(vf, kf);
      if (pl.bits + cost > cap) {
        pl.covered = s; /* [pos, s) is unfinished: exact up to s */
        break;
      }
      if (w) {
        kmq__put_eg(w, vu, ku);
        kmq__put_eg(w, vf, kf);
      }
      pl.bits += cost;
      pl.described += e - s;
    }
    pos = e;
  }
  return pl;
}

kmq_err_t kmq_gate_encode_done(const kmq_gate_t *g, char *buf, size_t size,
                               size_t *len, int64_t *covered_end,
                               int64_t *left_out) {
  if (!g || !buf || size < KMQ_GATE_META_MIN)
    return KMQ_ERR_INVALID_ARG;
  /* Every set bit lies below this, and it lies inside the window. */
  int64_t end = g->high > g->rend ? g->high : g->rend;

  /* The length histograms of both kinds of run, to choose the two k. */
  int64_t hist[2][65] = {{0}};
  for (int64_t pos = g->base, first = 1; pos < end; first = 0) {
    int64_t s = kmq__find(g, pos, end, 1);
    if (s == end)
      break;
    int64_t e = kmq__find(g, s, end, 0);
    hist[0][kmq__bitlen((uint64_t)(s - pos) + (uint64_t)first)]++;
    hist[1][kmq__bitlen((uint64_t)(e - s))]++;
    pos = e;
  }
  unsigned ku = kmq__best_k(hist[0]), kf = kmq__best_k(hist[1]);

  char digits[24];
  int nd = 0;
  for (uint64_t v = (uint64_t)g->base; nd == 0 || v; v /= 10)
    digits[nd++] = (char)('0' + v % 10);
  char *p = buf;
  memcpy(p, "k1:", 3);
  p += 3;
  while (nd)
    *p++ = digits[--nd];
  *p++ = ':';
  /* At most size - 1 characters; two of what is left are Ku and Kf. A
   * size past 2^40 describes more than any window: clamp, so that the bit
   * count below cannot overflow. */
  if (size > (size_t)1 << 40)
    size = (size_t)1 << 40;
  int64_t cap = ((int64_t)(size - 1) - (p - buf) - 2) * 6;
  /* Runs unless a bitmap reaches further or, both complete, is shorter:
   * random sets near 50% cost ~1.3 bits an offset as runs, 1 as a bitmap. */
  kmq__plan_t eg = kmq__runs(g, end, cap, 0, ku, kf, NULL);
  kmq__plan_t bm = kmq__runs(g, end, cap, 1, 0, 0, NULL);
  int use_bm = bm.covered > eg.covered ||
               (bm.covered == eg.covered && bm.bits < eg.bits);
  *p++ = use_bm ? '_' : kmq__b64[ku];
  *p++ = use_bm ? 'A' : kmq__b64[kf];
  kmq__bw_t w = {p, 0, 0};
  kmq__plan_t pl = kmq__runs(g, end, cap, use_bm, ku, kf, &w);
  if (w.n)
    kmq__put(&w, 0, 6 - w.n); /* zero padding to a whole character */
  *w.out = '\0';
  if (len)
    *len = (size_t)(w.out - buf);
  if (covered_end)
    *covered_end = pl.covered;
  if (left_out)
    *left_out = g->backlog - pl.described;
  return KMQ_OK;
}

/* Bit reader over validated base64url characters; `ones` is one past the
 * last 1 bit, so "only zeros remain" is a comparison. */
typedef struct {
  const char *in;
  int64_t pos, nbits, ones;
} kmq__br_t;

static int kmq__peek(const kmq__br_t *r) {
  int v = kmq__b64_val((unsigned char)r->in[r->pos / 6]);
  return (v >> (5 - (int)(r->pos % 6))) & 1;
}

static int kmq__get(kmq__br_t *r) {
  int bit = kmq__peek(r);
  r->pos++;
  return bit;
}

/* Reads one order-k exp-Golomb code. -1: truncated or too large (a value
 * must stay below 2^62, far beyond any offset range a gate can describe). */
static int kmq__get_eg(kmq__br_t *r, unsigned k, uint64_t *v) {
  unsigned z = 0;
  for (;;) {
    if (r->pos >= r->nbits)
      return -1;
    if (kmq__get(r))
      break;
    if (++z + k > 61)
      return -1;
  }
  if (r->nbits - r->pos < (int64_t)(z + k))
    return -1;
  uint64_t q = 1;
  for (unsigned i = 0; i < z; i++)
    q = q << 1 | (uint64_t)kmq__get(r);
  uint64_t low = 0;
  for (unsigned i = 0; i < k; i++)
    low = low << 1 | (uint64_t)kmq__get(r);
  *v = ((q - 1) << k) | low;
  return 0;
}

/* Parses a text strictly. With apply == NULL it only validates; with a gate
 * it also marks the finished runs that fall inside [base, base + window) and
 * returns how many offsets that marked in *marked. The same text parses the
 * same way twice, so a validated text cannot fail when applied. */
static kmq_err_t kmq__meta_parse(const char *t, size_t n, int64_t base,
                                 int64_t lim, kmq_gate_t *apply,
                                 int64_t *marked) {
  if (n < 3 || memcmp(t, "k1:", 3))
    return KMQ_ERR_BAD_FIELD;
  size_t i = 3;
  uint64_t c = 0;
  size_t d0 = i;
  for (; i < n && t[i] >= '0' && t[i] <= '9'; i++) {
    if (c > ((uint64_t)INT64_MAX - (uint64_t)(t[i] - '0')) / 10)
      return KMQ_ERR_BAD_FIELD;
    c = c * 10 + (uint64_t)(t[i] - '0');
  }
  if (i == d0 || (t[d0] == '0' && i - d0 > 1) || i + 3 > n || t[i] != ':')
    return KMQ_ERR_BAD_FIELD;
  /* Ku Kf: the two exp-Golomb orders, or "_A" for a plain bitmap. */
  int bitmap = t[i + 1] == '_';
  int ku = kmq__b64_val((unsigned char)t[i + 1]);
  int kf = kmq__b64_val((unsigned char)t[i + 2]);
  if (bitmap ? t[i + 2] != 'A'
             : (ku < 0 || ku > KMQ__KMAX || kf < 0 || kf > KMQ__KMAX))
    return KMQ_ERR_BAD_FIELD;
  i += 3;
  for (size_t j = i; j < n; j++)
    if (kmq__b64_val((unsigned char)t[j]) < 0)
      return KMQ_ERR_BAD_FIELD;
  if ((int64_t)c != base)
    return KMQ_ERR_STATE; /* describes another commit: not ours to use */

  kmq__br_t r = {t + i, 0, (int64_t)(n - i) * 6, 0};
  for (size_t j = n; j > i && !r.ones; j--) {
    int v = kmq__b64_val((unsigned char)t[j - 1]);
    if (v)
      r.ones = (int64_t)(j - i) * 6 - __builtin_ctz((unsigned)v);
  }
  if (bitmap && r.ones > INT64_MAX - base)
    return KMQ_ERR_BAD_FIELD; /* past the largest offset */
  int64_t pos = base, count = 0;
  for (int first = 1; r.pos < r.ones; first = 0) {
    int64_t s, e;
    if (bitmap) { /* a 1 lies ahead: the last one is at ones - 1 */
      while (!kmq__peek(&r))
        r.pos++;
      s = base + r.pos;
      while (r.pos < r.ones && kmq__peek(&r))
        r.pos++;
      e = base + r.pos;
    } else {
      uint64_t vu, vf;
      if (kmq__get_eg(&r, (unsigned)ku, &vu) ||
          kmq__get_eg(&r, (unsigned)kf, &vf))
        return KMQ_ERR_BAD_FIELD; /* truncated, oversized, or no finished run */
      uint64_t u = vu + (uint64_t)!first, f = vf + 1;
      if (u > (uint64_t)(INT64_MAX - pos) ||
          f > (uint64_t)(INT64_MAX - pos - (int64_t)u))
        return KMQ_ERR_BAD_FIELD; /* past the largest offset */
      s = pos + (int64_t)u;
      e = s + (int64_t)f;
    }
    int64_t ce = e < lim ? e : lim;
    if (apply && s < ce) {
      kmq__paint(apply, s, ce, 1);
      count += ce - s;
      apply->rend = ce;
    }
    pos = e;
  }
  /* Only the last character's zero padding may follow the last run. */
  if (r.nbits - r.pos >= 6)
    return KMQ_ERR_BAD_FIELD;
  if (marked)
    *marked = count;
  return KMQ_OK;
}

kmq_err_t kmq_gate_restore_done(kmq_gate_t *g, const char *meta, size_t len,
                                int64_t *restored) {
  if (!g || (!meta && len))
    return KMQ_ERR_INVALID_ARG;
  if (g->high != g->base || g->backlog)
    return KMQ_ERR_STATE;
  int64_t n = 0;
  if (len) {
    /* Validate everything first: a bad text changes nothing. */
    int64_t lim = kmq__lim(g);
    kmq_err_t err = kmq__meta_parse(meta, len, g->base, lim, NULL, NULL);
    if (err)
      return err;
    kmq__meta_parse(meta, len, g->base, lim, g, &n);
    /* All at or past high: finished, not reached by the fetch yet. */
    g->backlog = g->ahead = n;
    kmq__advance(g);
  }
  if (restored)
    *restored = n;
  return KMQ_OK;
}
