/* Commit gate: a sliding bitmap over [committable, committable + window). */
#include "kmq/gate.h"

#include <stdio.h>
#include <stdlib.h>

struct kmq_gate_s {
  int64_t base;    /* committable: lowest offset not finished */
  int64_t high;    /* one past the highest tracked/finished offset */
  int64_t backlog; /* bits set in the window */
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
  g->base = g->high = start;
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

/* Moves base over the run of finished offsets starting at it, a word at a
 * time: each offset is cleared once, so the cost is amortised O(1). */
static void kmq__advance(kmq_gate_t *g) {
  while (g->backlog > 0) {
    size_t i = (size_t)g->base & g->mask;
    uint64_t w = g->bits[i >> 6] >> (i & 63);
    if (!(w & 1))
      return;
    /* Length of the run of ones from bit (i & 63) up to the word's end. */
    unsigned run = (~w == 0) ? 64 - (unsigned)(i & 63)
                             : (unsigned)__builtin_ctzll(~w);
    if (run > 64 - (i & 63))
      run = 64 - (unsigned)(i & 63);
    uint64_t clear = run == 64 ? ~(uint64_t)0 : (((uint64_t)1 << run) - 1);
    g->bits[i >> 6] &= ~(clear << (i & 63));
    g->base += run;
    g->backlog -= run;
  }
}

int kmq_gate_would_overflow(const kmq_gate_t *g, int64_t offset) {
  /* Nothing outstanding: the window can jump to `offset`. */
  if (g->backlog == 0 && g->high == g->base)
    return 0;
  return offset - g->base >= (int64_t)g->window;
}

kmq_err_t kmq_gate_track(kmq_gate_t *g, int64_t offset) {
  if (offset < g->high)
    return KMQ_ERR_STATE;
  if (g->backlog == 0 && g->high == g->base) {
    /* Every offset below `offset` is finished or will never come. */
    g->base = offset;
    g->high = offset + 1;
    return KMQ_OK;
  }
  if (offset - g->base >= (int64_t)g->window)
    return KMQ_ERR_GATE_WINDOW;
  for (int64_t o = g->high; o < offset; o++) {
    kmq__bit_set(g, o);
    g->backlog++;
  }
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
  kmq__bit_set(g, offset);
  g->backlog++;
  if (offset >= g->high)
    g->high = offset + 1;
  if (offset == g->base)
    kmq__advance(g);
  if (committable)
    *committable = g->base;
  return KMQ_OK;
}

int64_t kmq_gate_committable(const kmq_gate_t *g) { return g->base; }
int64_t kmq_gate_backlog(const kmq_gate_t *g) { return g->backlog; }
int64_t kmq_gate_high(const kmq_gate_t *g) { return g->high; }
size_t kmq_gate_window(const kmq_gate_t *g) { return g->window; }

int64_t kmq_gate_in_flight(const kmq_gate_t *g) {
  return (g->high - g->base) - g->backlog;
}
