/*
 * kmq_proc_ctx_t for the runtime (kmq__ prefix: not public API).
 *
 * The runtime embeds one kmq_proc_ctx_t per message slot (actor, mailbox
 * entry...): no allocation per message. The helpers here are static inline
 * so that any layer can drive a ctx without linking kmq_proc; processors
 * only see the accessors of include/kmq/processor.h.
 *
 * Sequence for one attempt, on the worker thread that owns the slot:
 *   kmq__proc_ctx_init(ctx, done, opaque);            once per slot
 *   kmq__proc_ctx_begin(ctx, user, ..., attempt, max); before each call
 *   r = kmq__proc_ctx_returned(ctx, e->cb(msg, ctx, e->opaque));
 *   r is OK / RETRY / FAIL: the outcome, handle it now (done is NOT called);
 *   r is ASYNC: done(ctx, result, opaque) will be called exactly once, on
 *               whichever thread calls kmq_proc_ctx_complete(); until then
 *               msg and ctx must stay put. done must be thread-safe and
 *               short (e.g. post to the actor's mailbox); once it returns
 *               the ctx may be begun again.
 * The reason (kmq_proc_ctx_reason) is stable once the outcome is known.
 *
 * State machine (ctx->state):
 *   IDLE/DONE --begin--> RUNNING --returned(OK|RETRY|FAIL)--> DONE
 *   RUNNING --returned(ASYNC)--> PENDING --complete--> DONE (+ done cb)
 *   RUNNING --complete (before the callback returned)--> EARLY
 *   EARLY --returned(ASYNC)--> DONE, returned() yields the early result
 *   EARLY --returned(OK|RETRY|FAIL)--> DONE, the returned value wins
 *           (a processor bug: it completed and did not return ASYNC)
 */
#ifndef KMQ_PROCESSORS_PROC_CTX_H
#define KMQ_PROCESSORS_PROC_CTX_H

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "kmq/processor.h"

enum {
  KMQ__PCTX_IDLE = 0,
  KMQ__PCTX_RUNNING,
  KMQ__PCTX_PENDING,
  KMQ__PCTX_EARLY,
  KMQ__PCTX_DONE,
};

/* Called once per ASYNC outcome by kmq_proc_ctx_complete(), on its thread. */
typedef void(kmq__proc_done_cb)(kmq_proc_ctx_t *ctx, kmq_proc_result_t result,
                                void *opaque);

struct kmq_proc_ctx_s {
  /* Per attempt, written by kmq__proc_ctx_begin() (borrowed pointers: the
   * runtime keeps them alive until the outcome is known). */
  const char *user;
  size_t user_len;
  const char *topic;
  const void *value;
  size_t value_len;
  int32_t partition;
  int64_t offset;
  int attempt, max_attempts;

  /* Per slot, written by kmq__proc_ctx_init(). */
  kmq__proc_done_cb *done;
  void *done_opaque;

  atomic_int state;  /* KMQ__PCTX_* */
  atomic_int early;  /* result of a complete() seen in RUNNING */
  char reason[KMQ_PROC_REASON_MAX];
};

static inline void kmq__proc_ctx_init(kmq_proc_ctx_t *ctx,
                                      kmq__proc_done_cb *done, void *opaque) {
  memset(ctx, 0, sizeof(*ctx));
  ctx->done = done;
  ctx->done_opaque = opaque;
  atomic_init(&ctx->state, KMQ__PCTX_IDLE);
  atomic_init(&ctx->early, KMQ_PROC_OK);
}

/* Arms ctx for one call. KMQ_ERR_STATE when the previous attempt's outcome
 * is not known yet (a runtime bug: the slot is still in use).
 * @locality the worker that owns the slot */
static inline kmq_err_t kmq__proc_ctx_begin(kmq_proc_ctx_t *ctx,
                                            const char *user, size_t user_len,
                                            const char *topic,
                                            int32_t partition, int64_t offset,
                                            int attempt, int max_attempts) {
  int s = atomic_load_explicit(&ctx->state, memory_order_acquire);
  if (s != KMQ__PCTX_IDLE && s != KMQ__PCTX_DONE)
    return KMQ_ERR_STATE;
  ctx->user = user;
  ctx->user_len = user_len;
  ctx->topic = topic;
  ctx->partition = partition;
  ctx->offset = offset;
  ctx->attempt = attempt;
  ctx->max_attempts = max_attempts;
  ctx->reason[0] = '\0';
  /* Relaxed: the callback runs next on this thread; a processor that hands
   * ctx to another thread does so through its own synchronisation, which
   * orders these plain writes before that thread's reads. */
  atomic_store_explicit(&ctx->state, KMQ__PCTX_RUNNING, memory_order_relaxed);
  return KMQ_OK;
}

/* Sets the record's value for kmq_proc_ctx_value(); kept across attempts
 * (borrowed like the fields above). @locality the worker that owns the slot */
static inline void kmq__proc_ctx_set_value(kmq_proc_ctx_t *ctx,
                                           const void *value, size_t len) {
  ctx->value = value;
  ctx->value_len = len;
}

/* Feeds the callback's return value; returns the outcome (OK/RETRY/FAIL) or
 * ASYNC when it will arrive through the done callback. A value outside the
 * enum is treated as FAIL with a reason saying so.
 * @locality the worker that called the processor */
static inline kmq_proc_result_t kmq__proc_ctx_returned(kmq_proc_ctx_t *ctx,
                                                       kmq_proc_result_t r) {
  if (r == KMQ_PROC_ASYNC) {
    int expected = KMQ__PCTX_RUNNING;
    /* acq_rel: release publishes the slot to the completer (which will read
     * done/done_opaque and the reason); on failure the acquire pairs with
     * complete()'s release of EARLY so that `early` is visible. */
    if (atomic_compare_exchange_strong_explicit(
            &ctx->state, &expected, KMQ__PCTX_PENDING, memory_order_acq_rel,
            memory_order_acquire))
      return KMQ_PROC_ASYNC;
    /* Only complete() moves RUNNING elsewhere, to EARLY. */
    atomic_store_explicit(&ctx->state, KMQ__PCTX_DONE, memory_order_relaxed);
    return (kmq_proc_result_t)atomic_load_explicit(&ctx->early,
                                                   memory_order_relaxed);
  }
  if (r != KMQ_PROC_OK && r != KMQ_PROC_RETRY && r != KMQ_PROC_FAIL) {
    snprintf(ctx->reason, sizeof(ctx->reason),
             "processor returned an invalid result (%d)", (int)r);
    r = KMQ_PROC_FAIL;
  }
  /* acq_rel for the same reason as above; a complete() racing this (a
   * processor bug) then sees DONE and gets KMQ_ERR_STATE. */
  atomic_exchange_explicit(&ctx->state, KMQ__PCTX_DONE, memory_order_acq_rel);
  return r;
}

#endif /* KMQ_PROCESSORS_PROC_CTX_H */
