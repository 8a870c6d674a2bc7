/* Committer: gate prefix -> offsets_store -> commit. */
#include "lib/committer.h"

#include <string.h>

#include "lib/util.h"

void kmq__committer_init(kmq__committer_t *cm, rd_kafka_t *rk,
                         int64_t interval_ms, int64_t batch,
                         int64_t timeout_ms) {
  memset(cm, 0, sizeof(*cm));
  cm->rk = rk;
  cm->interval_ms = interval_ms;
  cm->batch = batch;
  cm->timeout_ms = timeout_ms;
  cm->last_ms = kmq__mono_ms();
}

void kmq__committer_note(kmq__committer_t *cm, kmq__part_t *p, int64_t n) {
  if (n <= 0)
    return;
  p->dirty = 1;
  cm->pending += n;
}

/* Builds the list of partitions whose committable offset moved past what was
 * stored, and stores it. Returns the list (caller destroys) or NULL when
 * nothing changed. */
static rd_kafka_topic_partition_list_t *
kmq__store(kmq__committer_t *cm, kmq__part_t *parts, int only_revoking,
           int all) {
  rd_kafka_topic_partition_list_t *l = NULL;
  for (kmq__part_t *p = parts; p; p = p->next) {
    if (!p->gate || (only_revoking && !p->revoking))
      continue;
    int64_t c = kmq_gate_committable(p->gate);
    if (!all && c <= p->stored)
      continue;
    if (c <= p->committed && c <= p->stored)
      continue;
    if (!l)
      l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = c;
    p->dirty = 0;
  }
  if (!l)
    return NULL;
  rd_kafka_resp_err_t err = rd_kafka_offsets_store(cm->rk, l);
  for (int i = 0; i < l->cnt; i++) {
    rd_kafka_topic_partition_t *e = &l->elems[i];
    if (e->err) {
      /* ERR__STATE: the partition is no longer assigned (librdkafka >= 1.9
       * refuses to store for it). The new owner restarts from the last
       * committed offset: at-least-once holds. */
      kmq__log("WARN", "committer", "store %s [%d] @%lld: %s", e->topic,
               e->partition, (long long)e->offset, rd_kafka_err2str(e->err));
      continue;
    }
    for (kmq__part_t *p = parts; p; p = p->next)
      if (p->partition == e->partition && !strcmp(p->topic, e->topic))
        p->stored = e->offset;
  }
  (void)err; /* per-partition errors above say everything */
  return l;
}

void kmq__committer_maybe_commit(kmq__committer_t *cm, kmq__part_t *parts,
                                 int64_t now_ms) {
  if (cm->pending == 0)
    return;
  if (cm->pending < cm->batch && now_ms - cm->last_ms < cm->interval_ms)
    return;
  rd_kafka_topic_partition_list_t *l = kmq__store(cm, parts, 0, 0);
  if (l)
    rd_kafka_topic_partition_list_destroy(l);
  /* NULL: commit everything stored. Asynchronous: the result arrives in the
   * offset_commit callback on this thread. */
  rd_kafka_resp_err_t err = rd_kafka_commit(cm->rk, NULL, 1);
  kmq__cm_add(&cm->commits, 1);
  if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    kmq__cm_add(&cm->commit_errors, 1);
    kmq__log("WARN", "committer", "async commit: %s", rd_kafka_err2str(err));
  }
  cm->pending = 0;
  cm->last_ms = now_ms;
}

kmq_err_t kmq__committer_commit_sync(kmq__committer_t *cm, kmq__part_t *parts,
                                     int only_revoking) {
  rd_kafka_topic_partition_list_t *l = kmq__store(cm, parts, only_revoking, 1);
  if (!l)
    return KMQ_OK;
  kmq_err_t ret = KMQ_OK;
  /* Bounded retries: a coordinator move or a transient error must not make
   * a revoke give up the finished prefix. */
  for (int attempt = 0; attempt < 3; attempt++) {
    rd_kafka_resp_err_t err = rd_kafka_commit(cm->rk, l, 0);
    kmq__cm_add(&cm->commits, 1);
    if (!err || err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
      kmq__committer_on_commit(cm, parts, RD_KAFKA_RESP_ERR_NO_ERROR, l);
      ret = KMQ_OK;
      break;
    }
    kmq__cm_add(&cm->commit_errors, 1);
    kmq__log("WARN", "committer", "sync commit (attempt %d): %s", attempt + 1,
             rd_kafka_err2str(err));
    ret = KMQ_ERR_KAFKA;
    if (err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
        err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
        err == RD_KAFKA_RESP_ERR__STATE)
      break; /* no longer a member: the new owner starts from the last commit */
  }
  rd_kafka_topic_partition_list_destroy(l);
  cm->pending = ret == KMQ_OK ? 0 : 1; /* failed: retried by maybe_commit */
  cm->last_ms = kmq__mono_ms();
  return ret;
}

void kmq__committer_on_commit(kmq__committer_t *cm, kmq__part_t *parts,
                              rd_kafka_resp_err_t err,
                              const rd_kafka_topic_partition_list_t *offsets) {
  if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    kmq__cm_add(&cm->commit_errors, 1);
    kmq__log("WARN", "committer", "commit failed: %s (the stored position "
             "is kept and committed next time)", rd_kafka_err2str(err));
    /* "Next time" must come even if nothing else finishes: retry after
     * kmq.commit.interval.ms. */
    if (cm->pending == 0)
      cm->pending = 1;
  }
  if (!offsets)
    return;
  for (int i = 0; i < offsets->cnt; i++) {
    const rd_kafka_topic_partition_t *e = &offsets->elems[i];
    if (e->err || e->offset < 0)
      continue;
    for (kmq__part_t *p = parts; p; p = p->next)
      if (p->partition == e->partition && !strcmp(p->topic, e->topic)) {
        if (e->offset > p->committed) {
          if (p->committed >= 0)
            kmq__cm_add(&cm->offsets_committed, e->offset - p->committed);
          p->committed = e->offset;
        }
      }
  }
}
