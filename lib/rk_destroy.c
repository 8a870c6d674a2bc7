/* Bounded rd_kafka_destroy (rk_destroy.h). */
#include "lib/rk_destroy.h"

#include "lib/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  rd_kafka_t *rk;
  int flags;
  int done;      /* under mu: the destroy returned */
  int abandoned; /* under mu: the caller stopped waiting */
  kmq__rk_release_cb *release;
  void *arg;
} kmq__rkd_t;

static void kmq__rkd_free(kmq__rkd_t *d) {
  pthread_cond_destroy(&d->cv);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

static void *kmq__rkd_main(void *a) {
  kmq__rkd_t *d = a;
  rd_kafka_destroy_flags(d->rk, d->flags);
  pthread_mutex_lock(&d->mu);
  d->done = 1;
  int abandoned = d->abandoned;
  pthread_cond_signal(&d->cv);
  pthread_mutex_unlock(&d->mu);
  /* Abandoned: the caller has returned, and this thread is detached; it
   * owns d and arg. Otherwise the caller joins it and frees both. */
  if (abandoned) {
    d->release(d->arg);
    kmq__rkd_free(d);
  }
  return NULL;
}

int kmq__rk_destroy_within(rd_kafka_t *rk, int flags, int timeout_ms,
                           kmq__rk_release_cb *on_abandon,
                           kmq__rk_release_cb *release, void *arg) {
  kmq__rkd_t *d = calloc(1, sizeof(*d));
  pthread_condattr_t ca;
  int ok = d && pthread_condattr_init(&ca) == 0;
  if (ok) {
    /* Monotonic: a wall-clock step must not stretch or cut the bound. */
    ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&d->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (ok && pthread_mutex_init(&d->mu, NULL) != 0) {
      pthread_cond_destroy(&d->cv);
      ok = 0;
    }
  }
  pthread_t t;
  if (ok) {
    d->rk = rk;
    d->flags = flags;
    d->release = release;
    d->arg = arg;
    if (pthread_create(&t, NULL, kmq__rkd_main, d) != 0) {
      kmq__rkd_free(d);
      ok = 0;
    }
  } else {
    free(d);
  }
  if (!ok) {
    rd_kafka_destroy_flags(rk, flags); /* no thread: unbounded */
    return 0;
  }
  struct timespec until;
  kmq__mono_deadline(&until, timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&d->mu);
  while (!d->done &&
         pthread_cond_timedwait(&d->cv, &d->mu, &until) == 0)
    ;
  int done = d->done;
  if (!done) {
    /* Under mu: a destroy that returns now waits here before it reads
     * `abandoned`, so arg is still ours while on_abandon uses it. */
    on_abandon(arg);
    d->abandoned = 1;
  }
  pthread_mutex_unlock(&d->mu);
  if (done) {
    pthread_join(t, NULL);
    kmq__rkd_free(d);
    return 0;
  }
  pthread_detach(t);
  return 1;
}
