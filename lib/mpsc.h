/*
 * A multi-producer, single-consumer stack of indices (kmq__ internal): any
 * thread pushes a node index, one owner thread takes every pushed index at
 * once. It brings completions (acks) back to the poll thread so
 * that the state they touch (gates, slabs) needs no lock.
 *
 * Why not a ring: Concurrency Kit's multi-producer ring enqueue makes each
 * producer wait until every earlier producer has published; with more busy
 * threads than CPUs a preempted producer stalls all the others (measured in
 * bench/RESULTS.md, finding 1). Here a push is one CAS that never waits for
 * another producer, and the owner takes the whole list with one exchange.
 * No ABA: nodes are never popped one by one, and a node is pushed again only
 * after the owner has taken and recycled it.
 *
 * Storage is the caller's: `next` has one entry per node index, so nothing is
 * allocated per push and the stack cannot fill. The list comes out newest
 * first; the callers' completions carry no order.
 */
#ifndef KMQ_LIB_MPSC_H
#define KMQ_LIB_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
  _Atomic uint32_t head; /* index + 1 of the newest node; 0: empty */
  uint32_t *next;        /* next[i]: index + 1 of the node pushed before i */
} kmq__mpsc_t;

static inline void kmq__mpsc_init(kmq__mpsc_t *s, uint32_t *next) {
  atomic_init(&s->head, 0);
  s->next = next;
}

/* Pushes node idx, which must not be in the stack. Never blocks on another
 * producer. @locality any thread */
static inline void kmq__mpsc_push(kmq__mpsc_t *s, uint32_t idx) {
  uint32_t old = atomic_load_explicit(&s->head, memory_order_relaxed);
  do
    s->next[idx] = old;
  /* Release: next[idx], and whatever the caller wrote before pushing (the
   * ack state, the job's contents), happen before the owner's acquire. */
  while (!atomic_compare_exchange_weak_explicit(
      &s->head, &old, idx + 1, memory_order_release, memory_order_relaxed));
}

/* Takes every pushed node; returns the first one's index + 1 (0: none).
 * Walk with kmq__mpsc_next() and read it BEFORE recycling a node.
 * @locality the owner thread */
static inline uint32_t kmq__mpsc_take(kmq__mpsc_t *s) {
  /* Acquire pairs with the pushes' release CAS. */
  return atomic_exchange_explicit(&s->head, 0, memory_order_acquire);
}

static inline uint32_t kmq__mpsc_next(const kmq__mpsc_t *s, uint32_t node) {
  return s->next[node - 1];
}

#endif
