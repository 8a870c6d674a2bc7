/* Consumer: dispatch, ack slots, backpressure, rebalance with gates. */
#include "kmq/consumer.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/committer.h"
#include "lib/mpsc.h"
#include "lib/part.h"
#include "lib/util.h"

/* Messages a partition may hold (taken from librdkafka, refused for now)
 * before it is paused. Pausing is expensive: librdkafka drops the
 * partition's prefetched messages and the fetch after the resume waits for
 * the broker's in-flight long poll (up to fetch.wait.max.ms, 500 ms by
 * default), so short refusals are absorbed by holding instead. */
#define KMQ__HOLD_BEFORE_PAUSE 64

enum { KMQ__SLOT_FREE = 0, KMQ__SLOT_PENDING, KMQ__SLOT_OK, KMQ__SLOT_FAIL };
#define KMQ__SLOT_STATE 3u
/* Set on a slot whose partition is being revoked, lost or closed: the
 * message must not start any more (kmq_ack_begin fails). A flag beside the
 * state, so that acks keep working and nothing has a capacity. */
#define KMQ__SLOT_REVOKED 4u
/* The message waits in a queue and has not started (kmq_ack_defer until
 * kmq_ack_begin): a revoke does not wait for it. */
#define KMQ__SLOT_QUEUED 8u

/* An ack slot: one message awaiting its ack. `word` packs the generation
 * (high 32 bits) with the state and the REVOKED flag so that kmq_ack() from
 * any thread can CAS a specific (generation, PENDING) and a stale handle can
 * never hit a reused slot. part and m are @locality poll thread. */
typedef struct {
  _Atomic uint64_t word;
  kmq__part_t *part; /* NULL once the partition was dropped */
  rd_kafka_message_t *m;
} kmq__slot_t;

typedef struct {
  atomic_llong consumed, dispatched, finished, unfinished, backpressured,
      assigned, revoked, lost, rebalances, in_flight, paused, consume_errors,
      refetched, slow_revokes, abandoned;
} kmq__cstats_t;

struct kmq_consumer_s {
  rd_kafka_t *rk;
  kmq_consumer_hooks_t hooks;
  kmq__committer_t cm;
  kmq__part_t *parts;
  size_t window;
  int64_t revoke_ms, commit_timeout_ms;
  /* How long a revoke may keep a partition while its messages run: 90% of
   * max.poll.interval.ms, the group protocol's own limit. */
  int64_t revoke_max_ms;
  int64_t close_ms;
  int64_t close_deadline; /* set by kmq_consumer_close */
  int poll_batch;
  int cooperative;
  int subscribed;
  int closed;

  kmq__slot_t *slots;
  uint32_t nslots;
  uint32_t *free_stack; /* @locality poll thread */
  uint32_t free_top;
  kmq__mpsc_t acked; /* ackers -> poll thread: slot indices */
  uint32_t *acked_next;

  /* The handler of the current poll call, to re-offer held messages. */
  kmq_handler_cb *h;
  kmq_ack_handler_cb *ah;
  void *hopaque;

  /* Written on the poll thread, read anywhere: relaxed, metrics only. */
  kmq__cstats_t st;
};

#define KMQ__INC(c, f, n) atomic_fetch_add_explicit(&(c)->st.f, (n), memory_order_relaxed)

static kmq__part_t *kmq__part_find(kmq_consumer_t *c, const char *topic,
                                   int32_t partition) {
  for (kmq__part_t *p = c->parts; p; p = p->next)
    if (p->partition == partition && !strcmp(p->topic, topic))
      return p;
  return NULL;
}

static kmq__part_t *kmq__part_add(kmq_consumer_t *c, const char *topic,
                                  int32_t partition) {
  kmq__part_t *p = calloc(1, sizeof(*p));
  if (!p || !(p->topic = strdup(topic))) {
    free(p);
    return NULL;
  }
  p->partition = partition;
  p->stored = p->committed = -1;
  p->next = c->parts;
  c->parts = p;
  return p;
}

static int kmq__part_gate(kmq_consumer_t *c, kmq__part_t *p, int64_t start) {
  char errstr[128];
  p->gate = kmq_gate_new(start, c->window, errstr, sizeof(errstr));
  if (!p->gate) {
    kmq__log("ERROR", "consumer", "%s [%d]: %s", p->topic, p->partition,
             errstr);
    return -1;
  }
  return 0;
}

static void kmq__set_paused(kmq_consumer_t *c, kmq__part_t *p, int pause) {
  if (p->paused == pause)
    return;
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
  /* Only partitions we paused are ever resumed: resuming one that is not
   * paused can rewind the fetch position in librdkafka < 2.4 (#4636). */
  rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(c->rk, l)
                                  : rd_kafka_resume_partitions(c->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (err) {
    kmq__log("WARN", "consumer", "%s %s [%d]: %s", pause ? "pause" : "resume",
             p->topic, p->partition, rd_kafka_err2str(err));
    return;
  }
  p->paused = pause;
  KMQ__INC(c, paused, pause ? 1 : -1);
}


/* The gate of p finished `offset`: advance and tell the committer. */
static void kmq__finish(kmq_consumer_t *c, kmq__part_t *p, int64_t offset) {
  KMQ__INC(c, finished, 1);
  if (!p->gate)
    return;
  int64_t before = kmq_gate_committable(p->gate), after = before;
  kmq_err_t err = kmq_gate_mark_done(p->gate, offset, &after);
  if (err == KMQ_OK)
    kmq__committer_note(&c->cm, p, after - before);
}

static void kmq__slot_free(kmq_consumer_t *c, uint32_t idx) {
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
static int kmq__drain(kmq_consumer_t *c) {
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
        kmq__finish(c, p, s->m->offset);
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
  /* One node per slot, and a slot is pushed once per use. */
  kmq__mpsc_push(&c->acked, ack.slot);
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
  /* Release: ordered before the handler publishes the message to the
   * thread that will call kmq_ack_begin. Only the poll thread changes
   * REVOKED, and it is running this handler: no race with it. */
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
static int kmq__slot_running(const kmq__slot_t *s) {
  /* Acquire pairs with kmq_ack_begin's CAS. */
  uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
  return (w & KMQ__SLOT_STATE) == KMQ__SLOT_PENDING &&
         !(w & KMQ__SLOT_QUEUED);
}

/* Offers m to the handler. KMQ_ERR_BACKPRESSURE: not taken, m still ours.
 * Otherwise m's ownership went to the handler/slot or it was destroyed.
 * @locality poll thread */
static kmq_err_t kmq__offer(kmq_consumer_t *c, kmq__part_t *p,
                            rd_kafka_message_t *m) {
  if (!p->gate && kmq__part_gate(c, p, m->offset))
    return KMQ_ERR_BACKPRESSURE;
  if (kmq_gate_would_overflow(p->gate, m->offset) ||
      (c->ah && c->free_top == 0)) {
    KMQ__INC(c, backpressured, 1);
    return KMQ_ERR_BACKPRESSURE;
  }
  if (c->h) {
    kmq_err_t err = c->h(m, c->hopaque);
    if (err == KMQ_ERR_BACKPRESSURE) {
      KMQ__INC(c, backpressured, 1);
      return err;
    }
    KMQ__INC(c, dispatched, 1);
    kmq_gate_track(p->gate, m->offset);
    if (err == KMQ_OK)
      kmq__finish(c, p, m->offset);
    else
      KMQ__INC(c, unfinished, 1);
    rd_kafka_message_destroy(m);
    return KMQ_OK;
  }

  uint32_t idx = c->free_stack[--c->free_top];
  kmq__slot_t *s = &c->slots[idx];
  uint32_t gen = (uint32_t)(atomic_load_explicit(&s->word,
                                                 memory_order_relaxed) >> 32);
  s->part = p;
  s->m = m;
  /* Release: part/m are set before any acker can win the CAS. */
  atomic_store_explicit(&s->word, (uint64_t)gen << 32 | KMQ__SLOT_PENDING,
                        memory_order_release);
  kmq_ack_t ack = {c, idx, gen};
  /* An ack may arrive during the handler, but acks are applied only by
   * kmq__drain on this thread, after the offset is tracked below. */
  p->in_flight++;
  KMQ__INC(c, in_flight, 1);
  kmq_err_t err = c->ah(m, ack, c->hopaque);
  if (err == KMQ_OK) {
    kmq_gate_track(p->gate, m->offset);
    KMQ__INC(c, dispatched, 1);
    return KMQ_OK;
  }
  /* Not taken: void the handle. If the handler acked anyway, that ack is
   * in the acked stack and is applied like any other. */
  uint64_t expect = atomic_load_explicit(&s->word, memory_order_relaxed);
  int voided = 0;
  /* PENDING with any flag (the handler may have deferred it). */
  while ((expect & KMQ__SLOT_STATE) == KMQ__SLOT_PENDING && !voided)
    voided = atomic_compare_exchange_weak_explicit(
        &s->word, &expect, (uint64_t)gen << 32 | KMQ__SLOT_FAIL,
        memory_order_acq_rel, memory_order_relaxed);
  if (!voided) {
    kmq_gate_track(p->gate, m->offset);
    KMQ__INC(c, dispatched, 1);
    return KMQ_OK;
  }
  p->in_flight--;
  KMQ__INC(c, in_flight, -1);
  s->m = NULL;
  kmq__slot_free(c, idx);
  if (err == KMQ_ERR_BACKPRESSURE) {
    KMQ__INC(c, backpressured, 1);
    return KMQ_ERR_BACKPRESSURE;
  }
  kmq_gate_track(p->gate, m->offset);
  KMQ__INC(c, unfinished, 1);
  rd_kafka_message_destroy(m);
  return KMQ_OK;
}

static void kmq__hold(kmq_consumer_t *c, kmq__part_t *p,
                      rd_kafka_message_t *m) {
  if (p->held_cnt == p->held_size) {
    int ns = p->held_size ? p->held_size * 2 : 4;
    rd_kafka_message_t **n = realloc(p->held, (size_t)ns * sizeof(*n));
    if (!n) {
      /* Cannot keep it: drop it uncommitted; it is redelivered after a
       * restart or rebalance since the gate never passes it. */
      kmq__log("ERROR", "consumer", "out of memory holding %s [%d] @%lld",
               p->topic, p->partition, (long long)m->offset);
      rd_kafka_message_destroy(m);
      return;
    }
    p->held = n;
    p->held_size = ns;
  }
  p->held[p->held_cnt++] = m;
  if (p->held_cnt > KMQ__HOLD_BEFORE_PAUSE)
    kmq__set_paused(c, p, 1);
}

/* Re-offers held messages in order; resumes a partition once it has none.
 * @locality poll thread */
static void kmq__retry_held(kmq_consumer_t *c) {
  for (kmq__part_t *p = c->parts; p; p = p->next) {
    if (!p->held_cnt || p->revoking)
      continue;
    int i = 0;
    while (i < p->held_cnt && kmq__offer(c, p, p->held[i]) == KMQ_OK)
      i++;
    if (i) {
      memmove(p->held, p->held + i,
              (size_t)(p->held_cnt - i) * sizeof(*p->held));
      p->held_cnt -= i;
    }
    if (!p->held_cnt)
      kmq__set_paused(c, p, 0);
  }
}

static void kmq__dispatch(kmq_consumer_t *c, rd_kafka_message_t *m) {
  const char *topic = rd_kafka_topic_name(m->rkt);
  kmq__part_t *p = kmq__part_find(c, topic, m->partition);
  if (!p && !(p = kmq__part_add(c, topic, m->partition))) {
    rd_kafka_message_destroy(m);
    return;
  }
  if (p->gate && m->offset < kmq_gate_high(p->gate) && !p->held_cnt) {
    /* Already handed out in this assignment: a re-fetch (librdkafka < 2.4
     * can rewind the fetch position on resume, #4636). Never twice. */
    KMQ__INC(c, refetched, 1);
    rd_kafka_message_destroy(m);
    return;
  }
  if (p->held_cnt) { /* keep offset order behind what is already held */
    kmq__hold(c, p, m);
    return;
  }
  if (kmq__offer(c, p, m) == KMQ_ERR_BACKPRESSURE)
    kmq__hold(c, p, m);
}

/* Flags every message of p still in flight as revoked: those not started
 * yet will not start (kmq_ack_revoked), so that only running ones keep the
 * partition. No capacity: one flag per ack slot. @locality poll thread */
static void kmq__revoke_slots(kmq_consumer_t *c, kmq__part_t *p) {
  p->revoking = 1;
  for (uint32_t i = 0; i < c->nslots; i++)
    if (c->slots[i].part == p)
      /* Release: see kmq_ack_revoked. On a slot already acked the flag is
       * harmless (the state bits are read masked). */
      atomic_fetch_or_explicit(&c->slots[i].word, KMQ__SLOT_REVOKED,
                               memory_order_release);
}

/* Drops a partition: its gate, held messages, and the link from any ack
 * slot still out (a late ack is then ignored). A partition we paused is
 * resumed first: librdkafka keeps an application pause across unassign and
 * assign, so a partition given back to this member later would never be
 * fetched again. @locality poll thread */
static void kmq__part_drop(kmq_consumer_t *c, kmq__part_t *p, int resume) {
  int64_t abandoned = 0;
  for (uint32_t i = 0; i < c->nslots; i++)
    if (c->slots[i].part == p) {
      /* A queued one will not start (REVOKED is set); a running one is
       * abandoned: its ack will be ignored. */
      abandoned += kmq__slot_running(&c->slots[i]);
      c->slots[i].part = NULL;
    }
  if (abandoned)
    KMQ__INC(c, abandoned, abandoned);
  for (int i = 0; i < p->held_cnt; i++)
    rd_kafka_message_destroy(p->held[i]);
  if (p->paused && resume)
    kmq__set_paused(c, p, 0);
  if (p->paused)
    KMQ__INC(c, paused, -1);
  kmq__part_t **pp = &c->parts;
  while (*pp != p)
    pp = &(*pp)->next;
  *pp = p->next;
  kmq_gate_destroy(p->gate);
  free(p->held);
  free(p->topic);
  free(p);
}

/* Gates start at the committed offset. When the group has none (or the
 * lookup fails) the gate starts at the first offset that arrives, which is
 * the same point since fetching starts there. The low watermark is not
 * queried: rd_kafka_query_watermark_offsets() ignores its timeout and
 * blocks until the partition's leader is back in librdkafka < 2.3
 * (#2588, fixed by #4460), which would stall this poll thread. */
static void kmq__on_assign(kmq_consumer_t *c,
                           rd_kafka_topic_partition_list_t *parts) {
  rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_copy(parts);
  rd_kafka_resp_err_t err =
      rd_kafka_committed(c->rk, q, (int)c->commit_timeout_ms);
  for (int i = 0; i < q->cnt; i++) {
    rd_kafka_topic_partition_t *e = &q->elems[i];
    kmq__part_t *p = kmq__part_find(c, e->topic, e->partition);
    if (!p && !(p = kmq__part_add(c, e->topic, e->partition)))
      continue;
    int64_t start = -1;
    if (!err && !e->err && e->offset >= 0) {
      start = e->offset;
      p->committed = p->stored = e->offset;
    }
    if (start >= 0 && !p->gate)
      kmq__part_gate(c, p, start);
  }
  rd_kafka_topic_partition_list_destroy(q);
}

/* Messages of revoking partitions that may be running (deferred ones that
 * have not begun never will). @locality poll thread */
static int64_t kmq__revoking_busy(kmq_consumer_t *c) {
  int any = 0;
  for (kmq__part_t *p = c->parts; p && !any; p = p->next)
    any = p->revoking && p->in_flight > 0;
  if (!any)
    return 0;
  int64_t busy = 0;
  for (uint32_t i = 0; i < c->nslots; i++) {
    kmq__part_t *p = c->slots[i].part;
    if (p && p->revoking && kmq__slot_running(&c->slots[i]))
      busy++;
  }
  return busy;
}

/* Waits, serving acks, until no message of a revoking partition runs:
 * deferred ones that have not begun never will (kmq_ack_begin fails), and
 * are left to be acked with 0 whenever their runner gets to them. The group waits for this member
 * meanwhile (librdkafka does not count time inside the rebalance callback
 * against max.poll.interval.ms, and a cooperative revoke happens while the
 * group is stable); past kmq.revoke.timeout.ms it is logged as slow, past
 * revoke_max_ms (90% of max.poll.interval.ms, the group protocol's limit)
 * the partition is released anyway and what still runs is abandoned: its
 * outcome is ignored, its offset not committed, and the next owner may run
 * the same user meanwhile (logged as an error, counted in `abandoned`).
 * @locality poll thread, inside the rebalance callback */
static void kmq__wait_revoking(kmq_consumer_t *c, int64_t max_ms) {
  int64_t t0 = kmq__mono_ms();
  int slow = 0;
  for (;;) {
    kmq__drain(c);
    int64_t busy = kmq__revoking_busy(c);
    if (!busy)
      return;
    int64_t waited = kmq__mono_ms() - t0;
    if (!slow && waited >= c->revoke_ms) {
      slow = 1;
      KMQ__INC(c, slow_revokes, 1);
      kmq__log("WARN", "consumer", "revoke: %lld messages still in flight "
               "after %lld ms (kmq.revoke.timeout.ms); keeping the "
               "partitions until they finish, at most %lld ms",
               (long long)busy, (long long)waited,
               (long long)c->revoke_max_ms);
    }
    if (waited >= max_ms) {
      kmq__log("ERROR", "consumer", "revoke: %lld messages still running "
               "after %lld ms (%s): releasing the "
               "partitions; their outcome is ignored and they are "
               "redelivered to the next owner, which may start the same "
               "users while these still run",
               (long long)busy, (long long)waited,
               c->closed ? "closing: kmq.close.timeout.ms"
                         : "90% of max.poll.interval.ms");
      return;
    }
    /* Acks come from other threads and do not wake this one. */
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static void kmq__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts,
                              void *opaque) {
  kmq_consumer_t *c = opaque;
  KMQ__INC(c, rebalances, 1);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    kmq__on_assign(c, parts);
    KMQ__INC(c, assigned, parts->cnt);
    rd_kafka_error_t *e = NULL;
    if (c->cooperative)
      e = rd_kafka_incremental_assign(rk, parts);
    else
      rd_kafka_assign(rk, parts);
    if (e) {
      kmq__log("ERROR", "consumer", "incremental_assign: %s",
               rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
    }
    if (c->hooks.on_assign)
      c->hooks.on_assign(parts, c->hooks.opaque);
    return;
  }

  /* Revoke (or lose). Messages of these partitions that have not started
   * will not start; the partition is released only once those running have
   * finished, so that the next owner never runs a user this member is still
   * running. */
  int lost = rd_kafka_assignment_lost(rk);
  KMQ__INC(c, revoked, parts->cnt);
  if (lost)
    KMQ__INC(c, lost, parts->cnt);
  for (int i = 0; i < parts->cnt; i++) {
    kmq__part_t *p = kmq__part_find(c, parts->elems[i].topic,
                                    parts->elems[i].partition);
    if (p)
      kmq__revoke_slots(c, p);
  }
  if (c->hooks.on_revoke)
    c->hooks.on_revoke(parts, lost, c->hooks.opaque);
  /* Lost partitions are waited for too: librdkafka 2.0.2 declares an
   * assignment lost when a commit or heartbeat fails with
   * ILLEGAL_GENERATION during a rebalance (#4059) while the member is still
   * in the group, and the group cannot move the partitions before this
   * member rejoins, after this callback. (After a real session timeout the
   * new owner may already run them; waiting then costs only time.) While
   * closing, the bound is what is left of close's. */
  int64_t max_ms = c->revoke_max_ms;
  if (c->closed) {
    max_ms = c->close_deadline - kmq__mono_ms();
    if (max_ms < 0)
      max_ms = 0;
  }
  kmq__wait_revoking(c, max_ms);
  if (!lost)
    /* Store and commit before unassigning: librdkafka refuses to store for
     * an unassigned partition (ERR__STATE). A lost member's commit would
     * be refused: the new owner starts from the last commit. */
    kmq__committer_commit_sync(&c->cm, c->parts, 1);
  for (int i = 0; i < parts->cnt; i++) {
    kmq__part_t *p = kmq__part_find(c, parts->elems[i].topic,
                                    parts->elems[i].partition);
    if (p)
      kmq__part_drop(c, p, 1);
  }
  if (c->cooperative) {
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
    if (e) {
      kmq__log("ERROR", "consumer", "incremental_unassign: %s",
               rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
    }
  } else {
    rd_kafka_assign(rk, NULL);
  }
}

static void kmq__commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *offsets,
                           void *opaque) {
  (void)rk;
  kmq_consumer_t *c = opaque;
  kmq__committer_on_commit(&c->cm, c->parts, err, offsets);
}

static void kmq__error_cb(rd_kafka_t *rk, int err, const char *reason,
                          void *opaque) {
  (void)rk;
  kmq_consumer_t *c = opaque;
  KMQ__INC(c, consume_errors, 1);
  kmq__log("WARN", "consumer", "%s: %s",
           rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

kmq_consumer_t *kmq_consumer_new(const kmq_conf_t *conf,
                                 const kmq_consumer_hooks_t *hooks,
                                 char *errstr, size_t errstr_size) {
  kmq_consumer_t *c = calloc(1, sizeof(*c));
  if (!c) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  if (hooks)
    c->hooks = *hooks;
  c->window = (size_t)kmq_conf_get_int(conf, "kmq.gate.window");
  c->revoke_ms = kmq_conf_get_int(conf, "kmq.revoke.timeout.ms");
  c->close_ms = kmq_conf_get_int(conf, "kmq.close.timeout.ms");
  c->commit_timeout_ms = kmq_conf_get_int(conf, "kmq.commit.timeout.ms");
  c->poll_batch = (int)kmq_conf_get_int(conf, "kmq.poll.batch");
  c->nslots = (uint32_t)kmq_conf_get_int(conf, "kmq.max.inflight");

  c->slots = calloc(c->nslots, sizeof(*c->slots));
  c->free_stack = calloc(c->nslots, sizeof(*c->free_stack));
  c->acked_next = calloc(c->nslots, sizeof(*c->acked_next));
  if (!c->slots || !c->free_stack || !c->acked_next) {
    snprintf(errstr, errstr_size, "out of memory for %u ack slots", c->nslots);
    goto fail_slots;
  }
  kmq__mpsc_init(&c->acked, c->acked_next);
  for (uint32_t i = 0; i < c->nslots; i++)
    c->free_stack[c->free_top++] = c->nslots - 1 - i;

  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_CONSUMER, errstr, errstr_size);
  if (!rc)
    goto fail_slots;
  char v[64];
  size_t vs = sizeof(v);
  if (rd_kafka_conf_get(rc, "group.id", v, &vs) != RD_KAFKA_CONF_OK || !*v) {
    snprintf(errstr, errstr_size, "group.id is required");
    rd_kafka_conf_destroy(rc);
    goto fail_slots;
  }
  vs = sizeof(v);
  rd_kafka_conf_get(rc, "partition.assignment.strategy", v, &vs);
  c->cooperative = strstr(v, "cooperative") != NULL;
  vs = sizeof(v);
  c->revoke_max_ms = 270000; /* 90% of librdkafka's default 300000 */
  if (rd_kafka_conf_get(rc, "max.poll.interval.ms", v, &vs) ==
      RD_KAFKA_CONF_OK)
    c->revoke_max_ms = strtoll(v, NULL, 10) / 10 * 9;
  rd_kafka_conf_set_opaque(rc, c);
  rd_kafka_conf_set_rebalance_cb(rc, kmq__rebalance_cb);
  rd_kafka_conf_set_offset_commit_cb(rc, kmq__commit_cb);
  rd_kafka_conf_set_error_cb(rc, kmq__error_cb);
  c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, errstr_size);
  if (!c->rk) {
    rd_kafka_conf_destroy(rc);
    goto fail_slots;
  }
  rd_kafka_poll_set_consumer(c->rk);
  kmq__committer_init(&c->cm, c->rk,
                      kmq_conf_get_int(conf, "kmq.commit.interval.ms"),
                      kmq_conf_get_int(conf, "kmq.commit.batch"),
                      c->commit_timeout_ms);
  return c;

fail_slots:
  free(c->acked_next);
  free(c->free_stack);
  free(c->slots);
  free(c);
  return NULL;
}

kmq_err_t kmq_consumer_subscribe(kmq_consumer_t *c, const char *const *topics,
                                 int n) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
  for (int i = 0; i < n; i++)
    rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (err) {
    kmq__log("ERROR", "consumer", "subscribe: %s", rd_kafka_err2str(err));
    return KMQ_ERR_KAFKA;
  }
  c->subscribed = 1;
  return KMQ_OK;
}

static int kmq__poll(kmq_consumer_t *c, int timeout_ms) {
  if (c->closed)
    return KMQ_ERR_STATE;
  kmq__drain(c);
  kmq__retry_held(c);
  int64_t before = atomic_load_explicit(&c->st.dispatched,
                                        memory_order_relaxed);
  /* Messages held for capacity (their partitions paused, or about to be)
   * are released by acks, which do not wake rd_kafka_consumer_poll: wait
   * at most 1 ms then, not the caller's timeout (a paused consumer has
   * nothing to fetch and would sleep it out while the workers sit idle). */
  int wait_ms = timeout_ms;
  if (wait_ms != 0) {
    for (kmq__part_t *p = c->parts; p; p = p->next)
      if (p->held_cnt && !p->revoking) {
        wait_ms = 1;
        break;
      }
  }
  for (int n = 0; n < c->poll_batch; n++) {
    /* Only the first poll waits: the rest take what is already fetched. */
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, n ? 0 : wait_ms);
    if (!m)
      break;
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        KMQ__INC(c, consume_errors, 1);
        kmq__log("WARN", "consumer", "consume: %s",
                 rd_kafka_message_errstr(m));
      }
      rd_kafka_message_destroy(m);
      continue;
    }
    KMQ__INC(c, consumed, 1);
    kmq__dispatch(c, m);
    /* Acks of fast processors free slots within the same batch. */
    if ((n & 63) == 63)
      kmq__drain(c);
  }
  kmq__drain(c);
  kmq__committer_maybe_commit(&c->cm, c->parts, kmq__mono_ms());
  return (int)(atomic_load_explicit(&c->st.dispatched, memory_order_relaxed) -
               before);
}

int kmq_consumer_poll_and_dispatch(kmq_consumer_t *c, kmq_handler_cb *handler,
                                   void *opaque, int timeout_ms) {
  if (!c || !handler)
    return KMQ_ERR_INVALID_ARG;
  c->h = handler;
  c->ah = NULL;
  c->hopaque = opaque;
  return kmq__poll(c, timeout_ms);
}

int kmq_consumer_poll_and_dispatch_with_ack(kmq_consumer_t *c,
                                            kmq_ack_handler_cb *handler,
                                            void *opaque, int timeout_ms) {
  if (!c || !handler)
    return KMQ_ERR_INVALID_ARG;
  c->h = NULL;
  c->ah = handler;
  c->hopaque = opaque;
  return kmq__poll(c, timeout_ms);
}

kmq_err_t kmq_consumer_commit_sync(kmq_consumer_t *c) {
  kmq__drain(c);
  return kmq__committer_commit_sync(&c->cm, c->parts, 0);
}

kmq_err_t kmq_consumer_close(kmq_consumer_t *c, int timeout_ms) {
  if (c->closed)
    return KMQ_OK;
  c->closed = 1;
  kmq_err_t ret = KMQ_OK;
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  c->close_deadline = deadline;
  /* librdkafka < 2.3 aborts in rd_kafka_sticky_assignor_state_destroy() when
   * a cooperative member that has joined the group is closed before its
   * first assignment (#4312, fixed by #4381): let that assignment arrive
   * first, within the same deadline. No partitions yet, so nothing to
   * dispatch. */
  while (c->cooperative && c->subscribed &&
         atomic_load_explicit(&c->st.rebalances, memory_order_relaxed) == 0 &&
         kmq__mono_ms() < deadline) {
    char *id = rd_kafka_memberid(c->rk);
    int joined = id && *id;
    if (id)
      rd_kafka_mem_free(c->rk, id);
    if (!joined)
      break; /* not in the group: no assignor state to destroy */
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 10);
    if (m)
      rd_kafka_message_destroy(m);
  }
  /* Messages not started yet will not start (they are redelivered to the
   * next owner); the group is left only once those running have finished,
   * or at the deadline. */
  for (kmq__part_t *p = c->parts; p; p = p->next)
    kmq__revoke_slots(c, p);
  for (;;) {
    kmq__drain(c);
    int64_t busy = kmq__revoking_busy(c);
    if (!busy)
      break;
    if (kmq__mono_ms() >= deadline) {
      kmq__log("ERROR", "consumer", "close: %lld messages still running "
               "after %d ms: leaving the group anyway; their outcome is "
               "ignored and they are redelivered to the next owner, which "
               "may start the same users while these still run",
               (long long)busy, timeout_ms);
      ret = KMQ_ERR_TIMED_OUT;
      break;
    }
    /* Keep serving the group (heartbeats are librdkafka's, but rebalance
     * callbacks need this thread) while acks trickle in. */
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 1);
    if (m) {
      /* Not dispatched: closing. Uncommitted, so redelivered later. */
      if (!m->err) {
        kmq__part_t *p = kmq__part_find(c, rd_kafka_topic_name(m->rkt),
                                        m->partition);
        if (p)
          kmq__hold(c, p, m);
        else
          rd_kafka_message_destroy(m);
      } else {
        rd_kafka_message_destroy(m);
      }
    }
  }
  kmq__committer_commit_sync(&c->cm, c->parts, 0);
  /* Serves the final revoke through the rebalance callback (#4528: keep
   * serving it during close). */
  rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
  if (err) {
    kmq__log("WARN", "consumer", "close: %s", rd_kafka_err2str(err));
    if (!ret)
      ret = KMQ_ERR_KAFKA;
  }
  return ret;
}

void kmq_consumer_destroy(kmq_consumer_t *c) {
  if (!c)
    return;
  kmq_consumer_close(c, (int)c->close_ms);
  kmq__drain(c);
  while (c->parts)
    kmq__part_drop(c, c->parts, 0);
  /* Acks that never came: their messages are still ours to free. */
  for (uint32_t i = 0; i < c->nslots; i++)
    if (c->slots[i].m)
      rd_kafka_message_destroy(c->slots[i].m);
  rd_kafka_destroy(c->rk);
  free(c->acked_next);
  free(c->free_stack);
  free(c->slots);
  free(c);
}

void kmq_consumer_stats(const kmq_consumer_t *c, kmq_consumer_stats_t *out) {
#define KMQ__LD(f) atomic_load_explicit(&c->st.f, memory_order_relaxed)
  out->consumed = KMQ__LD(consumed);
  out->dispatched = KMQ__LD(dispatched);
  out->finished = KMQ__LD(finished);
  out->unfinished = KMQ__LD(unfinished);
  out->backpressured = KMQ__LD(backpressured);
  out->assigned = KMQ__LD(assigned);
  out->revoked = KMQ__LD(revoked);
  out->lost = KMQ__LD(lost);
  out->rebalances = KMQ__LD(rebalances);
  out->in_flight = KMQ__LD(in_flight);
  out->paused = KMQ__LD(paused);
  out->consume_errors = KMQ__LD(consume_errors);
  out->refetched = KMQ__LD(refetched);
  out->slow_revokes = KMQ__LD(slow_revokes);
  out->abandoned = KMQ__LD(abandoned);
#undef KMQ__LD
#define KMQ__LD(f) atomic_load_explicit(&c->cm.f, memory_order_relaxed)
  out->commits = KMQ__LD(commits);
  out->commit_errors = KMQ__LD(commit_errors);
  out->offsets_committed = KMQ__LD(offsets_committed);
#undef KMQ__LD
}

void kmq_consumer_partitions(kmq_consumer_t *c,
                             void (*cb)(const kmq_partition_info_t *, void *),
                             void *opaque) {
  for (kmq__part_t *p = c->parts; p; p = p->next) {
    kmq_partition_info_t i = {
        p->topic,
        p->partition,
        p->gate ? kmq_gate_committable(p->gate) : -1,
        p->committed,
        p->gate ? kmq_gate_backlog(p->gate) : 0,
        p->gate ? kmq_gate_in_flight(p->gate) : 0,
        p->paused};
    cb(&i, opaque);
  }
}

rd_kafka_t *kmq_consumer_rk(kmq_consumer_t *c) { return c->rk; }
