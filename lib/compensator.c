/* Compensator: rounds of (claim heads, produce, wait for every report,
 * mark). See include/kmq/compensator.h. */
#include "kmq/compensator.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"

/* Outcome of one row of the round in progress. */
typedef struct {
  rd_kafka_resp_err_t err;
  int reported; /* delivery report received (or produce refused) */
} kmq__comp_slot_t;

struct kmq_compensator_s {
  kmq__log_sink_t log; /* the conf's log hook */
  kmq_fallback_t *fb;
  rd_kafka_t *rk;
  kmq_compensator_row_cb *cb;
  void *opaque;
  size_t batch;
  int64_t lease_ms, backoff_ms, backoff_max_ms, interval_ms, report_ms;
  unsigned int seed; /* rand_r state: jitter; only the round's thread */
  pthread_t thread;
  int running;
  pthread_mutex_t lock; /* stop, wake: the thread's sleep */
  pthread_cond_t cond;
  int stop, wake;
  /* Relaxed: metrics only. */
  atomic_llong rounds, claimed, delivered, retried, failed, lost_claims;
};

/* @locality the thread running the round (rd_kafka_flush serves reports) */
static void kmq__comp_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                         void *opaque) {
  (void)rk;
  (void)opaque;
  kmq__comp_slot_t *s = m->_private;
  s->err = m->err;
  s->reported = 1;
}

kmq_compensator_t *kmq_compensator_new(const kmq_conf_t *conf,
                                       kmq_fallback_t *fb,
                                       kmq_compensator_row_cb *cb,
                                       void *opaque, char *errstr,
                                       size_t errstr_size) {
  if (!fb) {
    snprintf(errstr, errstr_size, "the compensator needs a store");
    return NULL;
  }
  kmq_compensator_t *c = calloc(1, sizeof(*c));
  if (!c) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  c->log = kmq__conf_hooks(conf)->log;
  c->fb = fb;
  c->cb = cb;
  c->opaque = opaque;
  c->batch = (size_t)kmq_conf_get_int(conf, "kmq.fallback.batch");
  c->lease_ms = kmq_conf_get_int(conf, "kmq.fallback.claim.ms");
  c->backoff_ms = kmq_conf_get_int(conf, "kmq.fallback.backoff.ms");
  c->backoff_max_ms = kmq_conf_get_int(conf, "kmq.fallback.backoff.max.ms");
  c->interval_ms = kmq_conf_get_int(conf, "kmq.fallback.interval.ms");
  c->seed = (unsigned int)kmq__mono_ms() ^ (unsigned int)(uintptr_t)c;
  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_PRODUCER, errstr, errstr_size);
  if (!rc)
    goto fail_conf;
  /* The round waits for every report: at most message.timeout.ms after the
   * last produce (librdkafka fails what it could not deliver by then). */
  char mt[32];
  size_t mts = sizeof(mt);
  c->report_ms = 30000;
  if (rd_kafka_conf_get(rc, "message.timeout.ms", mt, &mts) ==
      RD_KAFKA_CONF_OK)
    c->report_ms = strtoll(mt, NULL, 10);
  c->report_ms += 5000;
  rd_kafka_conf_set_dr_msg_cb(rc, kmq__comp_dr);
  c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, errstr_size);
  if (!c->rk) {
    rd_kafka_conf_destroy(rc);
    goto fail_conf;
  }
  pthread_mutex_init(&c->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cond, &ca);
  pthread_condattr_destroy(&ca);
  return c;
fail_conf:
  free(c);
  return NULL;
}

/* Backoff before attempt retry_count + 1: doubled per attempt, capped, then
 * jittered into [d/2, d]. */
static int64_t kmq__comp_backoff(kmq_compensator_t *c, int retry_count) {
  int64_t d = c->backoff_ms;
  for (int i = 0; i < retry_count && d < c->backoff_max_ms; i++)
    d *= 2;
  if (d > c->backoff_max_ms)
    d = c->backoff_max_ms;
  return d / 2 + (d > 1 ? rand_r(&c->seed) % (d / 2 + 1) : 0);
}

/* e's delivery attempt failed: backoff, or failed at max retries.
 * @locality the round's thread */
static void kmq__comp_retry(kmq_compensator_t *c,
                            const kmq_fallback_entry_t *e,
                            rd_kafka_resp_err_t err) {
  char errstr[512];
  int gave_up = 0;
  kmq_err_t merr = kmq_fallback_retry(
      c->fb, e->id, kmq__wall_ms() + kmq__comp_backoff(c, e->retry_count),
      rd_kafka_err2str(err), &gave_up, errstr, sizeof(errstr));
  if (!merr) {
    atomic_fetch_add_explicit(&c->retried, 1, memory_order_relaxed);
    if (gave_up) {
      atomic_fetch_add_explicit(&c->failed, 1, memory_order_relaxed);
      kmq__log_to(&c->log, "ERROR", "compensator",
               "message %s of user %s failed after %d attempts (%s): kept in "
               "the store as failed",
               e->message_id, e->user_id, e->retry_count + 1,
               rd_kafka_err2str(err));
    }
  } else if (merr == KMQ_ERR_NOT_FOUND) {
    atomic_fetch_add_explicit(&c->lost_claims, 1, memory_order_relaxed);
  } else {
    /* The lease will end and the row be tried again. */
    kmq__log_to(&c->log, "ERROR", "compensator", "cannot mark row %lld: %s",
             (long long)e->id, errstr);
  }
}

/* Marks the delivered rows of the round success in one transaction, then
 * tells the callback. @locality the round's thread */
static void kmq__comp_done(kmq_compensator_t *c, kmq_fallback_entry_t *e,
                           const int64_t *ids, size_t n, size_t nok) {
  char errstr[512];
  size_t marked = 0;
  if (!nok)
    return;
  kmq_err_t err =
      kmq_fallback_done_many(c->fb, ids, nok, &marked, errstr, sizeof(errstr));
  if (err) {
    /* Delivered but not marked: replayed again after the lease (at least
     * once). */
    kmq__log_to(&c->log, "ERROR", "compensator", "cannot mark %zu delivered rows: %s",
             nok, errstr);
    return;
  }
  atomic_fetch_add_explicit(&c->delivered, (long long)marked,
                            memory_order_relaxed);
  if (marked < nok) {
    atomic_fetch_add_explicit(&c->lost_claims, (long long)(nok - marked),
                              memory_order_relaxed);
    kmq__log_to(&c->log, "WARN", "compensator", "%zu leases ended before their mark: "
             "another compensator replays those rows", nok - marked);
  }
  /* The callback re-checks the store itself, so calling it for a row whose
   * mark was refused is harmless. */
  for (size_t i = 0; c->cb && i < n; i++)
    for (size_t k = 0; k < nok; k++)
      if (ids[k] == e[i].id) {
        c->cb(&e[i], c->opaque);
        break;
      }
}

/* One round. *claimed = rows it claimed. Returns KMQ_ERR_FALLBACK when the
 * claim failed. @locality the round's thread */
static kmq_err_t kmq__comp_round(kmq_compensator_t *c, size_t *claimed) {
  char errstr[512];
  kmq_fallback_entry_t *e = NULL;
  size_t n = 0;
  *claimed = 0;
  kmq_err_t err =
      kmq_fallback_claim(c->fb, c->batch, c->lease_ms, &e, &n, errstr,
                         sizeof(errstr));
  if (err) {
    kmq__log_to(&c->log, "ERROR", "compensator", "claim failed: %s", errstr);
    return err;
  }
  if (!n)
    return KMQ_OK;
  *claimed = n;
  atomic_fetch_add_explicit(&c->rounds, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->claimed, (long long)n, memory_order_relaxed);
  kmq__comp_slot_t *slot = calloc(n, sizeof(*slot));
  if (!slot) {
    kmq_fallback_entries_free(e, n);
    return KMQ_ERR_NOMEM; /* the leases end; replayed later */
  }
  for (size_t i = 0; i < n; i++) {
    rd_kafka_headers_t *h =
        e[i].headers_len
            ? kmq_fallback_headers_unpack(e[i].headers, e[i].headers_len)
            : NULL;
    if (e[i].headers_len && !h) {
      slot[i] = (kmq__comp_slot_t){RD_KAFKA_RESP_ERR__BAD_MSG, 1};
      continue;
    }
    rd_kafka_resp_err_t perr = rd_kafka_producev(
        c->rk, RD_KAFKA_V_TOPIC(e[i].topic),
        RD_KAFKA_V_KEY(e[i].key, e[i].key_len),
        RD_KAFKA_V_VALUE(e[i].value, e[i].value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
        RD_KAFKA_V_OPAQUE(&slot[i]), RD_KAFKA_V_END);
    if (perr) {
      if (h)
        rd_kafka_headers_destroy(h); /* not taken on failure */
      slot[i] = (kmq__comp_slot_t){perr, 1};
    }
  }
  /* Every queued row gets its report within message.timeout.ms; the flush
   * serves them (this thread owns the instance's callbacks). Past the bound,
   * what is left is purged and reported (as a failure: tried again later),
   * so no report can arrive after the slots are freed. */
  kmq__flush_then_purge(c->rk, kmq__mono_ms() + c->report_ms);
  if (rd_kafka_outq_len(c->rk) > 0) {
    /* Reports still owed even after the purge: the slots must outlive them.
     * Leaked (never expected; logged), the rows replayed after their lease. */
    kmq__log_to(&c->log, "ERROR", "compensator", "%d reports still outstanding after the "
             "purge: %zu rows left to their lease", rd_kafka_outq_len(c->rk),
             n);
    kmq_fallback_entries_free(e, n);
    return KMQ_OK;
  }
  int64_t *ok = malloc(n * sizeof(*ok));
  size_t nok = 0;
  for (size_t i = 0; i < n; i++) {
    if (!slot[i].reported)
      continue;
    if (slot[i].err)
      kmq__comp_retry(c, &e[i], slot[i].err);
    else if (ok)
      ok[nok++] = e[i].id;
  }
  kmq__comp_done(c, e, ok, n, nok); /* without ok: the leases end, replayed */
  free(ok);
  kmq_fallback_entries_free(e, n);
  free(slot);
  return KMQ_OK;
}

kmq_err_t kmq_compensator_run_once(kmq_compensator_t *c, int timeout_ms) {
  if (c->running)
    return KMQ_ERR_STATE;
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  for (;;) {
    size_t claimed;
    kmq_err_t err = kmq__comp_round(c, &claimed);
    if (err)
      return err;
    if (!claimed)
      return KMQ_OK;
    if (kmq__mono_ms() >= deadline)
      return KMQ_ERR_TIMED_OUT;
  }
}

static void *kmq__comp_main(void *opaque) {
  kmq_compensator_t *c = opaque;
  pthread_mutex_lock(&c->lock);
  while (!c->stop) {
    pthread_mutex_unlock(&c->lock);
    size_t claimed = 0;
    kmq__comp_round(c, &claimed);
    pthread_mutex_lock(&c->lock);
    if (claimed || c->stop)
      continue; /* more may be due at once */
    if (!c->wake) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t ns = ts.tv_nsec + (c->interval_ms % 1000) * 1000000;
      ts.tv_sec += c->interval_ms / 1000 + ns / 1000000000;
      ts.tv_nsec = ns % 1000000000;
      pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    c->wake = 0;
  }
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

kmq_err_t kmq_compensator_start(kmq_compensator_t *c) {
  if (c->running)
    return KMQ_ERR_STATE;
  c->stop = 0;
  if (pthread_create(&c->thread, NULL, kmq__comp_main, c))
    return KMQ_ERR_NOMEM;
  c->running = 1;
  return KMQ_OK;
}

void kmq_compensator_wake(kmq_compensator_t *c) {
  pthread_mutex_lock(&c->lock);
  c->wake = 1;
  pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->lock);
}

void kmq_compensator_stats(const kmq_compensator_t *c,
                           kmq_compensator_stats_t *out) {
#define KMQ__LD(f) atomic_load_explicit(&c->f, memory_order_relaxed)
  out->rounds = KMQ__LD(rounds);
  out->claimed = KMQ__LD(claimed);
  out->delivered = KMQ__LD(delivered);
  out->retried = KMQ__LD(retried);
  out->failed = KMQ__LD(failed);
  out->lost_claims = KMQ__LD(lost_claims);
#undef KMQ__LD
}

void kmq_compensator_destroy(kmq_compensator_t *c) {
  if (!c)
    return;
  if (c->running) {
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
  }
  /* Rounds end with every report served: nothing of ours is queued. */
  rd_kafka_destroy(c->rk);
  pthread_cond_destroy(&c->cond);
  pthread_mutex_destroy(&c->lock);
  free(c);
}
