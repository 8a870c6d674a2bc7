/*
 * The simulated customers' reply application, shared by the demo and the
 * WeCom broker tests: a kmq processor that answers every simulator message
 * (msgid "sim-<u>-<seq>") with kf/send_msg, the text acknowledging seq
 * (kmq_wecom_sim_reply_text), through a kmq_wecom_client_t.
 *
 * send_msg blocks (HTTP, retries), so it does not run on a kmq worker: the
 * processor hands the message to a bounded queue and returns
 * KMQ_PROC_ASYNC; the replier's own threads call send_msg and complete the
 * message with kmq_proc_ctx_complete (OK, or RETRY when WeCom could not be
 * reached: kmq retries after its backoff while the user's later messages
 * wait, so replies stay in order). A full queue is RETRY, never growth.
 * Each reply carries msgid "re-<message msgid>" so that a resend after a
 * lost answer is recognised by WeCom instead of being sent twice. A message
 * the topic holds twice (the page a crashed puller delivered without its
 * cursor) is answered once: a customer's message whose seq is not above
 * the last one answered is skipped (OK, counted), as an idempotent
 * application does with WeCom's msgid.
 *
 * Threads: _on_message runs on kmq's workers; _counts from any thread.
 * Ownership: the client is borrowed and must outlive the replier. Destroy
 * the replier only after the runtime that calls it (kmq_runtime_destroy
 * waits for the ASYNC messages, which these threads complete).
 */
#ifndef KMQ_TOOLS_WECOM_REPLIER_H
#define KMQ_TOOLS_WECOM_REPLIER_H

#include <stdint.h>

#include "kmq/processor.h"
#include "kmq/wecom_api.h"

typedef struct kmq_wecom_replier_s kmq_wecom_replier_t;

#define KMQ_WECOM_REPLIER_QCAP 64 /* queued replies; more: RETRY */

/* threads >= 1 reply threads; customers: the simulator's customers
 * 0..customers-1 (others fail to the DLQ). NULL with errstr on failure. */
kmq_wecom_replier_t *kmq_wecom_replier_new(kmq_wecom_client_t *cl,
                                           int threads, int customers,
                                           char *errstr, size_t errstr_size);
/* Stops and joins the threads, frees. NULL: no-op. */
void kmq_wecom_replier_destroy(kmq_wecom_replier_t *r);

/* The processor (kmq_proc_set_default(reg, kmq_wecom_replier_on_message,
 * r)): FAIL for a message that is not the simulator's. */
kmq_proc_result_t kmq_wecom_replier_on_message(const kmq_chat_msg_t *msg,
                                               kmq_proc_ctx_t *ctx,
                                               void *opaque);

typedef struct {
  int64_t sent;       /* replies sent */
  int64_t failed;     /* send_msg calls that failed (each retried by kmq) */
  int64_t duplicates; /* messages answered before, skipped */
  int64_t foreign;    /* not a simulator customer's message: DLQ */
} kmq_wecom_replier_counts_t;

void kmq_wecom_replier_counts(const kmq_wecom_replier_t *r,
                              kmq_wecom_replier_counts_t *out);

#endif
