/*
 * Bounded destruction of a librdkafka handle.
 *
 * rd_kafka_destroy joins librdkafka's main thread, and that thread does not
 * end until the consumer group has terminated. In librdkafka 2.0.2 (and
 * still in 2.15) a group whose join state waits for the application's
 * assign call never terminates once the handle is being destroyed without
 * a consumer close: rd_kafka_cgrp_terminate0 calls rd_kafka_cgrp_unassign,
 * which leaves WAIT_ASSIGN_CALL as it is, and after a fatal error every
 * assign call of the application is turned into that same unassign. Any
 * destroy after a fatal error takes this path (librdkafka forces
 * NO_CONSUMER_CLOSE): a fenced static member (group.instance.id) whose
 * assignment was handed to the application just before the fence would
 * hang its process's shutdown forever.
 *
 * So the destroy runs on a thread of its own and the caller waits for it
 * up to a bound. Past the bound the handle, its threads and what they use
 * are abandoned to that thread: freed by it if the destroy ever returns,
 * kept for the life of the process if not.
 */
#ifndef KMQ_LIB_RK_DESTROY_H
#define KMQ_LIB_RK_DESTROY_H

#include <librdkafka/rdkafka.h>

/* Frees what librdkafka's threads may still use (a log callback's
 * opaque, say) once the handle is gone. */
typedef void kmq__rk_release_cb(void *arg);

/* rd_kafka_destroy_flags(rk, flags) on a thread of its own, waited for up
 * to timeout_ms (0: not at all). Returns 0 when rk is gone within the
 * bound: release is not called, the caller frees arg itself. Returns 1
 * when it is not: from then on rk and arg belong to that thread, which
 * calls release(arg) if the destroy returns. When no thread can be
 * started, destroys on the caller's thread (unbounded) and returns 0.
 * @locality an application thread, never a librdkafka one (its log
 * callback, say): rd_kafka_destroy's own rule. */
int kmq__rk_destroy_within(rd_kafka_t *rk, int flags, int timeout_ms,
                           kmq__rk_release_cb *release, void *arg);

#endif
