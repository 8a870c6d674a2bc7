/* The producer's side of the fallback store (issue 11): the store and its
 * compensator when configured, the "sticky" users, and the copies of failed
 * messages kept until the DLQ decides. Internal to producer.c.
 *
 * Sticky users: a user whose delivery failed, or who has pending rows in the
 * store (loaded at start), sends to the store instead of Kafka until the
 * compensator has replayed all their rows; then the user is released and
 * produces directly again. The set is guarded by a rwlock: a sticky send
 * holds it for reading while it writes its row, and the release (on the
 * compensator's thread) takes it for writing, checks the store for the
 * user's live rows and removes the user only when there are none, so a row
 * written by a concurrent sticky send is never left behind by a release. An
 * empty set costs a send one atomic load. */
#ifndef KMQ_LIB_PRODUCER_STORE_H
#define KMQ_LIB_PRODUCER_STORE_H

#include "kmq/compensator.h"
#include "kmq/fallback.h"
#include "kmq/producer.h"

typedef struct kmq__pstore_s kmq__pstore_t;

/* A failed message, copied on the failure path for the store. */
typedef struct kmq__pstore_msg_s kmq__pstore_msg_t;

/* *out = NULL (and KMQ_OK) when conf selects no store. Otherwise opens the
 * store, loads its users with live rows as sticky and, with
 * kmq.fallback.compensator=on, starts a compensator. Errors with errstr. */
kmq_err_t kmq__pstore_new(const kmq_conf_t *conf, kmq__pstore_t **out,
                          char *errstr, size_t errstr_size);
/* Stops the compensator, closes the store. No-op on NULL. */
void kmq__pstore_destroy(kmq__pstore_t *ps);

/* If msg's user is sticky, writes it to the store (topic, msg, the
 * producer's headers hdrs, borrowed) and returns 1 with *err = KMQ_OK (the
 * row is durable) or the store's error; returns 0 when the user is not
 * sticky (produce it). @locality any sending thread */
int kmq__pstore_send(kmq__pstore_t *ps, const char *topic,
                     const kmq_produce_msg_t *msg,
                     const rd_kafka_headers_t *hdrs, kmq_err_t *err);

/* m's delivery failed: its user becomes sticky (and is not released while
 * this failure is in flight), and a copy of m is returned for
 * kmq__pstore_put_failed (NULL when out of memory: then the DLQ's outcome is
 * final). @locality producer poll thread */
kmq__pstore_msg_t *kmq__pstore_failed(kmq__pstore_t *ps,
                                      const rd_kafka_message_t *m);
/* The DLQ could not take the message either: stores the copy. KMQ_OK once
 * durable, else the store's error. Does not free msg. */
kmq_err_t kmq__pstore_put_failed(kmq__pstore_t *ps,
                                 const kmq__pstore_msg_t *msg);
void kmq__pstore_msg_free(kmq__pstore_msg_t *msg);
/* msg reached its outcome (DLQ, stored, or LOST): one failure of its user
 * less in flight; the user is released when none is left and the store
 * holds none of their rows (a failure the DLQ absorbed does not keep the
 * user on the store path). Call exactly once per kmq__pstore_failed that
 * returned non-NULL, before freeing msg. @locality DLQ or producer poll
 * thread */
void kmq__pstore_failed_done(kmq__pstore_t *ps, const kmq__pstore_msg_t *msg);

kmq_fallback_t *kmq__pstore_fb(kmq__pstore_t *ps);
kmq_compensator_t *kmq__pstore_comp(kmq__pstore_t *ps);
/* Users currently sticky. */
int64_t kmq__pstore_sticky(kmq__pstore_t *ps);

#endif
