/*
 * decode: kmq_msg_decode alone (no Kafka, no pipeline), on 1, 2, 4 threads
 * at once (--workers-list). Each thread decodes --messages envelopes (the
 * consume mode's: bench_envelope over --users users, padded to --size
 * bytes), cycling through a pool of 2 000 of them, and reads its own CPU
 * clock (CLOCK_THREAD_CPUTIME_ID). A row per thread count: decodes per
 * second over all threads (wall time from the start barrier to the last
 * thread's end) and CPU µs per decode (the threads' CPU over their
 * decodes).
 *
 * Why: in the consume mode the typed pipeline's workers spend more CPU per
 * message than raw + decode's single thread, for the same decode. This
 * tells whether decoding on two threads at once costs more per decode on
 * this machine (shared core or memory), apart from everything else the
 * pipeline does (bench/RESULTS.md).
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
} bench__decoder_t;

static int64_t bench__thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *bench__decode_main(void *arg) {
  bench__decoder_t *d = arg;
  bench__pool_t *p = d->pool;
  char errstr[256];
  kmq_chat_msg_t msg;
  pthread_barrier_wait(&p->start);
  int64_t t0 = bench__thread_cpu_ns();
  for (int64_t i = 0; i < p->per_thread; i++) {
    int k = (int)((d->first + i) % BENCH__POOL);
    if (kmq_msg_decode(p->dec, p->buf[k], p->len[k], &msg, errstr,
                       sizeof(errstr)))
      d->bad++;
    kmq_chat_msg_clear(&msg);
  }
  d->cpu_ns = bench__thread_cpu_ns() - t0;
  return NULL;
}

static int bench__decode_threads(const bench_opts_t *o, bench__pool_t *p,
                                 int nthreads, bench_run_t *run) {
  bench__decoder_t d[64];
  pthread_t th[64];
  if (nthreads < 1 || nthreads > 64)
    bench_die("decode: --workers-list values must be 1..64");
  pthread_barrier_init(&p->start, NULL, (unsigned)nthreads + 1);
  for (int t = 0; t < nthreads; t++) {
    d[t] = (bench__decoder_t){p, t * BENCH__POOL / nthreads, 0, 0};
    if (pthread_create(&th[t], NULL, bench__decode_main, &d[t]))
      bench_die("decode: cannot start a thread");
  }
  pthread_barrier_wait(&p->start);
  int64_t t0 = bench_now_us();
  int64_t cpu_ns = 0, bad = 0;
  for (int t = 0; t < nthreads; t++) {
    pthread_join(th[t], NULL);
    cpu_ns += d[t].cpu_ns;
    bad += d[t].bad;
  }
  int64_t t1 = bench_now_us();
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
  (void)o;
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
  /* Rotate the order between repetitions. */
  for (int i = 0; i < o->n_workers_list; i++)
    err |= bench__decode_threads(
        o, p, o->workers_list[(i + rep) % o->n_workers_list], run);
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
