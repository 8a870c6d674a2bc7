/*
 * The scheduler's ck_ring use (the per-actor mailbox), wrapped so that its
 * memory ordering is stated once and ThreadSanitizer can follow it.
 *
 *   mailbox  ck_ring SPSC of struct kmq__mbox_entry, one per actor.
 *            Producer: the dispatcher (kmq_sched_submit). Consumer: the
 *            actor's current runner. Runners change over time, but two of
 *            them never overlap: each one's last access to the ring happens
 *            before the next one's first, through the acq_rel RMWs on the
 *            actor's `pending` counter plus the run queue's mutex. That is
 *            all SPSC needs (ck reads c_head unsynchronised on the consumer
 *            side).
 *
 * Ordering. ck_ring's producer commit is "write slot; ck_pr_fence_store;
 * store p_tail" and its consumer is "load p_tail; ck_pr_fence_load; read
 * slot": release/acquire on the ring's tail, which orders everything the
 * producer wrote before the push (the item, the actor's key, the mailbox
 * entry) before everything the consumer does after the pop.
 *
 * ThreadSanitizer: see lib/tsan.h (an ignore region around each ring
 * operation plus release/acquire annotations on the ring's address; an
 * ignore region works whatever the compiler inlined).
 */
#ifndef KMQ_SCHED_RING_H
#define KMQ_SCHED_RING_H

#include "scheduler/sched_int.h"

#include "lib/tsan.h"

/* Empties a's mailbox. Only while nobody else can reach a (binding).
 * @locality dispatcher */
static inline void kmq__mbox_init(kmq_sched_actor_t *a, uint32_t size) {
  KMQ__TSAN_IGNORE_BEGIN();
  ck_ring_init(&a->mbox, size);
  KMQ__TSAN_IGNORE_END();
}

/* Appends (item, gen, seq) to a's mailbox. Returns false when it is full.
 * *depthp receives the number of entries queued before this one.
 * @locality dispatcher (the single producer) */
static inline bool kmq__mbox_push(kmq_sched_actor_t *a, void *item,
                                  uint64_t gen, uint32_t seq,
                                  unsigned int *depthp) {
  unsigned int depth;
  KMQ__TSAN_IGNORE_BEGIN();
  struct kmq__mbox_entry *e =
      ck_ring_enqueue_reserve_spsc_size_kmq__mbox(&a->mbox, a->mbox_buf,
                                                  &depth);
  if (e != NULL) {
    e->item = item;
    e->gen = (uint32_t)gen;
    e->seq = seq;
    /* The consumer acquires this after seeing the commit below. */
    KMQ__TSAN_RELEASE(&a->mbox);
    /* ck: store fence, then p_tail store: publishes the entry. */
    ck_ring_enqueue_commit_spsc(&a->mbox);
  }
  KMQ__TSAN_IGNORE_END();
  *depthp = depth;
  return e != NULL;
}

/* Removes the oldest entry of a's mailbox into *e. Returns false if empty.
 * @locality the actor's runner (the single consumer) */
static inline bool kmq__mbox_pop(kmq_sched_actor_t *a,
                                 struct kmq__mbox_entry *e) {
  /* ck: p_tail load, load fence, slot copy, store fence, c_head store: the
   * producer sees the slot free only after we copied it out. */
  struct kmq__mbox_entry tmp;
  KMQ__TSAN_IGNORE_BEGIN();
  bool ok = ck_ring_dequeue_spsc_kmq__mbox(&a->mbox, a->mbox_buf, &tmp);
  KMQ__TSAN_IGNORE_END();
  if (!ok)
    return false;
  KMQ__TSAN_ACQUIRE(&a->mbox);
  *e = tmp;
  return true;
}

/* The seq of a's oldest entry, which must exist (pending > 1 seen by the
 * caller's acq_rel RMW, which orders the entry's commit before this read).
 * ck_ring has no peek: read the slot at the consumer index, as its own
 * dequeue does. @locality the actor's runner (the single consumer) */
static inline uint32_t kmq__mbox_head_seq(const kmq_sched_actor_t *a) {
  KMQ__TSAN_IGNORE_BEGIN();
  unsigned int head = ck_pr_load_uint(&a->mbox.c_head);
  uint32_t seq = a->mbox_buf[head & a->mbox.mask].seq;
  KMQ__TSAN_IGNORE_END();
  return seq;
}

/* Entries queued in a's mailbox (exact for the producer, which only sees
 * it shrink concurrently). @locality dispatcher */
static inline unsigned int kmq__mbox_depth(const kmq_sched_actor_t *a) {
  KMQ__TSAN_IGNORE_BEGIN();
  unsigned int n = ck_ring_size(&a->mbox);
  KMQ__TSAN_IGNORE_END();
  return n;
}

#endif /* KMQ_SCHED_RING_H */
