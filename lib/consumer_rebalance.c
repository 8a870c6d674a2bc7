/* Consumer: assign, revoke and lost (consumer_int.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/consumer_int.h"
#include "lib/util.h"

/* The committed metadata of e lists offsets the previous owner finished
 * beyond the committed one (lib/committer.h): p's fresh gate takes them, and
 * kmq__offer skips those records. Bad or foreign metadata (another
 * client's) is ignored: those records are processed again, never skipped.
 * @locality poll thread */
static void kmq__restore_done(kmq_consumer_t *c, kmq__part_t *p,
                              const rd_kafka_topic_partition_t *e) {
  if (!e->metadata || !e->metadata_size)
    return;
  int64_t before = kmq_gate_committable(p->gate), n = 0;
  kmq_err_t err =
      kmq_gate_restore_done(p->gate, e->metadata, e->metadata_size, &n);
  if (err) {
    kmq__log_to(&c->log, "WARN", "consumer", "%s [%d]: commit metadata not restored "
             "(%s): records after offset %lld are processed again",
             p->topic, p->partition, kmq_err2str(err), (long long)before);
    return;
  }
  KMQ__INC(c, restored, n);
  /* A restored run at the committed offset moves the prefix: commit it. */
  kmq__committer_note(&c->cm, p, kmq_gate_committable(p->gate) - before);
}

/* Gates start at the committed offset. When the group has none (or the
 * lookup fails) the gate starts at the first offset that arrives, which is
 * the same point since fetching starts there. The low watermark is not
 * queried: rd_kafka_query_watermark_offsets() ignores its timeout and
 * blocks until the partition's leader is back in librdkafka < 2.3
 * (#2588, fixed by #4460), which would stall this poll thread. */
static void kmq__on_assign(kmq_consumer_t *c,
                           rd_kafka_topic_partition_list_t *parts) {
  rd_kafka_topic_partition_list_t *q =
      rd_kafka_topic_partition_list_copy(parts);
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
    if (start >= 0 && !p->gate && !kmq__part_gate(c, p, start))
      kmq__restore_done(c, p, e);
  }
  rd_kafka_topic_partition_list_destroy(q);
}

/* Messages of revoking partitions that may be running (deferred ones that
 * have not begun never will). @locality poll thread */
int64_t kmq__revoking_busy(kmq_consumer_t *c) {
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
 * are left to be acked with 0 whenever their runner gets to them. The
 * group waits for this member meanwhile (a cooperative revoke happens while
 * the group is stable, and the bound stays below max.poll.interval.ms, the
 * rebalance timeout); past kmq.revoke.timeout.ms it is logged as slow, past
 * revoke_max_ms (90% of max.poll.interval.ms, the group protocol's limit)
 * the partition is released anyway and what still runs is abandoned: its
 * outcome is ignored, its offset not committed, and the next owner may run
 * the same user meanwhile (logged as an error, counted in `abandoned`).
 * @locality poll thread, inside the rebalance callback */
void kmq__wait_revoking(kmq_consumer_t *c, int64_t max_ms) {
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
      kmq__log_to(&c->log, "WARN", "consumer", "revoke: %lld messages still in flight "
               "after %lld ms (kmq.revoke.timeout.ms); keeping the "
               "partitions until they finish, at most %lld ms",
               (long long)busy, (long long)waited,
               (long long)c->revoke_max_ms);
    }
    if (waited >= max_ms) {
      kmq__log_to(&c->log, "ERROR", "consumer", "revoke: %lld messages still running "
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

void kmq__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts,
                              void *opaque) {
  kmq_consumer_t *c = opaque;
  KMQ__INC(c, rebalances, 1);
  if (c->hooks.on_rebalance)
    c->hooks.on_rebalance(c->hooks.opaque);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    kmq__on_assign(c, parts);
    /* Before the assignment starts fetching: then librdkafka does not
     * forward them to the consumer queue. */
    for (int i = 0; i < parts->cnt; i++) {
      kmq__part_t *p = kmq__part_find(c, parts->elems[i].topic,
                                      parts->elems[i].partition);
      if (p)
        kmq__part_split(c, p);
    }
    KMQ__INC(c, assigned, parts->cnt);
    rd_kafka_error_t *e = NULL;
    if (c->cooperative)
      e = rd_kafka_incremental_assign(rk, parts);
    else
      rd_kafka_assign(rk, parts);
    /* librdkafka has handled the call (and logged the join state it left
     * for) before it returns: still waiting for an assign call means the
     * call was turned into an unassign (after a fatal error of a static
     * member, librdkafka < 2.4.0). */
    c->call_ignored = atomic_load_explicit(&c->join_call,
                                           memory_order_acquire) ==
                      KMQ__CALL_ASSIGN;
    if (e) {
      kmq__log_to(&c->log, "ERROR", "consumer", "incremental_assign: %s",
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
      kmq__part_drop(c, p);
  }
  if (c->cooperative) {
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
    if (e) {
      kmq__log_to(&c->log, "ERROR", "consumer", "incremental_unassign: %s",
               rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
    }
  } else {
    rd_kafka_assign(rk, NULL);
  }
  kmq__retire_queues(c, 1);
}
