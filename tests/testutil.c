#include "testutil.h"

#include <check.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int64_t kt_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool kt_wait_until(bool (*cond)(void *), void *opaque, int timeout_ms) {
  int64_t deadline = kt_now_ms() + timeout_ms;
  while (!cond(opaque)) {
    if (kt_now_ms() >= deadline)
      return cond(opaque);
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
  }
  return true;
}

void kt_unique_name(char *buf, size_t size, const char *prefix) {
  static int counter; /* test process only */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(buf, size, "%s-%d-%d-%lx", prefix, (int)getpid(), counter++,
           (unsigned long)(ts.tv_nsec ^ ts.tv_sec));
}

const char *kt_bootstrap(void) {
  const char *b = getenv("KMQ_BOOTSTRAP");
  ck_assert_msg(b && *b, "KMQ_BOOTSTRAP is not set: start the broker with "
                         "scripts/kafka.sh start (scripts/test.sh does)");
  return b;
}
