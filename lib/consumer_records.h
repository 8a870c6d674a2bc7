/*
 * The consumer's record slab seen from its embedder (the runtime), beyond
 * the public kmq_ack_data (consumer.h). kmq__ prefix: not public API.
 */
#ifndef KMQ_LIB_CONSUMER_RECORDS_H
#define KMQ_LIB_CONSUMER_RECORDS_H

#include <librdkafka/rdkafka.h>

struct kmq_consumer_s;

/* For each record in flight (taken by an ack handler, not yet acked): its
 * message and its area (kmq_ack_data's; NULL when the consumer was created
 * with record_size 0). Both stay valid during the callback; the area may
 * be written concurrently by the record's holder on another thread, so cb
 * reads from it only atomics (or what the poll thread itself wrote).
 * @locality poll thread, outside the handler */
typedef void(kmq__record_visit_cb)(const rd_kafka_message_t *m, void *area,
                                   void *opaque);
void kmq__consumer_each_record(struct kmq_consumer_s *c,
                               kmq__record_visit_cb *cb, void *opaque);

#endif /* KMQ_LIB_CONSUMER_RECORDS_H */
