/* Committer: gate prefix -> offsets_store -> commit. */
#include "lib/committer.h"

#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

int kmq__committer_init(kmq__committer_t *cm, rd_kafka_t *rk,
                        int64_t interval_ms, int64_t batch, int64_t timeout_ms,
                        size_t meta_max) {
  memset(cm, 0, sizeof(*cm));
  cm->rk = rk;
  cm->interval_ms = interval_ms;
  cm->batch = batch;
  cm->timeout_ms = timeout_ms;
  cm->last_ms = kmq__mono_ms();
  if (meta_max) {
    cm->meta_max = meta_max < KMQ_GATE_META_MIN ? KMQ_GATE_META_MIN : meta_max;
    if (!(cm->meta_buf = malloc(cm->meta_max + 1)))
      return -1;
  }
  return 0;
}

void kmq__committer_free(kmq__committer_t *cm) {
  free(cm->meta_buf);
  cm->meta_buf = NULL;
}

void kmq__committer_note(kmq__committer_t *cm, kmq__part_t *p, int64_t n) {
  if (n <= 0)
    return;
  p->dirty = 1;
  cm->pending += n;
}

/* The list to commit: each selected partition's committable offset with its
 * finished offsets beyond as metadata. A partition is selected when dirty
 * (or, with `all`, also when its prefix is past what was committed);
 * `only_revoking` restricts it to partitions being revoked. NULL when there
 * is nothing to commit; else the caller destroys it (librdkafka frees the
 * metadata with it). */
/* The commit of l failed (as a whole or for some entries, per `all_failed`
 * or each entry's err): its partitions are committed again next time. */
static void kmq__redirty_if(kmq__committer_t *cm, kmq__part_t *parts,
                            const rd_kafka_topic_partition_list_t *l,
                            int all_failed) {
  int any = 0;
  for (int i = 0; i < l->cnt; i++) {
    const rd_kafka_topic_partition_t *e = &l->elems[i];
    if (!all_failed && !e->err)
      continue;
    any = 1;
    for (kmq__part_t *p = parts; p; p = p->next)
      if (p->partition == e->partition && !strcmp(p->topic, e->topic))
        p->dirty = 1;
  }
  /* "Next time" must come even if nothing else finishes: retried after
   * kmq.commit.interval.ms. */
  if (any && cm->pending == 0)
    cm->pending = 1;
}

static void kmq__redirty(kmq__committer_t *cm, kmq__part_t *parts,
                         const rd_kafka_topic_partition_list_t *l) {
  kmq__redirty_if(cm, parts, l, 1);
}

static rd_kafka_topic_partition_list_t *
kmq__commit_list(kmq__committer_t *cm, kmq__part_t *parts, int only_revoking,
                 int all) {
  rd_kafka_topic_partition_list_t *l = NULL;
  for (kmq__part_t *p = parts; p; p = p->next) {
    if (!p->gate || (only_revoking && !p->revoking))
      continue;
    int64_t c = kmq_gate_committable(p->gate);
    if (!p->dirty && !(all && c > p->committed))
      continue;
    if (!l)
      l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_t *e =
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    e->offset = c;
    size_t len = 0;
    int64_t left_out = 0;
    if (cm->meta_buf &&
        kmq_gate_encode_done(p->gate, cm->meta_buf, cm->meta_max + 1, &len,
                             NULL, &left_out) == KMQ_OK &&
        (e->metadata = malloc(len + 1))) {
      memcpy(e->metadata, cm->meta_buf, len + 1);
      e->metadata_size = len;
      if (left_out)
        kmq__cm_add(&cm->meta_truncated, 1);
    }
    p->dirty = 0;
    p->stored = c;
  }
  return l;
}

void kmq__committer_maybe_commit(kmq__committer_t *cm, kmq__part_t *parts,
                                 int64_t now_ms) {
  if (cm->pending == 0)
    return;
  if (cm->pending < cm->batch && now_ms - cm->last_ms < cm->interval_ms)
    return;
  if (cm->steady &&
      !atomic_load_explicit(cm->steady, memory_order_acquire)) {
    /* Rejoining: held (still pending) until the member is steady again,
     * then sent at once; counted once per interval, not per poll. */
    if (now_ms - cm->held_ms >= cm->interval_ms) {
      kmq__cm_add(&cm->commits_held, 1);
      cm->held_ms = now_ms;
    }
    return;
  }
  rd_kafka_topic_partition_list_t *l = kmq__commit_list(cm, parts, 0, 0);
  if (l) {
    /* Asynchronous: the result arrives in the offset_commit callback on
     * this thread (librdkafka copies the list). */
    rd_kafka_resp_err_t err = rd_kafka_commit(cm->rk, l, 1);
    kmq__cm_add(&cm->commits, 1);
    if (err) {
      kmq__cm_add(&cm->commit_errors, 1);
      kmq__log_to(cm->log, "WARN", "committer", "async commit: %s", rd_kafka_err2str(err));
      kmq__redirty(cm, parts, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
  }
  cm->pending = 0;
  cm->last_ms = now_ms;
}

kmq_err_t kmq__committer_commit_sync(kmq__committer_t *cm, kmq__part_t *parts,
                                     int only_revoking) {
  rd_kafka_topic_partition_list_t *l =
      kmq__commit_list(cm, parts, only_revoking, 1);
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
    kmq__log_to(cm->log, "WARN", "committer", "sync commit (attempt %d): %s", attempt + 1,
             rd_kafka_err2str(err));
    ret = KMQ_ERR_KAFKA;
    if (err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
        err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
        err == RD_KAFKA_RESP_ERR__STATE)
      break; /* no longer a member: the new owner starts from the last commit */
  }
  if (ret != KMQ_OK)
    kmq__redirty(cm, parts, l); /* retried by maybe_commit */
  else if (!only_revoking)
    cm->pending = 0;
  /* A revoke's commit covers only the partitions going away: the others'
   * finished work stays pending for the next periodic commit, even if
   * nothing else finishes. */
  rd_kafka_topic_partition_list_destroy(l);
  cm->last_ms = kmq__mono_ms();
  return ret;
}

void kmq__committer_on_commit(kmq__committer_t *cm, kmq__part_t *parts,
                              rd_kafka_resp_err_t err,
                              const rd_kafka_topic_partition_list_t *offsets) {
  int failed = err && err != RD_KAFKA_RESP_ERR__NO_OFFSET;
  if (failed) {
    kmq__cm_add(&cm->commit_errors, 1);
    kmq__log_to(cm->log, "WARN", "committer", "commit failed: %s (the partitions are "
             "committed again next time)", rd_kafka_err2str(err));
  }
  if (!offsets) {
    if (failed && cm->pending == 0)
      cm->pending = 1;
    return;
  }
  kmq__redirty_if(cm, parts, offsets, failed);
  for (int i = 0; i < offsets->cnt; i++) {
    const rd_kafka_topic_partition_t *e = &offsets->elems[i];
    if (failed || e->err || e->offset < 0)
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
