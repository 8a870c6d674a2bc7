/* Consumer: the record slab, its ack slots and their flags (consumer_int.h,
 * consumer.h). */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/consumer_int.h"
#include "lib/consumer_records.h"
#include "lib/util.h"

#define KMQ__ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))

int kmq__slab_init(kmq_consumer_t *c, size_t record_size, char *errstr,
                   size_t errstr_size) {
  /* Areas on cache lines of their own: the poll thread fills a record's
   * area while workers write their neighbours', and an area that shares a
   * line with the next record's would bounce between them. */
  const size_t align = KMQ__CACHELINE;
  size_t n = c->nslots;
  /* nslots <= 2^22 (kmq.max.inflight): the headers cannot overflow. */
  size_t head = KMQ__ALIGN_UP(n * sizeof(kmq__slot_t), align);
  size_t stride = 0;
  if (record_size) {
    if (record_size > (SIZE_MAX - head) / n - align) {
      snprintf(errstr, errstr_size,
               "record_size %zu times kmq.max.inflight %zu is too large",
               record_size, n);
      return -1;
    }
    stride = KMQ__ALIGN_UP(record_size, align);
  }
  /* Zeroed: every word starts FREE at generation 0, every area zeroed;
   * aligned to a cache line (which max_align_t divides), so are head and
   * every stride after it. */
  unsigned char *slab = kmq__zalloc_lines(head + n * stride);
  c->free_stack = calloc(n, sizeof(*c->free_stack));
  c->acked_next = calloc(n, sizeof(*c->acked_next));
  c->revoke_order = calloc(n, sizeof(*c->revoke_order));
  if (!slab || !c->free_stack || !c->acked_next || !c->revoke_order) {
    free(slab);
    free(c->free_stack);
    free(c->acked_next);
    free(c->revoke_order);
    c->free_stack = NULL;
    c->acked_next = NULL;
    c->revoke_order = NULL;
    snprintf(errstr, errstr_size,
             "out of memory for %zu records of %zu bytes", n,
             sizeof(kmq__slot_t) + stride);
    return -1;
  }
  c->slots = (kmq__slot_t *)slab;
  c->data = stride ? slab + head : NULL;
  c->data_stride = stride;
  kmq__mpsc_init(&c->acked, c->acked_next);
  for (uint32_t i = 0; i < c->nslots; i++)
    c->free_stack[c->free_top++] = c->nslots - 1 - i;
  return 0;
}

void kmq__slab_free(kmq_consumer_t *c) {
  free(c->revoke_order);
  c->revoke_order = NULL;
  free(c->acked_next);
  free(c->free_stack);
  free(c->slots); /* the areas with it: one allocation */
  c->acked_next = NULL;
  c->free_stack = NULL;
  c->slots = NULL;
  c->data = NULL;
}

void *kmq_ack_data(kmq_ack_t ack) {
  kmq_consumer_t *c = ack.c;
  if (!c || !c->data || ack.slot >= c->nslots)
    return NULL;
  /* Relaxed: only a check that the handle is current; the area is ordered
   * by the holder's own hand-off of the ack (as kmq_ack orders the
   * holder's work before the drain). */
  uint64_t w = atomic_load_explicit(&c->slots[ack.slot].word,
                                    memory_order_relaxed);
  if ((w >> 32) != ack.gen || (w & KMQ__SLOT_STATE) != KMQ__SLOT_PENDING)
    return NULL;
  return c->data + (size_t)ack.slot * c->data_stride;
}

void kmq__consumer_each_record(kmq_consumer_t *c, kmq__record_visit_cb *cb,
                               void *opaque) {
  for (uint32_t i = 0; i < c->nslots; i++) {
    kmq__slot_t *s = &c->slots[i];
    /* Relaxed: the state is only a filter. An acked record's message and
     * area are not freed before this thread drains it, and the caller reads
     * from the area only what it wrote on this thread or atomics. */
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if ((w & KMQ__SLOT_STATE) == KMQ__SLOT_PENDING && s->m)
      cb(s->m, c->data ? c->data + (size_t)i * c->data_stride : NULL,
         opaque);
  }
}


/* The gate of p finished `offset`: advance and tell the committer. */
void kmq__part_finish(kmq_consumer_t *c, kmq__part_t *p, int64_t offset) {
  KMQ__INC(c, finished, 1);
  if (!p->gate)
    return;
  int64_t before = kmq_gate_committable(p->gate), after = before;
  kmq_err_t err = kmq_gate_mark_done(p->gate, offset, &after);
  /* With commit metadata, an offset finished beyond the prefix changes
   * what the next commit says too. */
  if (err == KMQ_OK)
    kmq__committer_note(&c->cm, p,
                        after > before ? after - before
                                       : (c->cm.meta_buf != NULL));
}

void kmq__slot_free(kmq_consumer_t *c, uint32_t idx) {
  kmq__slot_t *s = &c->slots[idx];
  uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
  uint64_t gen = (w >> 32) + 1;
  /* Release: a later acker that reads the new generation sees the slot
   * cleared; stale handles fail their CAS on the generation. */
  atomic_store_explicit(&s->word, gen << 32 | KMQ__SLOT_FREE,
                        memory_order_release);
  s->part = NULL;
  s->m = NULL;
  c->free_stack[c->free_top++] = idx;
}

/* Applies acks that arrived since the last call. @locality poll thread */
int kmq__drain(kmq_consumer_t *c) {
  int n = 0;
  for (uint32_t node = kmq__mpsc_take(&c->acked); node;) {
    uint32_t idx = node - 1;
    node = kmq__mpsc_next(&c->acked, node); /* before the slot is reused */
    kmq__slot_t *s = &c->slots[idx];
    /* Acquire pairs with the acker's CAS: what the processor did before
     * acking happens before we destroy the message. */
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    kmq__part_t *p = s->part;
    KMQ__INC(c, in_flight, -1);
    if (p) {
      p->in_flight--;
      if ((w & KMQ__SLOT_STATE) == KMQ__SLOT_OK)
        kmq__part_finish(c, p, s->m->offset);
      else
        KMQ__INC(c, unfinished, 1);
    }
    rd_kafka_message_destroy(s->m);
    kmq__slot_free(c, idx);
    n++;
  }
  return n;
}

void kmq_ack(kmq_ack_t ack, int ok) {
  kmq_consumer_t *c = ack.c;
  if (!c || ack.slot >= c->nslots)
    return;
  kmq__slot_t *s = &c->slots[ack.slot];
  uint64_t want = (uint64_t)ack.gen << 32 |
                  (ok ? KMQ__SLOT_OK : KMQ__SLOT_FAIL);
  uint64_t expect = atomic_load_explicit(&s->word, memory_order_relaxed);
  do {
    /* Only a PENDING slot of this generation, revoked or not. */
    if ((expect >> 32) != ack.gen ||
        (expect & KMQ__SLOT_STATE) != KMQ__SLOT_PENDING)
      return;
    /* acq_rel: release publishes the processor's work to the poll thread;
     * the CAS makes the first call win and every later one a no-op. A
     * failed CAS (the poll thread set REVOKED meanwhile) reloads. */
  } while (!atomic_compare_exchange_weak_explicit(
      &s->word, &expect, want, memory_order_acq_rel, memory_order_relaxed));
  /* Release: after the CAS above (the slot no longer PENDING), so the
   * recount resumes the partition. */
  /* One node per slot, and a slot is pushed once per use. */
  kmq__mpsc_push(&c->acked, ack.slot);
  if (expect & KMQ__SLOT_STUCK) {
    atomic_store_explicit(&c->stuck_dirty, 1, memory_order_release);
    kmq__wake(c);
  }
}

void kmq_ack_stuck(kmq_ack_t ack, int stuck) {
  kmq_consumer_t *c = ack.c;
  if (!c || ack.slot >= c->nslots)
    return;
  kmq__slot_t *s = &c->slots[ack.slot];
  uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
  uint64_t want;
  do {
    /* A CAS on (generation, PENDING), not a fetch_or: the slot may have
     * been acked and reused meanwhile. */
    if ((w >> 32) != ack.gen || (w & KMQ__SLOT_STATE) != KMQ__SLOT_PENDING)
      return;
    want = stuck ? w | KMQ__SLOT_STUCK : w & ~(uint64_t)KMQ__SLOT_STUCK;
    if (want == w)
      return;
    /* Relaxed: the dirty flag's release store below publishes it. */
  } while (!atomic_compare_exchange_weak_explicit(
      &s->word, &w, want, memory_order_relaxed, memory_order_relaxed));
  atomic_store_explicit(&c->stuck_dirty, 1, memory_order_release);
  if (!stuck)
    kmq__wake(c);
}

void kmq__wake(kmq_consumer_t *c) {
  /* Non-blocking: a full pipe already wakes the poll thread. */
  if (write(c->wake[1], "1", 1) < 0) {
    /* EAGAIN: full, so the poll thread wakes anyway. */
  }
}

bool kmq_ack_revoked(kmq_ack_t ack) {
  kmq_consumer_t *c = ack.c;
  if (!c || ack.slot >= c->nslots)
    return true;
  /* Acquire pairs with the release fetch_or in kmq__revoke_slots. */
  uint64_t w = atomic_load_explicit(&c->slots[ack.slot].word,
                                    memory_order_acquire);
  return (w >> 32) != ack.gen || (w & KMQ__SLOT_REVOKED);
}

void kmq_ack_defer(kmq_ack_t ack) {
  kmq_consumer_t *c = ack.c;
  if (!c || ack.slot >= c->nslots)
    return;
  /* Release: ordered before the message is published to the thread that
   * will call kmq_ack_begin. An RMW, so a concurrent REVOKED (the poll
   * thread's fetch_or) is never lost; kmq_ack_begin's CAS then decides. */
  atomic_fetch_or_explicit(&c->slots[ack.slot].word, KMQ__SLOT_QUEUED,
                           memory_order_release);
}

bool kmq_ack_begin(kmq_ack_t ack) {
  kmq_consumer_t *c = ack.c;
  if (!c || ack.slot >= c->nslots)
    return false;
  kmq__slot_t *s = &c->slots[ack.slot];
  uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
  for (;;) {
    if ((w >> 32) != ack.gen || (w & KMQ__SLOT_STATE) != KMQ__SLOT_PENDING ||
        (w & KMQ__SLOT_REVOKED))
      return false;
    if (!(w & KMQ__SLOT_QUEUED))
      return true; /* never deferred: counted as running from dispatch */
    /* One CAS decides between this start and a revoke's fetch_or: either
     * the message is running before the revoke looks (and it waits for
     * it), or it sees REVOKED here and never starts. acq_rel: acquire for
     * the revoke flag, release so the poll thread's scan sees it running
     * before the processor's effects. */
    if (atomic_compare_exchange_weak_explicit(&s->word, &w,
                                              w & ~(uint64_t)KMQ__SLOT_QUEUED,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      return true;
  }
}

/* Pending and not deferred: the message may be running. */
int kmq__slot_running(const kmq__slot_t *s) {
  /* Acquire pairs with kmq_ack_begin's CAS. */
  uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
  return (w & KMQ__SLOT_STATE) == KMQ__SLOT_PENDING &&
         !(w & KMQ__SLOT_QUEUED);
}

static int kmq__revoke_ent_desc(const void *a, const void *b) {
  int64_t x = ((const struct kmq__revoke_ent *)a)->offset;
  int64_t y = ((const struct kmq__revoke_ent *)b)->offset;
  return (x < y) - (x > y);
}

/* Flags every message of p still in flight as revoked: those not started
 * yet will not start (kmq_ack_revoked), so that only running ones keep the
 * partition. No capacity: one flag per ack slot.
 *
 * Highest offset first. Workers begin a user's queued records in offset
 * order while this runs; flagged in any other order, a worker could find
 * a user's record refused and that user's next one not flagged yet, begin
 * it, and the next owner would then run the refused one after it (seen:
 * members_join_and_leave_midstream, under load). Flagged from the top, a
 * record refused means every later record of p was flagged before it:
 * the refusing worker's acquire load of this flag (kmq_ack_begin, or
 * kmq_ack_revoked on a retry) reads a value this thread released after
 * those, so a begin ordered after that refusal (the user's next record, on
 * this worker or the next runner) sees them refused too. What begins is a
 * prefix of each user's records, and the revoke waits for it. Only
 * pending records are sorted: an acked one needs no flag (its state bits
 * already make begin fail) and cannot become pending again without this
 * thread. Once per partition: nothing of a revoking partition is offered
 * (kmq__read_parts, kmq__serve_events, kmq__retry_held skip it), so a
 * second call (close, then its final rebalance) would find every pending
 * record flagged already. @locality poll thread */
void kmq__revoke_slots(kmq_consumer_t *c, kmq__part_t *p) {
  if (p->revoking)
    return;
  p->revoking = 1;
  uint32_t n = 0;
  for (uint32_t i = 0; i < c->nslots; i++) {
    const kmq__slot_t *s = &c->slots[i];
    /* m is set whenever part is, outside this thread's own steps
     * (kmq__offer, kmq__drain, kmq__slot_free). */
    if (s->part == p &&
        (atomic_load_explicit(&s->word, memory_order_relaxed) &
         KMQ__SLOT_STATE) == KMQ__SLOT_PENDING)
      c->revoke_order[n++] = (struct kmq__revoke_ent){s->m->offset, i};
  }
  qsort(c->revoke_order, n, sizeof(*c->revoke_order), kmq__revoke_ent_desc);
  for (uint32_t k = 0; k < n; k++)
    /* Release: see kmq_ack_revoked and above. On a slot already acked the
     * flag is harmless (the state bits are read masked). */
    atomic_fetch_or_explicit(&c->slots[c->revoke_order[k].idx].word,
                             KMQ__SLOT_REVOKED, memory_order_release);
}
