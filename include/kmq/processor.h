/*
 * kmq processors: the application code that handles a decoded message.
 *
 * Registry: the application registers one callback per WeCom msgtype string
 * ("text", "image", "event", or any custom string such as a msgtype kmq has
 * no enum for) plus a default for everything else, then the runtime freezes
 * the registry when it starts. Registration after kmq_proc_registry_freeze()
 * fails with KMQ_ERR_STATE and changes nothing. A frozen registry is
 * immutable, so lookups take no lock: an array indexed by kmq_msg_type_t for
 * the built-in types, a short linear table for custom strings. The registry
 * keeps its own copy of type strings; the opaques are borrowed and must
 * outlive the runtime that calls the callbacks.
 *
 * Calls: the runtime calls a processor on a worker thread, one message at a
 * time per external_userid and in offset order: a user's next message waits
 * until this one is finished (including ASYNC and retries). Messages of
 * different users run concurrently, so an opaque shared by several types or
 * users must be thread-safe. `msg` and `ctx` are the runtime's: valid for the
 * call, or until kmq_proc_ctx_complete() for KMQ_PROC_ASYNC; do not use them
 * after. Results:
 *   KMQ_PROC_OK     done; the offset becomes committable.
 *   KMQ_PROC_RETRY  transient failure: called again after a backoff
 *                   (kmq.proc.backoff.ms, doubling per retry up to
 *                   kmq.proc.backoff.max.ms) with attempt + 1, at most
 *                   kmq.proc.retries times; then dead-lettered as
 *                   KMQ_PROC_REASON_RETRIES with the last reason. The
 *                   backoff waits on a scheduler timer, not on a thread:
 *                   neither the worker nor the thread that completed an
 *                   ASYNC attempt waits; the user's next messages do (its
 *                   order), other users run meanwhile. The retry is called
 *                   on a worker, possibly another one. If the message's
 *                   partition is revoked meanwhile, retrying stops and the
 *                   message is left to the partition's next owner.
 *   KMQ_PROC_FAIL   permanent: dead-lettered at once as
 *                   KMQ_PROC_REASON_FAILED with the reason set on ctx.
 *   KMQ_PROC_ASYNC  the processor owns the outcome: it calls
 *                   kmq_proc_ctx_complete() exactly once, from any thread,
 *                   possibly before the callback has even returned.
 * Dead-lettering acknowledges the message: nothing is dropped without a DLQ
 * record (docs/bad-input.md).
 * Rebalances: a processor that has started keeps its partition on this
 * member until its outcome is known, so no other member runs the same user
 * meanwhile; the bound is 90% of max.poll.interval.ms (kmq.close.timeout.ms
 * at shutdown). A processing that outlives it is abandoned: its outcome is
 * ignored and the message is processed again by the next owner, possibly
 * while this call still runs (runtime.h).
 */
#ifndef KMQ_PROCESSOR_H
#define KMQ_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/err.h"
#include "kmq/message.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  KMQ_PROC_OK = 0,
  KMQ_PROC_RETRY,
  KMQ_PROC_FAIL,
  KMQ_PROC_ASYNC,
} kmq_proc_result_t;

/* DLQ reasons ("reason" of the DLQ record) for processor outcomes. */
#define KMQ_PROC_REASON_FAILED "processor_failed"
#define KMQ_PROC_REASON_RETRIES "retries_exhausted"
#define KMQ_PROC_REASON_NO_PROCESSOR "no_processor"

/* Longest reason kept by kmq_proc_ctx_set_reason(), NUL included. */
#define KMQ_PROC_REASON_MAX 256

/* Per-message context. Storage belongs to the runtime (see
 * processors/proc_ctx.h); processors use the functions below. */
typedef struct kmq_proc_ctx_s kmq_proc_ctx_t;

typedef kmq_proc_result_t (*kmq_proc_cb)(const kmq_chat_msg_t *msg,
                                         kmq_proc_ctx_t *ctx, void *opaque);

typedef struct kmq_proc_registry_s kmq_proc_registry_t;

/* What a lookup finds. Owned by the registry: valid until it is destroyed. */
typedef struct kmq_proc_entry_s {
  kmq_proc_cb cb;
  void *opaque;
  const char *msg_type; /* the registered type string; "*" for the default */
} kmq_proc_entry_t;

/* "OK", "RETRY", "FAIL", "ASYNC"; "INVALID" otherwise. Static. */
const char *kmq_proc_result_name(kmq_proc_result_t r);

/* ---- registry ----------------------------------------------------------- */

/* An empty registry: no processor, no default. Returns NULL with errstr
 * filled when out of memory. Destroy with kmq_proc_registry_destroy(). */
kmq_proc_registry_t *kmq_proc_registry_new(char *errstr, size_t errstr_size);

/* Frees the registry and its type strings, not the opaques. The runtime
 * must be stopped first (entries handed out become invalid). No-op on
 * NULL. */
void kmq_proc_registry_destroy(kmq_proc_registry_t *reg);

/* Routes msg_type (copied) to cb(msg, ctx, opaque). A built-in name maps to
 * its kmq_msg_type_t; any other string matches KMQ_MSG_UNKNOWN messages with
 * that exact msg_type. Errors, with no change made: KMQ_ERR_INVALID_ARG (NULL
 * reg/cb, NULL or empty msg_type), KMQ_ERR_DUPLICATE (type already
 * registered), KMQ_ERR_STATE (frozen), KMQ_ERR_NOMEM.
 * @locality the configuring thread, before the runtime starts */
kmq_err_t kmq_proc_register(kmq_proc_registry_t *reg, const char *msg_type,
                            kmq_proc_cb cb, void *opaque);

/* Sets (or replaces) the processor for every type without one. Errors:
 * KMQ_ERR_INVALID_ARG (NULL reg/cb), KMQ_ERR_STATE (frozen). */
kmq_err_t kmq_proc_set_default(kmq_proc_registry_t *reg, kmq_proc_cb cb,
                               void *opaque);

/* Routes every record to cb *undecoded*: cb is called with msg == NULL and
 * reads the record through kmq_proc_ctx_value() / kmq_proc_ctx_user(). The
 * runtime then skips JSON decoding, the key/external_userid check and
 * per-type routing; a record without a key and one above kmq.msg.max.bytes
 * are still dead-lettered before dispatch, ordering per user and the commit
 * gate are unchanged. For applications that forward or archive records, or
 * parse them their own way: a record they cannot use is dead-lettered by
 * returning KMQ_PROC_FAIL (kmq_msg_decode() gives the reason).
 * Exclusive with typed processors, so that no record is silently routed
 * past them: KMQ_ERR_STATE when a type or a default is registered (and
 * kmq_proc_register / kmq_proc_set_default fail with KMQ_ERR_STATE once a
 * raw processor is set), or when frozen; KMQ_ERR_INVALID_ARG for NULL
 * reg/cb. Setting it again replaces it.
 * @locality the configuring thread, before the runtime starts */
kmq_err_t kmq_proc_set_raw(kmq_proc_registry_t *reg, kmq_proc_cb cb,
                           void *opaque);

/* The raw processor (msg_type "raw"), or NULL when none is set. Owned by
 * the registry. @locality any thread once frozen */
const kmq_proc_entry_t *kmq_proc_raw(const kmq_proc_registry_t *reg);

/* Makes the registry immutable; idempotent. The runtime calls it before its
 * workers start, so that thread creation orders every registration before
 * the lock-free lookups. */
void kmq_proc_registry_freeze(kmq_proc_registry_t *reg);

int kmq_proc_registry_frozen(const kmq_proc_registry_t *reg);

/* The processor for a message: its type's, else the default; NULL when
 * neither exists (the runtime dead-letters the message as
 * KMQ_PROC_REASON_NO_PROCESSOR with KMQ_ERR_UNKNOWN_TYPE). Lock-free and
 * allocation-free; O(1) for built-in types, O(custom types) otherwise.
 * @locality any thread once frozen; the configuring thread before */
const kmq_proc_entry_t *kmq_proc_lookup(const kmq_proc_registry_t *reg,
                                        const kmq_chat_msg_t *msg);

/* Same by type string (len bytes; need not be NUL-terminated). */
const kmq_proc_entry_t *kmq_proc_lookup_type(const kmq_proc_registry_t *reg,
                                             const char *msg_type,
                                             size_t len);

/* ---- context (for processors) ------------------------------------------- */

/* The record's key, i.e. the message's external_userid (len in *lenp when
 * lenp is non-NULL). Borrowed like ctx. */
const char *kmq_proc_ctx_user(const kmq_proc_ctx_t *ctx, size_t *lenp);
/* The record's value (len in *lenp when lenp is non-NULL): the undecoded
 * envelope. Borrowed like ctx. */
const void *kmq_proc_ctx_value(const kmq_proc_ctx_t *ctx, size_t *lenp);
/* Topic name; borrowed like ctx. */
const char *kmq_proc_ctx_topic(const kmq_proc_ctx_t *ctx);
int32_t kmq_proc_ctx_partition(const kmq_proc_ctx_t *ctx);
int64_t kmq_proc_ctx_offset(const kmq_proc_ctx_t *ctx);
/* 1 on the first call, 2 on the first retry, ... */
int kmq_proc_ctx_attempt(const kmq_proc_ctx_t *ctx);
/* 1 + kmq.proc.retries: RETRY on this attempt dead-letters the message. */
int kmq_proc_ctx_max_attempts(const kmq_proc_ctx_t *ctx);

/* Records why the message failed (for FAIL, or the last RETRY), printf
 * style, cut at KMQ_PROC_REASON_MAX - 1 bytes on a UTF-8 boundary; replaces
 * any earlier reason. Call it before returning, or before
 * kmq_proc_ctx_complete() for ASYNC; ignored once the outcome is known. */
void kmq_proc_ctx_set_reason(kmq_proc_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The reason set for this attempt, "" if none. Borrowed like ctx. */
const char *kmq_proc_ctx_reason(const kmq_proc_ctx_t *ctx);

/* Completes a message whose processor returned (or is about to return)
 * KMQ_PROC_ASYNC, from any thread. result is OK, RETRY or FAIL. After KMQ_OK
 * the ctx and msg belong to the runtime again: do not touch them.
 * Errors, with no effect: KMQ_ERR_INVALID_ARG (result ASYNC or out of range),
 * KMQ_ERR_STATE (already completed, or no call in progress). */
kmq_err_t kmq_proc_ctx_complete(kmq_proc_ctx_t *ctx, kmq_proc_result_t result);

/* ---- built-in processors ------------------------------------------------ */

/* kmq_proc_log: the default processor of the demo and of tests. It counts
 * messages per type and, when a sink is given, hands it one line per message
 * ("type=\"text\" user=\"wm..\" topic=t partition=0 offset=42 attempt=1
 * message_id=\"..\"") at syslog level 7 (debug), on the worker thread: the
 * sink must be thread-safe. Always returns KMQ_PROC_OK. */
typedef struct kmq_proc_log_s kmq_proc_log_t;
typedef void(kmq_proc_log_sink)(int level, const char *line, void *opaque);

/* sink may be NULL (count only); sink_opaque is borrowed. Returns NULL with
 * errstr filled when out of memory. */
kmq_proc_log_t *kmq_proc_log_new(kmq_proc_log_sink *sink, void *sink_opaque,
                                 char *errstr, size_t errstr_size);
/* No-op on NULL. Not while the runtime can still call kmq_proc_log. */
void kmq_proc_log_destroy(kmq_proc_log_t *pl);

/* The callback; opaque is the kmq_proc_log_t. */
kmq_proc_result_t kmq_proc_log(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                               void *opaque);

/* Messages seen of one type, or of all types for KMQ_MSG_TYPE_CNT. A
 * statistic: exact once the runtime is idle, approximate while it runs. */
uint64_t kmq_proc_log_count(const kmq_proc_log_t *pl, kmq_msg_type_t type);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_PROCESSOR_H */
