/* Consumer: the partition table and flow control (consumer_int.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/consumer_int.h"
#include "lib/redact.h"
#include "lib/util.h"

kmq__part_t *kmq__part_find(kmq_consumer_t *c, const char *topic,
                                   int32_t partition) {
  for (kmq__part_t *p = c->parts; p; p = p->next)
    if (p->partition == partition && !strcmp(p->topic, topic))
      return p;
  return NULL;
}

kmq__part_t *kmq__part_add(kmq_consumer_t *c, const char *topic,
                                  int32_t partition) {
  kmq__part_t *p = calloc(1, sizeof(*p));
  if (!p || !(p->topic = strdup(topic))) {
    free(p);
    return NULL;
  }
  p->partition = partition;
  p->stored = p->committed = p->dropped_at = -1;
  p->next = c->parts;
  c->parts = p;
  return p;
}

int kmq__part_gate(kmq_consumer_t *c, kmq__part_t *p, int64_t start) {
  char errstr[128];
  p->gate = kmq_gate_new(start, c->window, errstr, sizeof(errstr));
  if (!p->gate) {
    kmq__log_to(&c->log, "ERROR", "consumer", "%s [%d]: %s", p->topic, p->partition,
             errstr);
    return -1;
  }
  return 0;
}

/* p's paused flag: metrics only (kmq_partition_info_t.paused, the
 * partitions-paused gauge); nothing is paused in librdkafka. */
static void kmq__set_paused(kmq_consumer_t *c, kmq__part_t *p, int pause) {
  if (p->paused == pause)
    return;
  p->paused = pause;
  KMQ__INC(c, paused, pause ? 1 : -1);
}

/* fwd: p's queue feeds the fetch queue. Not fwd (blocked: held or stuck;
 * or kmq.fetch.queue=partition): what librdkafka fetches for p stays in
 * p's own queue. Forwarding moves what p's queue holds behind what the
 * fetch queue holds, older messages of p included, so the fetch queue
 * gives p's messages in offset order (after its held ones, which
 * kmq__retry_held offers first); reading p's own queue first would not.
 * @locality poll thread */
static void kmq__part_forward(kmq_consumer_t *c, kmq__part_t *p, int fwd) {
  rd_kafka_queue_forward(p->q, fwd ? c->fq : NULL);
  p->fwd = fwd;
}

void kmq__part_split(kmq_consumer_t *c, kmq__part_t *p) {
  if (p->q)
    return;
  p->q = rd_kafka_queue_get_partition(c->rk, p->topic, p->partition);
  if (!p->q) {
    /* Not for a consumer handle: its messages then come through the
     * consumer queue and are dispatched from there (kmq__serve_events),
     * without this flow control. */
    kmq__log_to(&c->log, "ERROR", "consumer",
                "%s [%d]: no partition queue; read from the consumer queue",
                p->topic, p->partition);
    return;
  }
  /* Set by the application (us), the forwarding stays: librdkafka no
   * longer forwards the queue to the consumer queue when the partition
   * starts fetching. The io event serves while it is not forwarded (what
   * is forwarded wakes us through fq's). */
  rd_kafka_queue_io_event_enable(p->q, c->wake[1], "1", 1);
  kmq__part_forward(c, p, !c->per_part);
}

/* Offers m to the handler. KMQ_ERR_BACKPRESSURE: not taken, m still ours.
 * Otherwise m's ownership went to the handler/slot or it was destroyed.
 * @locality poll thread */
static kmq_err_t kmq__offer(kmq_consumer_t *c, kmq__part_t *p,
                            rd_kafka_message_t *m) {
  if (!p->gate && kmq__part_gate(c, p, m->offset))
    return KMQ_ERR_BACKPRESSURE;
  if (kmq_gate_is_done(p->gate, m->offset)) {
    /* Finished by the partition's previous owner (restored from the commit
     * metadata): taken, not processed again. */
    KMQ__INC(c, skipped_done, 1);
    rd_kafka_message_destroy(m);
    return KMQ_OK;
  }
  if (c->free_top == 0)
    kmq__drain(c); /* acks since the last drain free records */
  if (kmq_gate_would_overflow(p->gate, m->offset) || c->free_top == 0) {
    KMQ__INC(c, backpressured, 1);
    return KMQ_ERR_BACKPRESSURE;
  }

  uint32_t idx = c->free_stack[--c->free_top];
  kmq__slot_t *s = &c->slots[idx];
  if (c->free_top) {
    /* The next record's header and the head of its area were last written
     * by the thread that acked them: fetched now, they arrive while this
     * message is handed out instead of stalling the next one. */
    uint32_t next = c->free_stack[c->free_top - 1];
    __builtin_prefetch(&c->slots[next], 1);
    if (c->data)
      __builtin_prefetch(c->data + (size_t)next * c->data_stride, 1);
  }
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

void kmq__hold(kmq_consumer_t *c, kmq__part_t *p,
                      rd_kafka_message_t *m) {
  if (p->held_cnt == p->held_size) {
    int ns = p->held_size ? p->held_size * 2 : 4;
    rd_kafka_message_t **n = realloc(p->held, (size_t)ns * sizeof(*n));
    if (!n) {
      /* Cannot keep it: drop it, and everything after it (dropped_at), so
       * that the gate never tracks past it (tracking a later offset would
       * count it finished) and it is read again by the next owner or
       * after a restart. The partition makes no progress meanwhile. */
      kmq__log_to(&c->log, "ERROR", "consumer",
                  "out of memory holding %s [%d] @%lld: the partition stops "
                  "here (nothing from this offset on is processed or "
                  "committed) until it is reassigned or the process "
                  "restarts",
                  p->topic, p->partition, (long long)m->offset);
      if (p->dropped_at < 0)
        p->dropped_at = m->offset;
      rd_kafka_message_destroy(m);
      return;
    }
    p->held = n;
    p->held_size = ns;
  }
  p->held[p->held_cnt++] = m;
}

/* Re-offers held messages in order. @locality poll thread */
int kmq__retry_held(kmq_consumer_t *c) {
  int taken = 0;
  for (kmq__part_t *p = c->parts; p; p = p->next) {
    if (!p->held_cnt || p->revoking || p->stuck)
      continue;
    int i = 0;
    while (i < p->held_cnt && kmq__offer(c, p, p->held[i]) == KMQ_OK)
      i++;
    if (i) {
      memmove(p->held, p->held + i,
              (size_t)(p->held_cnt - i) * sizeof(*p->held));
      p->held_cnt -= i;
      taken += i;
    }
  }
  return taken;
}

void kmq__apply_stuck(kmq_consumer_t *c) {
  /* Acquire pairs with the release store of whoever set it: the flag
   * (or the ack that cleared it) is visible in the slot words below. Only
   * when something changed: a scan of every slot is cheap next to the DLQ
   * round trips that cause it, but not something to do per poll. */
  if (!atomic_exchange_explicit(&c->stuck_dirty, 0, memory_order_acquire))
    return;
  for (kmq__part_t *p = c->parts; p; p = p->next)
    p->stuck = 0;
  for (uint32_t i = 0; i < c->nslots; i++) {
    uint64_t w = atomic_load_explicit(&c->slots[i].word, memory_order_relaxed);
    if (c->slots[i].part && (w & KMQ__SLOT_STUCK) &&
        (w & KMQ__SLOT_STATE) == KMQ__SLOT_PENDING)
      c->slots[i].part->stuck++;
  }
  for (kmq__part_t *p = c->parts; p; p = p->next) {
    if (p->revoking)
      continue;
    if (p->stuck && !p->was_stuck) {
      kmq__set_paused(c, p, 1);
      if (p->q && p->fwd)
        kmq__part_forward(c, p, 0);
      kmq__log_to(&c->log, "WARN", "consumer",
                  "%s [%d] paused: a message of it cannot finish for now",
                  p->topic, p->partition);
    } else if (!p->stuck && p->was_stuck) {
      kmq__log_to(&c->log, "INFO", "consumer",
                  "%s [%d] resumed: its stuck message finished", p->topic,
                  p->partition);
    }
    p->was_stuck = p->stuck > 0;
  }
}

void kmq__dispatch(kmq_consumer_t *c, kmq__part_t *p, rd_kafka_message_t *m) {
  KMQ__INC(c, consumed, 1);
  if (m->offset < p->read_end) {
    /* Already read in this assignment: a re-fetch. Never twice. */
    KMQ__INC(c, refetched, 1);
    rd_kafka_message_destroy(m);
    return;
  }
  p->read_end = m->offset + 1;
  if (p->dropped_at >= 0) {
    /* Past a message that could not be kept (kmq__hold): not offered. */
    rd_kafka_message_destroy(m);
    return;
  }
  /* Behind what is already held, or a stuck partition's next: waits, in
   * offset order. */
  if (p->held_cnt || p->stuck || kmq__offer(c, p, m) == KMQ_ERR_BACKPRESSURE)
    kmq__hold(c, p, m);
}

void kmq__consume_error(kmq_consumer_t *c, rd_kafka_message_t *m) {
  if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    KMQ__INC(c, consume_errors, 1);
    char r[512];
    snprintf(r, sizeof(r), "%s", rd_kafka_message_errstr(m));
    kmq__rdk_conf_redact(rd_kafka_conf(c->rk), r, sizeof(r));
    kmq__log_to(&c->log, "WARN", "consumer", "consume: %s", r);
    if (c->hooks.on_error)
      c->hooks.on_error(m->err, r, c->hooks.opaque);
  }
  rd_kafka_message_destroy(m);
}

/* The fetch queue's next message, unless *read already reached room
 * (counted in *read); its key is prefetched. @locality poll thread */
static rd_kafka_message_t *kmq__read_ahead(kmq_consumer_t *c, size_t *read,
                                           size_t room) {
  if (*read >= room)
    return NULL;
  rd_kafka_message_t *m = rd_kafka_consume_queue(c->fq, 0);
  if (m) {
    (*read)++;
    if (!m->err && m->key)
      __builtin_prefetch(m->key);
  }
  return m;
}

/* Room for one read: the free records (the budget), at most a batch. */
static size_t kmq__room(const kmq_consumer_t *c, int left) {
  size_t room = c->free_top;
  if (room > KMQ__READ_BATCH)
    room = KMQ__READ_BATCH;
  if (room > (size_t)left)
    room = (size_t)left;
  return room;
}

/* The partition of a message read from the fetch queue, or NULL when it is
 * not (or no longer) ours: only forwarded queues feed it, and a dropped
 * partition's messages left there belong to the old assignment. Usually
 * the partition of the message before. @locality poll thread */
static kmq__part_t *kmq__fq_part(kmq_consumer_t *c,
                                 const rd_kafka_message_t *m) {
  kmq__part_t *p = c->last;
  if (p && p->rkt == m->rkt && p->partition == m->partition)
    return p;
  const char *topic = rd_kafka_topic_name(m->rkt);
  for (p = c->parts; p; p = p->next)
    if (p->partition == m->partition && p->q && !strcmp(p->topic, topic))
      break;
  if (p) {
    p->rkt = m->rkt;
    c->last = p;
  }
  return p;
}

/* kmq.fetch.queue=partition: reads p's own queue, at most one batch.
 * Returns the messages taken. @locality poll thread */
static int kmq__read_own(kmq_consumer_t *c, kmq__part_t *p, int left) {
  size_t room = kmq__room(c, left), k = 0;
  rd_kafka_message_t *m;
  /* One message at a time (rd_kafka_consume_queue), not the batch API:
   * librdkafka 2.0.2's rd_kafka_consume_batch_queue has known issues
   * around rebalances and pause/resume (2.0.0 release notes, fixed in
   * 2.1.0). */
  while (k < room && !p->held_cnt && !p->stuck &&
         (m = rd_kafka_consume_queue(p->q, 0))) {
    k++;
    if (m->err)
      kmq__consume_error(c, m);
    else
      kmq__dispatch(c, p, m);
  }
  if (k)
    kmq__drain(c); /* acks of fast processors free records */
  return (int)k;
}

/* kmq.fetch.queue=partition: rounds of at most one batch per readable
 * partition, each poll starting one partition further than the last, so
 * that a budget that runs out does not always favour the same ones. */
static int kmq__read_rounds(kmq_consumer_t *c) {
  uint32_t nparts = 0;
  for (kmq__part_t *p = c->parts; p; p = p->next)
    nparts++;
  if (!nparts)
    return 0;
  kmq__part_t *start = c->parts;
  for (uint32_t k = c->rr++ % nparts; k; k--)
    start = start->next;
  int taken = 0, progress = 1;
  while (progress && kmq__room(c, c->poll_batch - taken)) {
    progress = 0;
    kmq__part_t *p = start;
    for (uint32_t i = 0; i < nparts; i++, p = p->next ? p->next : c->parts) {
      if (!p->q || p->fwd || p->held_cnt || p->stuck || p->revoking)
        continue;
      int n = kmq__read_own(c, p, c->poll_batch - taken);
      progress |= n > 0;
      taken += n;
    }
  }
  return taken;
}

int kmq__read_parts(kmq_consumer_t *c) {
  int taken = 0;
  if (c->per_part) {
    taken = kmq__read_rounds(c);
  } else {
    /* Those that can take messages again feed the fetch queue again. */
    for (kmq__part_t *p = c->parts; p; p = p->next)
      if (p->q && !p->fwd && !p->held_cnt && !p->stuck && !p->revoking)
        kmq__part_forward(c, p, 1);
  }
  size_t room;
  while (!c->per_part && (room = kmq__room(c, c->poll_batch - taken)) > 0) {
    /* One ahead (never beyond room: every message read is handled in
     * this loop): a message's key, which routing reads first and the
     * fetch thread wrote last, is fetched while the one before it is
     * dispatched. */
    size_t k = 0;
    rd_kafka_message_t *m, *next = kmq__read_ahead(c, &k, room);
    while ((m = next) != NULL) {
      next = kmq__read_ahead(c, &k, room);
      if (m->err) {
        kmq__consume_error(c, m);
        continue;
      }
      kmq__part_t *p = kmq__fq_part(c, m);
      if (!p || p->revoking) {
        rd_kafka_message_destroy(m);
        continue;
      }
      kmq__dispatch(c, p, m);
      if (p->held_cnt && p->fwd)
        kmq__part_forward(c, p, 0);
    }
    taken += (int)k;
    if (k < room)
      break;
    /* Acks of fast processors free records within the same poll. */
    kmq__drain(c);
  }
  /* What waits for the budget or for held messages to be taken is freed
   * by acks, which do not wake the poll thread (kmq__poll then sleeps at
   * most 1 ms). */
  int budget = c->free_top > 0;
  int fetched = !budget && rd_kafka_queue_length(c->fq) > 0;
  c->starved = !budget;
  for (kmq__part_t *p = c->parts; p; p = p->next) {
    if (p->revoking)
      continue;
    int waiting = p->held_cnt > 0;
    if (waiting && !p->stuck)
      c->starved = 1;
    if (!waiting && !budget && p->q && !p->stuck)
      waiting = p->fwd ? fetched : rd_kafka_queue_length(p->q) > 0;
    kmq__set_paused(c, p, waiting || p->stuck);
  }
  return taken;
}

/* Drops a partition: its gate, held messages and the link from any record
 * still out (a late ack is then ignored). Its queue is retired: emptied and
 * released by kmq__retire_queues once the partition is unassigned (until
 * then librdkafka may still add to it). @locality poll thread */
void kmq__part_drop(kmq_consumer_t *c, kmq__part_t *p) {
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
  kmq__set_paused(c, p, 0);
  if (c->last == p)
    c->last = NULL;
  if (p->q) {
    /* Back to itself: emptying it must not empty the fetch queue (reads
     * and purges follow the forwarding). What the fetch queue still holds
     * of it is dropped as it is read (kmq__fq_part). */
    if (p->fwd)
      kmq__part_forward(c, p, 0);
    /* No more writes to the pipe from it: it outlives this handle. */
    rd_kafka_queue_io_event_enable(p->q, -1, NULL, 0);
    if (c->nretired == c->retired_size) {
      int ns = c->retired_size ? c->retired_size * 2 : 8;
      rd_kafka_queue_t **n = realloc(c->retired, (size_t)ns * sizeof(*n));
      if (n) {
        c->retired = n;
        c->retired_size = ns;
      }
    }
    if (c->nretired < c->retired_size)
      c->retired[c->nretired++] = p->q;
    else /* out of memory: released unemptied (freed at reassign/destroy) */
      rd_kafka_queue_destroy(p->q);
  }
  kmq__part_t **pp = &c->parts;
  while (*pp != p)
    pp = &(*pp)->next;
  *pp = p->next;
  kmq_gate_destroy(p->gate);
  free(p->held);
  free(p->topic);
  free(p);
}

void kmq__retire_queues(kmq_consumer_t *c, int purge) {
  for (int i = 0; i < c->nretired; i++) {
    /* Destroyed unread: what is left belongs to the old assignment. At
     * most what is there now: a partition that is still fetched (no
     * unassign, as after a fatal error) must not keep this loop going. A
     * fetch response already under way when the partition was unassigned
     * can still land afterwards; librdkafka discards it when the partition
     * is fetched again (a newer fetch version) or the handle is destroyed. */
    rd_kafka_message_t *m;
    for (size_t left = purge ? rd_kafka_queue_length(c->retired[i]) : 0;
         left > 0 && (m = rd_kafka_consume_queue(c->retired[i], 0)); left--)
      rd_kafka_message_destroy(m);
    rd_kafka_queue_destroy(c->retired[i]);
  }
  c->nretired = 0;
}
