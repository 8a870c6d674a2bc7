/*
 * TSan builds only (kmq_add_test adds it when KMQ_TSAN): glibc's C11
 * threads (thrd_create, mtx_*, cnd_*, call_once), which librdkafka uses,
 * on top of the pthread calls that GCC's libtsan intercepts. glibc's own
 * C11 functions call its pthread internals directly, so TSan saw neither
 * librdkafka's threads (a thread it did not see start crashed it) nor its
 * locks (each lock hand-off looked like a race). Defined in the test
 * executable, these take precedence over glibc's for librdkafka too.
 * glibc's mtx_t, cnd_t, thrd_t and once_flag are its pthread types.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

typedef struct {
  thrd_start_t fn;
  void *arg;
} kt_tramp_t;

static void *kt_tramp(void *a) {
  kt_tramp_t t = *(kt_tramp_t *)a;
  free(a);
  return (void *)(intptr_t)t.fn(t.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg) {
  kt_tramp_t *t = malloc(sizeof(*t));
  if (!t)
    return thrd_nomem;
  t->fn = func;
  t->arg = arg;
  int r = pthread_create((pthread_t *)thr, NULL, kt_tramp, t);
  if (r) {
    free(t);
    return r == EAGAIN || r == ENOMEM ? thrd_nomem : thrd_error;
  }
  return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
  void *p;
  if (pthread_join((pthread_t)thr, &p))
    return thrd_error;
  if (res)
    *res = (int)(intptr_t)p;
  return thrd_success;
}

int thrd_detach(thrd_t thr) {
  return pthread_detach((pthread_t)thr) ? thrd_error : thrd_success;
}

int mtx_init(mtx_t *m, int type) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  if (type & mtx_recursive)
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  int r = pthread_mutex_init((pthread_mutex_t *)m, &a);
  pthread_mutexattr_destroy(&a);
  return r ? thrd_error : thrd_success;
}

int mtx_lock(mtx_t *m) {
  return pthread_mutex_lock((pthread_mutex_t *)m) ? thrd_error : thrd_success;
}

int mtx_trylock(mtx_t *m) {
  int r = pthread_mutex_trylock((pthread_mutex_t *)m);
  return r == EBUSY ? thrd_busy : r ? thrd_error : thrd_success;
}

int mtx_unlock(mtx_t *m) {
  return pthread_mutex_unlock((pthread_mutex_t *)m) ? thrd_error
                                                     : thrd_success;
}

void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) {
  return pthread_cond_init((pthread_cond_t *)c, NULL) ? thrd_error
                                                       : thrd_success;
}

int cnd_signal(cnd_t *c) {
  return pthread_cond_signal((pthread_cond_t *)c) ? thrd_error
                                                   : thrd_success;
}

int cnd_broadcast(cnd_t *c) {
  return pthread_cond_broadcast((pthread_cond_t *)c) ? thrd_error
                                                      : thrd_success;
}

int cnd_wait(cnd_t *c, mtx_t *m) {
  return pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m)
             ? thrd_error
             : thrd_success;
}

/* C11's deadline is TIME_UTC, pthread's default clock CLOCK_REALTIME. */
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m,
                  const struct timespec *restrict ts) {
  int r = pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m,
                                 ts);
  return r == ETIMEDOUT ? thrd_timedout : r ? thrd_error : thrd_success;
}

void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

void call_once(once_flag *flag, void (*fn)(void)) {
  pthread_once((pthread_once_t *)flag, fn);
}
