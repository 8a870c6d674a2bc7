/*
 * Actor bookkeeping, all on the dispatcher thread: the key -> actor table
 * (open addressing, linear probing, backward-shift deletion so churn leaves
 * no tombstones), the slab of actor slots with its free list, and the LRU
 * list that kmq_sched_reclaim walks.
 *
 * Memory: a slot is allocated only when a new key finds the free list empty;
 * unbound slots go back to the free list and are reused, so the number of
 * slots is the peak number of live actors (rounded up to a slab chunk). The
 * table doubles when half full and never shrinks (it is bounded by
 * kmq.sched.max.actors).
 */
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched_ring.h"

/* ---- hashing ---- */

static inline uint64_t kmq__mix64(uint64_t x) {
  /* splitmix64 finaliser */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t kmq__key_hash(const kmq_sched_t *s, const void *key, size_t len) {
  const unsigned char *p = key;
  uint64_t h = s->hash_seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ULL);
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = kmq__mix64(h ^ w);
    p += 8;
    len -= 8;
  }
  if (len > 0) {
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = kmq__mix64(h ^ w ^ 0xff);
  }
  return kmq__mix64(h);
}

/* ---- table ---- */

kmq_err_t kmq__table_init(kmq__table_t *t, size_t size) {
  t->slots = calloc(size, sizeof(*t->slots));
  if (t->slots == NULL)
    return KMQ_ERR_NOMEM;
  t->mask = size - 1;
  t->used = 0;
  return KMQ_OK;
}

void kmq__table_free(kmq__table_t *t) {
  free(t->slots);
  t->slots = NULL;
}

static inline bool kmq__actor_key_eq(const kmq_sched_actor_t *a,
                                     const void *key, size_t len) {
  return a->key_len == len && (len == 0 || memcmp(a->key, key, len) == 0);
}

kmq_sched_actor_t *kmq__actor_find(const kmq_sched_t *s, uint64_t hash,
                                   const void *key, size_t len) {
  const kmq__table_t *t = &s->table;
  for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
    const kmq__table_slot_t *sl = &t->slots[i];
    if (sl->actor == NULL)
      return NULL;
    if (sl->hash == hash && kmq__actor_key_eq(sl->actor, key, len))
      return sl->actor;
  }
}

static void kmq__table_put(kmq__table_t *t, uint64_t hash,
                           kmq_sched_actor_t *a) {
  size_t i = hash & t->mask;
  while (t->slots[i].actor != NULL)
    i = (i + 1) & t->mask;
  t->slots[i].hash = hash;
  t->slots[i].actor = a;
  t->used++;
}

/* Makes room for one more entry, doubling at half load. */
static kmq_err_t kmq__table_reserve(kmq__table_t *t) {
  size_t size = t->mask + 1;
  if ((t->used + 1) * 2 <= size)
    return KMQ_OK;
  kmq__table_t n;
  if (kmq__table_init(&n, size * 2) != KMQ_OK)
    return KMQ_ERR_NOMEM;
  for (size_t i = 0; i < size; i++)
    if (t->slots[i].actor != NULL)
      kmq__table_put(&n, t->slots[i].hash, t->slots[i].actor);
  free(t->slots);
  *t = n;
  return KMQ_OK;
}

static void kmq__table_del(kmq__table_t *t, const kmq_sched_actor_t *a) {
  size_t i = a->hash & t->mask;
  while (t->slots[i].actor != a) {
    if (t->slots[i].actor == NULL)
      KMQ__SCHED_BUG("actor missing from table");
    i = (i + 1) & t->mask;
  }
  /* Backward shift: pull later entries of the probe run into the hole
   * unless their home slot lies cyclically in (hole, j]. */
  size_t hole = i;
  for (size_t j = (i + 1) & t->mask; t->slots[j].actor != NULL;
       j = (j + 1) & t->mask) {
    size_t home = t->slots[j].hash & t->mask;
    bool stays = hole <= j ? (hole < home && home <= j)
                           : (hole < home || home <= j);
    if (!stays) {
      t->slots[hole] = t->slots[j];
      hole = j;
    }
  }
  t->slots[hole].actor = NULL;
  t->slots[hole].hash = 0;
  t->used--;
}

/* ---- LRU list ---- */

static void kmq__lru_unlink(kmq_sched_t *s, kmq_sched_actor_t *a) {
  if (a->lru_prev != NULL)
    a->lru_prev->lru_next = a->lru_next;
  else
    s->lru_head = a->lru_next;
  if (a->lru_next != NULL)
    a->lru_next->lru_prev = a->lru_prev;
  else
    s->lru_tail = a->lru_prev;
  a->lru_prev = a->lru_next = NULL;
}

static void kmq__lru_append(kmq_sched_t *s, kmq_sched_actor_t *a) {
  a->lru_next = NULL;
  a->lru_prev = s->lru_tail;
  if (s->lru_tail != NULL)
    s->lru_tail->lru_next = a;
  else
    s->lru_head = a;
  s->lru_tail = a;
}

void kmq__actor_touch(kmq_sched_t *s, kmq_sched_actor_t *a, bool force) {
  /* Stamps only grow (the clock is monotonic), so the list stays sorted by
   * stamp when a re-stamped actor moves to the tail. Same stamp: already in
   * a valid place (everything after it carries the current clock too),
   * unless the caller wants it behind the others (reclaim's busy actors). */
  if (a->stamp_ms == s->clock_ms && !force)
    return;
  a->stamp_ms = s->clock_ms;
  if (s->lru_tail != a) {
    kmq__lru_unlink(s, a);
    kmq__lru_append(s, a);
  }
}

/* ---- slab ---- */

static kmq_err_t kmq__slab_grow(kmq_sched_t *s) {
  size_t bytes = sizeof(kmq__slab_t) +
                 (size_t)KMQ__SCHED_SLAB_ACTORS * s->actor_stride;
  kmq__slab_t *slab = aligned_alloc(KMQ__CACHELINE, bytes);
  if (slab == NULL)
    return KMQ_ERR_NOMEM;
  slab->next = s->slabs;
  s->slabs = slab;
  char *base = (char *)(slab + 1);
  /* Push in reverse so slots are handed out in address order. */
  for (int i = KMQ__SCHED_SLAB_ACTORS - 1; i >= 0; i--) {
    kmq_sched_actor_t *a = (kmq_sched_actor_t *)(base + i * s->actor_stride);
    memset(a, 0, sizeof(*a));
    a->s = s;
    a->mbox_buf = (struct kmq__mbox_entry *)(a + 1);
    a->lru_next = s->free_list;
    s->free_list = a;
  }
  kmq__dstat_add(&s->dstats.actor_slots, KMQ__SCHED_SLAB_ACTORS);
  return KMQ_OK;
}

kmq_err_t kmq__actor_bind(kmq_sched_t *s, uint64_t hash, const void *key,
                          size_t len, kmq_sched_actor_t **ap) {
  if (kmq__table_reserve(&s->table) != KMQ_OK)
    return KMQ_ERR_NOMEM;
  if (s->free_list == NULL && kmq__slab_grow(s) != KMQ_OK)
    return KMQ_ERR_NOMEM;
  kmq_sched_actor_t *a = s->free_list;

  char *k = a->key_inline;
  if (len > sizeof(a->key_inline) && (k = malloc(len)) == NULL)
    return KMQ_ERR_NOMEM; /* a is still on the free list */
  s->free_list = a->lru_next;

  if (len > 0)
    memcpy(k, key, len);
  a->key = k;
  a->key_len = len;
  a->hash = hash;
  a->stamp_ms = s->clock_ms;
  kmq__mbox_init(a, s->mbox_size);
  /* Relaxed: a is unreachable by other threads until the dispatcher
   * publishes it on the run queue (release there). The previous binding's
   * last runner is ordered before us by the acquire load of pending == 0
   * in kmq_sched_reclaim. */
  atomic_store_explicit(&a->pending, 0, memory_order_relaxed);
  atomic_store_explicit(&a->running, false, memory_order_relaxed);

  kmq__table_put(&s->table, hash, a);
  kmq__lru_append(s, a);
  s->live++;
  kmq__dstat_add(&s->dstats.actors_live, 1);
  kmq__dstat_add(&s->dstats.actors_created, 1);
  *ap = a;
  return KMQ_OK;
}

void kmq__actor_unbind(kmq_sched_t *s, kmq_sched_actor_t *a) {
  kmq__table_del(&s->table, a);
  kmq__lru_unlink(s, a);
  if (a->key != a->key_inline)
    free(a->key);
  a->key = NULL;
  a->key_len = 0;
  a->lru_next = s->free_list;
  s->free_list = a;
  s->live--;
  /* actors_live: single writer, so a plain decrement through load/store. */
  atomic_store_explicit(
      &s->dstats.actors_live,
      atomic_load_explicit(&s->dstats.actors_live, memory_order_relaxed) - 1,
      memory_order_relaxed);
  kmq__dstat_add(&s->dstats.actors_reclaimed, 1);
}

void kmq__actors_free_all(kmq_sched_t *s) {
  for (kmq_sched_actor_t *a = s->lru_head; a != NULL; a = a->lru_next)
    if (a->key != a->key_inline)
      free(a->key);
  s->lru_head = s->lru_tail = NULL;
  s->free_list = NULL;
  while (s->slabs != NULL) {
    kmq__slab_t *next = s->slabs->next;
    free(s->slabs);
    s->slabs = next;
  }
}
