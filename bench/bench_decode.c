/*
 * decode: kmq_msg_decode alone (no Kafka, no pipeline), on 1, 2, 4 threads
 * at once (--workers-list). Each thread decodes --messages envelopes (the
 * consume mode's: bench_envelope over --users users, padded to --size
 * bytes), cycling through a pool of 2 000 of them (about 1 MB: warm in
 * the caches, unlike the pipeline's records), after one untimed pass over
 * the pool, and reads its own CPU clock (CLOCK_THREAD_CPUTIME_ID). A row
 * per thread count: decodes per second over all threads (from the first
 * thread's start to the last one's end) and CPU µs per decode (the
 * threads' CPU over their decodes).
 *
 * Why: in the consume mode the typed pipeline's workers spend more CPU per
 * message than raw + decode's single thread, for the same decode. This
 * tells whether decoders on two threads at once slow each other down on
 * this machine (a shared core, shared caches), apart from everything else
 * the pipeline does (bench/RESULTS.md).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "kmq/message.h"

#define BENCH__POOL 2000

typedef struct {
  char *buf[BENCH__POOL];
  size_t len[BENCH__POOL];
  kmq_msg_decoder_t *dec;
  int64_t per_thread;
  pthread_barrier_t start;
} bench__pool_t;

typedef struct {
  bench__pool_t *pool;
  int first; /* where in the pool this thread starts */
  int64_t cpu_ns, bad;
  int64_t t0_us, t1_us; /* wall clock of the timed loop */
} bench__decoder_t;

static int64_t bench__thread_cpu_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
    bench_die("decode: no thread CPU clock");
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Decodes n envelopes from the pool, starting at d->first; counts the bad
 * ones (none expected). */
static void bench__decode_n(bench__decoder_t *d, int64_t n) {
  bench__pool_t *p = d->pool;
  char errstr[256];
  kmq_chat_msg_t msg;
  for (int64_t i = 0; i < n; i++) {
    int k = (int)((d->first + i) % BENCH__POOL);
    if (kmq_msg_decode(p->dec, p->buf[k], p->len[k], &msg, errstr,
                       sizeof(errstr)))
      d->bad++;
    kmq_chat_msg_clear(&msg); /* valid after a failed decode (message.h) */
  }
}

static void *bench__decode_main(void *arg) {
  bench__decoder_t *d = arg;
  /* Untimed: the first pass warms the allocator and the caches, which
   * would otherwise count against whichever thread count runs first. */
  bench__decode_n(d, BENCH__POOL);
  pthread_barrier_wait(&d->pool->start);
  /* Each thread its own start and end: the one that set the barrier off
   * may be scheduled last on a busy machine. */
  d->t0_us = bench_now_us();
  int64_t c0 = bench__thread_cpu_ns();
  bench__decode_n(d, d->pool->per_thread);
  d->cpu_ns = bench__thread_cpu_ns() - c0;
  d->t1_us = bench_now_us();
  return NULL;
}

static int bench__decode_threads(bench__pool_t *p, int nthreads,
                                 bench_run_t *run) {
  bench__decoder_t d[64];
  pthread_t th[64];
  if (nthreads < 1 || nthreads > 64)
    bench_die("decode: --workers-list values must be 1..64");
  if (pthread_barrier_init(&p->start, NULL, (unsigned)nthreads))
    bench_die("decode: no barrier");
  for (int t = 0; t < nthreads; t++) {
    d[t] = (bench__decoder_t){.pool = p, .first = t * BENCH__POOL / nthreads};
    if (pthread_create(&th[t], NULL, bench__decode_main, &d[t]))
      bench_die("decode: cannot start a thread");
  }
  int64_t cpu_ns = 0, bad = 0, t0 = INT64_MAX, t1 = 0;
  for (int t = 0; t < nthreads; t++) {
    pthread_join(th[t], NULL);
    cpu_ns += d[t].cpu_ns;
    bad += d[t].bad;
    t0 = d[t].t0_us < t0 ? d[t].t0_us : t0;
    t1 = d[t].t1_us > t1 ? d[t].t1_us : t1;
  }
  pthread_barrier_destroy(&p->start);
  char phase[40];
  snprintf(phase, sizeof(phase), "threads=%d", nthreads);
  bench_row_t *row = bench_row_add(run, "kmq_msg_decode", phase);
  double n = (double)p->per_thread * nthreads;
  row->n = n;
  row->secs = (double)(t1 - t0) / 1e6;
  row->msg_s = row->secs > 0 ? n / row->secs : -1;
  row->mb_s = -1;
  bench_row_extra(row, "cpu_us_per_decode", (double)cpu_ns / 1e3 / n);
  if (bad) {
    bench_log("decode: %lld envelopes did not decode", (long long)bad);
    return -1;
  }
  return 0;
}

int bench_decode(const bench_opts_t *o, int rep, bench_run_t *run) {
  bench__pool_t *p = calloc(1, sizeof(*p));
  char errstr[512], buf[1 << 16];
  if (!p)
    bench_die("out of memory");
  kmq_conf_t *conf = kmq_conf_new();
  p->dec = kmq_msg_decoder_new(conf, errstr, sizeof(errstr));
  kmq_conf_destroy(conf);
  if (!p->dec)
    bench_die("decoder: %s", errstr);
  uint64_t rng = 0x2545F4914F6CDD1DULL;
  for (int i = 0; i < BENCH__POOL; i++) {
    size_t n = bench_envelope(i % o->users, i / o->users, -1, -1, o->size,
                              &rng, buf, sizeof(buf));
    if (!(p->buf[i] = malloc(n)))
      bench_die("out of memory");
    memcpy(p->buf[i], buf, n);
    p->len[i] = n;
  }
  p->per_thread = o->messages;
  int err = 0;
  /* The order rotates between repetitions, so that no thread count always
   * runs first (or right after the pool was built). */
  for (int i = 0; i < o->n_workers_list; i++)
    err |= bench__decode_threads(
        p, o->workers_list[(i + rep) % o->n_workers_list], run);
  for (int i = 0; i < BENCH__POOL; i++)
    free(p->buf[i]);
  kmq_msg_decoder_destroy(p->dec);
  free(p);
  if (err) {
    run->failed = 1;
    snprintf(run->note, sizeof(run->note), "envelopes did not decode");
  }
  return 0;
}
