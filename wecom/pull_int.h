/* Private to the puller (wecom/pull*.c): the shared cursor store on its
 * compacted Kafka topic, and the delivery wait both files use. */
#ifndef KMQ_WECOM_PULL_INT_H
#define KMQ_WECOM_PULL_INT_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/wecom_api.h"

/* A set of produced messages whose delivery reports the puller waits for.
 * It lives in the puller; every message of one page (or one cursor record)
 * carries it as its opaque, and kmq__batch_wait() returns only once all of
 * them are reported, so no report can arrive for a batch that was reset. */
typedef struct {
  int pending, failed;
  rd_kafka_resp_err_t first_err;
} kmq__batch_t;

/* Delivery report callback for the puller's producer (rd_kafka_conf's
 * dr_msg_cb): counts into the message's kmq__batch_t.
 * @locality the thread in rd_kafka_flush / rd_kafka_poll (the puller's) */
void kmq__batch_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* Serves delivery reports until the batch has none pending. Bounded by the
 * producer's message.timeout.ms: librdkafka reports every message by then.
 * Returns KMQ_WECOM_API_OK when all were delivered, KMQ_WECOM_API_ERR_KAFKA
 * with errstr naming the first error otherwise. Resets the batch.
 * @locality the puller's thread */
kmq_wecom_api_err_t kmq__batch_wait(rd_kafka_t *producer, kmq__batch_t *b,
                                    char *errstr, size_t errstr_size);

/* Cursor record states (header "kmq_state"). */
#define KMQ__CURSOR_BEGIN "begin" /* a request was started from this cursor */
#define KMQ__CURSOR_PAGE "page"   /* a page of it is delivered */
#define KMQ__CURSOR_DONE "done"   /* its last page is delivered */

/* What the cursor topic says about one open_kfid. */
typedef struct {
  const char *cursor; /* "" when none yet; borrowed from the map */
  int32_t req_partition; /* the sync request it belongs to; -1: unknown */
  int64_t req_offset;
  const char *state;  /* KMQ__CURSOR_*; "" when unknown */
} kmq__cursor_t;

/* A consumer that reads the cursor topic with assign() only (it never
 * joins `group` nor commits). Returns NULL with errstr filled. */
rd_kafka_t *kmq__cursor_reader_new(const kmq_conf_t *kafka, const char *group,
                                   char *errstr, size_t errstr_size);

/* Reads every partition of topic from its start to its current end into
 * map (open_kfid -> entry; the last record of a key wins, a tombstone
 * removes it). Returns KMQ_WECOM_API_ERR_KAFKA (map unchanged) on failure or
 * when the end is not reached within timeout_ms. @locality puller's thread */
kmq_wecom_api_err_t kmq__cursors_load(rd_kafka_t *reader, const char *topic,
                                      json_t *map, int timeout_ms, char *errstr,
                                      size_t errstr_size);

/* Entry of open_kfid in map; an empty entry when there is none. */
void kmq__cursor_get(const json_t *map, const char *open_kfid,
                     kmq__cursor_t *out);

/* Produces the record (open_kfid -> cursor, with the request and state as
 * headers) into topic as part of batch b, and updates map once the caller
 * has waited for it (kmq__cursor_set). Returns KMQ_WECOM_API_ERR_KAFKA when
 * librdkafka refuses it (not counted in b). */
kmq_wecom_api_err_t kmq__cursor_produce(rd_kafka_t *producer, const char *topic,
                                        const char *open_kfid,
                                        const char *cursor,
                                        int32_t req_partition,
                                        int64_t req_offset, const char *state,
                                        kmq__batch_t *b, char *errstr,
                                        size_t errstr_size);

/* Records in map what a delivered cursor record said. NOMEM on failure. */
kmq_wecom_api_err_t kmq__cursor_set(json_t *map, const char *open_kfid,
                                    const char *cursor, int32_t req_partition,
                                    int64_t req_offset, const char *state);

#endif
