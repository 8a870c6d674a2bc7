/* The metrics snapshot: sampled on the poll thread, copied by readers
 * (runtime/metrics_int.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/consumer.h"
#include "runtime/metrics_int.h"

void kmq__snap_init(kmq__snap_t *s) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->lock, NULL);
}

void kmq__snap_free(kmq__snap_t *s) {
  free(s->cur);
  free(s->prev);
  free(s->pub);
  pthread_mutex_destroy(&s->lock);
}

/* Room for one more partition in cur (and prev: they swap). Grows at
 * sampling time only, with the assignment. */
static int kmq__snap_room(kmq__snap_t *s) {
  if (s->ncur < s->cap)
    return 0;
  size_t cap = s->cap ? s->cap * 2 : 16;
  kmq__spart_t *c = realloc(s->cur, cap * sizeof(*c));
  if (!c)
    return -1;
  s->cur = c;
  kmq__spart_t *p = realloc(s->prev, cap * sizeof(*p));
  if (!p)
    return -1;
  s->prev = p;
  s->cap = cap;
  return 0;
}

static void kmq__copy_user(char *dst, const void *key, size_t len) {
  size_t n = len < KMQ_USER_MAX - 1 ? len : KMQ_USER_MAX - 1;
  if (key)
    memcpy(dst, key, n);
  else
    n = 0;
  dst[n] = '\0';
}

typedef struct {
  kmq__snap_t *s;
  rd_kafka_t *rk;
} kmq__part_ctx_t;

static void kmq__on_part(const kmq_partition_info_t *pi, void *opaque) {
  kmq__part_ctx_t *ctx = opaque;
  kmq__snap_t *s = ctx->s;
  if (kmq__snap_room(s))
    return; /* out of memory: this partition is left out of the sample */
  kmq__spart_t *e = &s->cur[s->ncur++];
  memset(e, 0, sizeof(*e));
  kmq_runtime_partition_t *p = &e->p;
  snprintf(p->topic, sizeof(p->topic), "%s", pi->topic);
  p->partition = pi->partition;
  p->committed = pi->committed;
  p->committable = pi->committable;
  p->backlog = pi->backlog;
  p->in_flight = pi->in_flight;
  p->paused = pi->paused;
  int64_t lo = -1, hi = -1;
  /* The cached watermark from the last fetch response: no broker round
   * trip on this thread. */
  if (rd_kafka_get_watermark_offsets(ctx->rk, pi->topic, pi->partition, &lo,
                                     &hi) ||
      hi < 0)
    hi = -1;
  p->high_watermark = hi;
  p->lag = hi >= 0 && p->committed >= 0 ? hi - p->committed : -1;
  p->blocking_offset = -1;
  if (pi->committable < 0 || pi->committable >= pi->high)
    return;
  /* The record at the committable offset was handed out and has not
   * finished: everything behind it waits for it. Until a job says more
   * (kmq__on_job) it is queued. */
  p->blocking_offset = pi->committable;
  p->state = KMQ_STALL_QUEUED;
  e->since_ms = s->now_ms;
  for (size_t i = 0; i < s->nprev; i++) {
    const kmq__spart_t *o = &s->prev[i];
    if (o->p.partition == p->partition &&
        o->p.blocking_offset == p->blocking_offset &&
        !strcmp(o->p.topic, p->topic)) {
      e->since_ms = o->since_ms;
      break;
    }
  }
  p->blocked_seconds = (double)(s->now_ms - e->since_ms) / 1000.0;
}

static void kmq__on_job(const rd_kafka_message_t *m, int diag, void *opaque) {
  kmq__snap_t *s = opaque;
  for (size_t i = 0; i < s->ncur; i++) {
    kmq_runtime_partition_t *p = &s->cur[i].p;
    if (p->blocking_offset != m->offset || p->partition != m->partition ||
        strcmp(p->topic, rd_kafka_topic_name(m->rkt)))
      continue;
    kmq__copy_user(p->user, m->key, m->key_len);
    kmq_stall_state_t st = KMQ__DIAG_STATE(diag);
    p->state = st == KMQ_STALL_NONE ? KMQ_STALL_QUEUED : st;
    p->attempts = KMQ__DIAG_ATTEMPTS(diag);
    return;
  }
}

void kmq__snap_sample(kmq__snap_t *s, kmq_runtime_t *rt, kmq_consumer_t *c,
                      kmq_sched_t *sched, int64_t now_ms) {
  kmq__spart_t *t = s->prev;
  s->prev = s->cur;
  s->nprev = s->ncur;
  s->cur = t;
  s->ncur = 0;
  s->now_ms = now_ms;
  kmq__part_ctx_t ctx = {s, kmq_consumer_rk(c)};
  kmq_consumer_partitions(c, kmq__on_part, &ctx);
  int blocked = 0;
  for (size_t i = 0; i < s->ncur && !blocked; i++)
    blocked = s->cur[i].p.blocking_offset >= 0;
  /* One walk over the jobs in flight finds every blocking record. */
  if (blocked)
    kmq__runtime_each_job(rt, kmq__on_job, s);
  size_t ntop = kmq_sched_top_mailboxes(sched, s->top, KMQ_TOP_MAILBOXES);

  pthread_mutex_lock(&s->lock);
  if (s->pubcap < s->ncur) {
    kmq_runtime_partition_t *n = realloc(s->pub, s->cap * sizeof(*n));
    if (n) {
      s->pub = n;
      s->pubcap = s->cap;
    }
  }
  s->npub = s->ncur < s->pubcap ? s->ncur : s->pubcap;
  for (size_t i = 0; i < s->npub; i++)
    s->pub[i] = s->cur[i].p;
  for (size_t i = 0; i < ntop; i++) {
    kmq__copy_user(s->pubtop[i].user, s->top[i].key, s->top[i].key_len);
    s->pubtop[i].depth = (int64_t)s->top[i].depth;
  }
  s->npubtop = ntop;
  pthread_mutex_unlock(&s->lock);
}

size_t kmq__snap_partitions(kmq__snap_t *s, kmq_runtime_partition_t *out,
                            size_t max) {
  pthread_mutex_lock(&s->lock);
  size_t n = s->npub;
  for (size_t i = 0; i < n && i < max; i++)
    out[i] = s->pub[i];
  pthread_mutex_unlock(&s->lock);
  return n;
}

size_t kmq__snap_top(kmq__snap_t *s, kmq_runtime_mailbox_t *out, size_t max) {
  pthread_mutex_lock(&s->lock);
  size_t n = s->npubtop < max ? s->npubtop : max;
  for (size_t i = 0; i < n; i++)
    out[i] = s->pubtop[i];
  pthread_mutex_unlock(&s->lock);
  return n;
}
