/* Processor-facing side of kmq_proc_ctx_t (see processors/proc_ctx.h for the
 * runtime's side and the state machine). */
#include "processors/proc_ctx.h"

#include <stdarg.h>

#include "processors/msg_internal.h"

const char *kmq_proc_result_name(kmq_proc_result_t r) {
  switch (r) {
  case KMQ_PROC_OK:
    return "OK";
  case KMQ_PROC_RETRY:
    return "RETRY";
  case KMQ_PROC_FAIL:
    return "FAIL";
  case KMQ_PROC_ASYNC:
    return "ASYNC";
  }
  return "INVALID";
}

const char *kmq_proc_ctx_user(const kmq_proc_ctx_t *ctx, size_t *lenp) {
  if (lenp)
    *lenp = ctx->user_len;
  return ctx->user;
}

const void *kmq_proc_ctx_value(const kmq_proc_ctx_t *ctx, size_t *lenp) {
  if (lenp)
    *lenp = ctx->value_len;
  return ctx->value;
}

const char *kmq_proc_ctx_topic(const kmq_proc_ctx_t *ctx) {
  return ctx->topic;
}

int32_t kmq_proc_ctx_partition(const kmq_proc_ctx_t *ctx) {
  return ctx->partition;
}

int64_t kmq_proc_ctx_offset(const kmq_proc_ctx_t *ctx) { return ctx->offset; }

int kmq_proc_ctx_attempt(const kmq_proc_ctx_t *ctx) { return ctx->attempt; }

int kmq_proc_ctx_max_attempts(const kmq_proc_ctx_t *ctx) {
  return ctx->max_attempts;
}

const char *kmq_proc_ctx_reason(const kmq_proc_ctx_t *ctx) {
  return ctx->reason;
}

void kmq_proc_ctx_set_reason(kmq_proc_ctx_t *ctx, const char *fmt, ...) {
  /* Relaxed: the caller is the processor that owns the attempt; this only
   * filters out late calls, it orders nothing. */
  int s = atomic_load_explicit(&ctx->state, memory_order_relaxed);
  if (s != KMQ__PCTX_RUNNING && s != KMQ__PCTX_PENDING)
    return;
  va_list ap;
  va_start(ap, fmt);
  kmq__verrset(ctx->reason, sizeof(ctx->reason), fmt, ap);
  va_end(ap);
}

kmq_err_t kmq_proc_ctx_complete(kmq_proc_ctx_t *ctx,
                                kmq_proc_result_t result) {
  if (!ctx || (result != KMQ_PROC_OK && result != KMQ_PROC_RETRY &&
               result != KMQ_PROC_FAIL))
    return KMQ_ERR_INVALID_ARG;
  int s = atomic_load_explicit(&ctx->state, memory_order_acquire);
  for (;;) {
    if (s == KMQ__PCTX_PENDING) {
      /* acq_rel: acquire pairs with returned()'s release of PENDING;
       * release publishes the reason written by this thread to the runtime
       * (done() runs here, but it may hand the slot to another thread). */
      if (atomic_compare_exchange_weak_explicit(&ctx->state, &s,
                                                KMQ__PCTX_DONE,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
        ctx->done(ctx, result, ctx->done_opaque);
        return KMQ_OK;
      }
    } else if (s == KMQ__PCTX_RUNNING) {
      /* The callback has not returned yet: leave the result for
       * returned(). The release CAS publishes `early` and the reason. */
      atomic_store_explicit(&ctx->early, (int)result, memory_order_relaxed);
      if (atomic_compare_exchange_weak_explicit(&ctx->state, &s,
                                                KMQ__PCTX_EARLY,
                                                memory_order_release,
                                                memory_order_acquire))
        return KMQ_OK;
    } else {
      return KMQ_ERR_STATE; /* IDLE, EARLY or DONE: nothing to complete */
    }
    /* CAS failed: s holds the new state; decide again. */
  }
}
