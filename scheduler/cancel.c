/*
 * Cancellation by predicate, with generations.
 *
 * Every kmq_sched_cancel_if() opens a new generation G (cancel_gen) and
 * stores its filter in slot G & (N-1). Every submitted item is tagged with
 * the generation current at submit time, g. When a runner dequeues an item
 * it tests it against the filters g+1 .. cancel_gen (the cancellations that
 * came after it was queued): so a filter sees exactly the items queued
 * before it, never later ones, and an item untouched by cancellations costs
 * one acquire load.
 *
 * Lifetime of a filter slot. gen_queued[g & (N-1)] counts items tagged g
 * that are not yet dequeued (+1 by the dispatcher at submit, -1 by the
 * runner after its filter tests). gen_lo is the oldest generation that may
 * still have such items; filters gen_lo+1 .. cancel_gen are live. The
 * dispatcher advances gen_lo while the count of gen_lo is 0 (it cannot grow
 * again: new items carry cancel_gen > gen_lo) and releases filter gen_lo
 * each time. The runner's decrement is a release and the dispatcher's read
 * an acquire, so every pred call on a filter happens before its arg_free
 * or the reuse of its slot. N generations may be outstanding; one more
 * cancel_if is refused with KMQ_ERR_BACKPRESSURE.
 */
#include <string.h>

#include "scheduler/sched_ring.h"

#define KMQ__GEN_MASK ((uint64_t)KMQ__SCHED_FILTERS - 1)

void kmq__gen_count(kmq_sched_t *s, uint64_t gen) {
  /* Relaxed: a runner pops the entry only after the acq_rel pending
   * increment that follows this in kmq_sched_submit, so its decrement
   * comes after this increment; nothing else is ordered by it. */
  atomic_fetch_add_explicit(&s->gen_queued[gen & KMQ__GEN_MASK], 1,
                            memory_order_relaxed);
}

bool kmq__gen_should_cancel(kmq_sched_t *s, const struct kmq__mbox_entry *e) {
  /* Relaxed: destroy sets stopping; an item that races with it either runs
   * or is cancelled, exactly once either way. */
  if (atomic_load_explicit(&s->stopping, memory_order_relaxed))
    return true;
  /* Acquire: pairs with the release store in kmq_sched_cancel_if, so the
   * filter slots up to cur are fully written before we read them. */
  uint64_t cur = atomic_load_explicit(&s->cancel_gen, memory_order_acquire);
  /* e->gen is the low half of a generation at most KMQ__SCHED_FILTERS
   * older than cur (kmq_sched_cancel_if refuses more): the difference of
   * the low halves is the number of newer generations. */
  uint32_t newer = (uint32_t)cur - e->gen;
  for (uint32_t i = 1; i <= newer; i++) {
    const kmq__filter_t *f = &s->filters[(e->gen + i) & KMQ__GEN_MASK];
    if (f->pred(e->item, f->arg))
      return true;
  }
  return false;
}

void kmq__gen_dequeued(kmq_sched_t *s, const struct kmq__mbox_entry *e) {
  /* Release: our filter reads and pred calls above happen before the
   * dispatcher's acquire load that sees this count drained and releases
   * or reuses the filter slots (kmq__gen_retire). */
  atomic_fetch_sub_explicit(&s->gen_queued[e->gen & KMQ__GEN_MASK], 1,
                            memory_order_release);
}

static void kmq__filter_release(kmq__filter_t *f) {
  if (f->arg_free != NULL)
    f->arg_free(f->arg);
  memset(f, 0, sizeof(*f));
}

void kmq__gen_retire(kmq_sched_t *s, bool all) {
  uint64_t cur = atomic_load_explicit(&s->cancel_gen, memory_order_relaxed);
  /* Acquire: pairs with the release decrement in kmq__gen_dequeued. */
  while (s->gen_lo < cur &&
         (all || atomic_load_explicit(&s->gen_queued[s->gen_lo & KMQ__GEN_MASK],
                                      memory_order_acquire) == 0)) {
    s->gen_lo++;
    /* No item tagged < gen_lo remains: filter gen_lo has no one left. */
    kmq__filter_release(&s->filters[s->gen_lo & KMQ__GEN_MASK]);
  }
}

kmq_err_t kmq_sched_cancel_if(kmq_sched_t *s,
                              bool (*pred)(void *item, void *arg), void *arg,
                              void (*arg_free)(void *arg)) {
  if (s == NULL || pred == NULL)
    return KMQ_ERR_INVALID_ARG;
  kmq__gen_retire(s, false);
  uint64_t cur = atomic_load_explicit(&s->cancel_gen, memory_order_relaxed);
  /* Generation cur + 1 needs its filter slot and its count slot; both are
   * free while cur + 1 - gen_lo < N. */
  if (cur + 1 - s->gen_lo >= KMQ__SCHED_FILTERS)
    return KMQ_ERR_BACKPRESSURE;
  kmq__filter_t *f = &s->filters[(cur + 1) & KMQ__GEN_MASK];
  f->pred = pred;
  f->arg = arg;
  f->arg_free = arg_free;
  /* Release: publishes *f to runners that acquire cancel_gen in
   * kmq__gen_should_cancel. */
  atomic_store_explicit(&s->cancel_gen, cur + 1, memory_order_release);
  /* Nothing queued from before? Then the filter is released right away. */
  kmq__gen_retire(s, false);
  return KMQ_OK;
}
