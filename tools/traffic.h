/* Simulated WeCom customer-service traffic for the demo, tests and bench:
 * envelopes of several msgtypes whose message_id carries (user, seq) so that
 * a processor can check per-user order, plus a catalogue of bad records. */
#ifndef KMQ_TOOLS_TRAFFIC_H
#define KMQ_TOOLS_TRAFFIC_H

#include <stddef.h>

#include "kmq/processor.h"

/* "wm" + 6 digits: the external_userid of simulated user u. */
void kmq_traffic_user(int u, char *buf, size_t size);

/* Writes the envelope of user u's message number seq into buf (NUL-
 * terminated); the msgtype cycles through text, image, event, location,
 * link, voice. Returns its length (or >= size when cut). */
int kmq_traffic_envelope(int u, int seq, char *buf, size_t size);

/* Parses a message_id made by kmq_traffic_envelope. 0 on success. */
int kmq_traffic_parse_id(const char *id, size_t len, int *u, int *seq);

/* For processors: (user, seq) of msg. Returns 0, or -1 with the reason set
 * on ctx, for the processor to return KMQ_PROC_FAIL (dead-letter it). */
int kmq_traffic_msg_id(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                       int *u, int *seq);

/* Bad records, one per kind. */
typedef struct {
  const char *name;   /* what is wrong */
  const char *reason; /* DLQ reason kmq must give it */
  char key[32];
  size_t key_len;     /* 0: no key */
  char *value;        /* malloc'd */
  size_t value_len;
} kmq_traffic_bad_t;

#define KMQ_TRAFFIC_BAD_KINDS 6
/* Fills bad with kind k (0 .. KMQ_TRAFFIC_BAD_KINDS-1); max_bytes is the
 * runtime's kmq.msg.max.bytes (the oversized one exceeds it). Free value. */
void kmq_traffic_bad(int k, size_t max_bytes, kmq_traffic_bad_t *bad);

#endif
