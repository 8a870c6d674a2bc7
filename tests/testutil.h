/* Test helpers shared by the check suites: deadlines instead of sleeps,
 * unique names, the real broker's address. */
#ifndef KMQ_TESTUTIL_H
#define KMQ_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* Monotonic clock in ms. */
int64_t kt_now_ms(void);

/* Polls cond(opaque) until it is true or timeout_ms elapsed; between checks
 * yields for at most 1 ms. Returns the final value of cond. */
bool kt_wait_until(bool (*cond)(void *opaque), void *opaque, int timeout_ms);

/* Writes "<prefix>-<pid>-<counter>-<random>" into buf: unique per run. */
void kt_unique_name(char *buf, size_t size, const char *prefix);

/* Bootstrap servers of the real broker from $KMQ_BOOTSTRAP. A test labelled
 * "broker" fails (not skips) when it is unset: the test script always starts
 * one, so its absence is a broken set-up. */
const char *kt_bootstrap(void);

#endif
