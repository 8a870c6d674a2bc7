/* kmq_proc_log: counts messages per type and logs one debug line each. */
#include "kmq/processor.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "processors/msg_internal.h"

#define KMQ__LOG_DEBUG 7 /* syslog LOG_DEBUG, librdkafka's log levels */

struct kmq_proc_log_s {
  kmq_proc_log_sink *sink;
  void *sink_opaque;
  /* Statistics only: relaxed increments, no ordering with anything. */
  atomic_uint_fast64_t count[KMQ_MSG_TYPE_CNT];
};

kmq_proc_log_t *kmq_proc_log_new(kmq_proc_log_sink *sink, void *sink_opaque,
                                 char *errstr, size_t errstr_size) {
  kmq_proc_log_t *pl = calloc(1, sizeof(*pl));
  if (!pl) {
    kmq__errset(errstr, errstr_size, "out of memory creating kmq_proc_log");
    return NULL;
  }
  pl->sink = sink;
  pl->sink_opaque = sink_opaque;
  for (int t = 0; t < KMQ_MSG_TYPE_CNT; t++)
    atomic_init(&pl->count[t], 0);
  return pl;
}

void kmq_proc_log_destroy(kmq_proc_log_t *pl) { free(pl); }

kmq_proc_result_t kmq_proc_log(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                               void *opaque) {
  kmq_proc_log_t *pl = opaque;
  unsigned t = (unsigned)msg->type < KMQ_MSG_TYPE_CNT ? (unsigned)msg->type
                                                      : KMQ_MSG_UNKNOWN;
  atomic_fetch_add_explicit(&pl->count[t], 1, memory_order_relaxed);
  if (!pl->sink)
    return KMQ_PROC_OK;

  char qtype[KMQ__QUOTE_MAX * 4 + 8], quser[KMQ__QUOTE_MAX * 4 + 8],
      qid[KMQ__QUOTE_MAX * 4 + 8], line[1024];
  size_t ulen;
  const char *user = kmq_proc_ctx_user(ctx, &ulen);
  const char *topic = kmq_proc_ctx_topic(ctx);
  kmq__quote(qtype, sizeof(qtype), msg->msg_type.ptr, msg->msg_type.len);
  kmq__quote(quser, sizeof(quser), user ? user : "", user ? ulen : 0);
  kmq__quote(qid, sizeof(qid), msg->message_id.ptr, msg->message_id.len);
  kmq__errset(line, sizeof(line),
              "type=%s user=%s topic=%s partition=%d offset=%lld attempt=%d "
              "message_id=%s",
              qtype, quser, topic ? topic : "-",
              (int)kmq_proc_ctx_partition(ctx),
              (long long)kmq_proc_ctx_offset(ctx), kmq_proc_ctx_attempt(ctx),
              qid);
  pl->sink(KMQ__LOG_DEBUG, line, pl->sink_opaque);
  return KMQ_PROC_OK;
}

uint64_t kmq_proc_log_count(const kmq_proc_log_t *pl, kmq_msg_type_t type) {
  if ((unsigned)type < KMQ_MSG_TYPE_CNT)
    return atomic_load_explicit(&pl->count[type], memory_order_relaxed);
  uint64_t sum = 0;
  for (int t = 0; t < KMQ_MSG_TYPE_CNT; t++)
    sum += atomic_load_explicit(&pl->count[t], memory_order_relaxed);
  return sum;
}
