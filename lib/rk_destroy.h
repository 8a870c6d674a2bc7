/*
 * Bounded destruction of a librdkafka handle.
 *
 * rd_kafka_destroy joins librdkafka's main thread, and that thread does not
 * end until the consumer group has terminated. In librdkafka 2.0.2 a
 * cooperative group whose join state waits for the application's assign
 * call never terminates once a fatal error was raised for a static member
 * (group.instance.id): librdkafka turns the application's assign call into
 * rd_kafka_cgrp_unassign, which leaves WAIT_ASSIGN_CALL as it is, and the
 * termination's own unassign and revoke do the same (an eager group
 * rejoins instead, and terminates). A static member fenced just after its
 * assignment was handed to the application would hang its process's
 * shutdown forever. librdkafka 2.4.0 moves the join state to
 * WAIT_UNASSIGN_CALL there, which ends the wait.
 *
 * So the destroy runs on a thread of its own and the caller waits for it
 * up to a bound. Past the bound the handle, its threads and what they use
 * are abandoned to that thread: freed by it if the destroy ever returns,
 * kept for the life of the process if not. In the case above librdkafka's
 * main thread then also spins on one CPU for good (its timers no longer
 * run once it terminates, so its loop never sleeps): the process should
 * be restarted.
 */
#ifndef KMQ_LIB_RK_DESTROY_H
#define KMQ_LIB_RK_DESTROY_H

#include <librdkafka/rdkafka.h>

/* Frees what librdkafka's threads may still use (a log callback's
 * opaque, say) once the handle is gone. */
typedef void kmq__rk_release_cb(void *arg);

/* rd_kafka_destroy_flags(rk, flags) on a thread of its own, waited for up
 * to timeout_ms (0: not at all). Returns 0 when rk is gone within the
 * bound: neither callback is called, the caller frees arg itself. Returns
 * 1 when it is not: on_abandon(arg) has run on the caller's thread, while
 * arg was still the caller's (the destroy, should it return meanwhile,
 * waits for it), and from then on rk and arg belong to that thread, which
 * calls release(arg) if the destroy returns. When no thread can be
 * started, destroys on the caller's thread (unbounded) and returns 0.
 * @locality an application thread, never a librdkafka one (its log
 * callback, say): rd_kafka_destroy's own rule. */
int kmq__rk_destroy_within(rd_kafka_t *rk, int flags, int timeout_ms,
                           kmq__rk_release_cb *on_abandon,
                           kmq__rk_release_cb *release, void *arg);

#endif
