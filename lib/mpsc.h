/*
 * A bounded MPSC ring of pointers (kmq__ internal): any thread pushes, one
 * owner thread pops. Used to bring completions (acks, freed jobs) back to
 * the poll thread, so the state they touch (gates, slabs) needs no lock.
 * Sized by the caller so that it cannot fill: it carries at most one entry
 * per outstanding slot. ck_ring orders the push's prior writes before the
 * pop's later reads (release/acquire on the ring's tail); lib/tsan.h tells
 * ThreadSanitizer the same.
 */
#ifndef KMQ_LIB_MPSC_H
#define KMQ_LIB_MPSC_H

#include <ck_pr.h>
#include <ck_ring.h>
#include <stdbool.h>

#include "lib/tsan.h"

/* @locality any thread. Returns false only if the ring is full. */
static inline bool kmq__mpsc_push(ck_ring_t *r, ck_ring_buffer_t *buf,
                                  void *v) {
  KMQ__TSAN_RELEASE(r); /* the popper acquires it after our commit */
  KMQ__TSAN_IGNORE_BEGIN();
  bool ok = ck_ring_enqueue_mpsc(r, buf, v);
  KMQ__TSAN_IGNORE_END();
  return ok;
}

/* Pushes, waiting out a producer whose view of the consumer was stale. For
 * rings sized never to fill. @locality any thread */
static inline void kmq__mpsc_push_wait(ck_ring_t *r, ck_ring_buffer_t *buf,
                                       void *v) {
  while (!kmq__mpsc_push(r, buf, v))
    ck_pr_stall();
}

/* @locality the owner thread. Returns false when empty (*vp untouched). */
static inline bool kmq__mpsc_pop(ck_ring_t *r, ck_ring_buffer_t *buf,
                                 void **vp) {
  void *v;
  KMQ__TSAN_IGNORE_BEGIN();
  bool ok = ck_ring_dequeue_mpsc(r, buf, &v);
  KMQ__TSAN_IGNORE_END();
  if (!ok)
    return false;
  KMQ__TSAN_ACQUIRE(r);
  *vp = v;
  return true;
}

#endif
