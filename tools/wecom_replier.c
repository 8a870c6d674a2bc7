/* The simulated customers' reply application (tools/wecom_replier.h). */
#include "wecom_replier.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wecom_sim.h"

typedef struct {
  kmq_proc_ctx_t *ctx;
  int u, seq;
  char user[64], kfid[64], msgid[96], text[96];
} kmq__reply_job_t;

struct kmq_wecom_replier_s {
  kmq_wecom_client_t *cl;
  pthread_mutex_t mu; /* q, head, len, stop */
  pthread_cond_t cv;
  kmq__reply_job_t q[KMQ_WECOM_REPLIER_QCAP];
  int head, len, stop;
  /* Counters only: relaxed atomics, read for reports. */
  atomic_llong sent, failed, foreign, duplicates;
  /* Per customer, the last seq answered. Written by the reply thread before
   * kmq_proc_ctx_complete, read by the worker running the customer's next
   * message: kmq runs that one only after the completion, and the
   * completion's hand-over (MPSC push, scheduler) orders the two. */
  int *last_done;
  int customers;
  int nthreads;
  pthread_t *th;
};

kmq_proc_result_t kmq_wecom_replier_on_message(const kmq_chat_msg_t *msg,
                                               kmq_proc_ctx_t *ctx,
                                               void *opaque) {
  kmq_wecom_replier_t *r = opaque;
  int u, seq;
  if (kmq_wecom_sim_parse_msgid(msg->message_id.ptr, &u, &seq) || u < 0 ||
      u >= r->customers) {
    atomic_fetch_add_explicit(&r->foreign, 1, memory_order_relaxed);
    kmq_proc_ctx_set_reason(ctx, "not a simulator msgid");
    return KMQ_PROC_FAIL;
  }
  if (seq <= r->last_done[u]) {
    atomic_fetch_add_explicit(&r->duplicates, 1, memory_order_relaxed);
    return KMQ_PROC_OK;
  }
  pthread_mutex_lock(&r->mu);
  if (r->len == KMQ_WECOM_REPLIER_QCAP) {
    pthread_mutex_unlock(&r->mu);
    kmq_proc_ctx_set_reason(ctx, "reply queue full");
    return KMQ_PROC_RETRY;
  }
  kmq__reply_job_t *j = &r->q[(r->head + r->len++) % KMQ_WECOM_REPLIER_QCAP];
  j->ctx = ctx;
  j->u = u;
  j->seq = seq;
  snprintf(j->user, sizeof(j->user), "%.*s", (int)msg->external_user_id.len,
           msg->external_user_id.ptr);
  snprintf(j->kfid, sizeof(j->kfid), "%.*s", (int)msg->open_kfid.len,
           msg->open_kfid.ptr);
  snprintf(j->msgid, sizeof(j->msgid), "re-%.*s", (int)msg->message_id.len,
           msg->message_id.ptr);
  kmq_wecom_sim_reply_text(u, seq, j->text, sizeof(j->text));
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return KMQ_PROC_ASYNC;
}

static void *kmq__replier_loop(void *opaque) {
  kmq_wecom_replier_t *r = opaque;
  char errstr[256];
  for (;;) {
    pthread_mutex_lock(&r->mu);
    while (!r->len && !r->stop)
      pthread_cond_wait(&r->cv, &r->mu);
    if (!r->len) {
      pthread_mutex_unlock(&r->mu);
      return NULL;
    }
    kmq__reply_job_t j = r->q[r->head];
    r->head = (r->head + 1) % KMQ_WECOM_REPLIER_QCAP;
    r->len--;
    pthread_mutex_unlock(&r->mu);
    kmq_wecom_api_err_t err =
        kmq_wecom_send_text(r->cl, j.user, j.kfid, j.text, j.msgid, NULL, 0,
                            NULL, errstr, sizeof(errstr));
    if (err)
      kmq_proc_ctx_set_reason(j.ctx, "send_msg: %s", errstr);
    else
      r->last_done[j.u] = j.seq;
    atomic_fetch_add_explicit(err ? &r->failed : &r->sent, 1,
                              memory_order_relaxed);
    kmq_proc_ctx_complete(j.ctx, err ? KMQ_PROC_RETRY : KMQ_PROC_OK);
  }
}

kmq_wecom_replier_t *kmq_wecom_replier_new(kmq_wecom_client_t *cl,
                                           int threads, int customers,
                                           char *errstr, size_t errstr_size) {
  kmq_wecom_replier_t *r = calloc(1, sizeof(*r));
  if (!r || threads < 1 || customers < 1 || !cl ||
      !(r->th = calloc((size_t)threads, sizeof(*r->th))) ||
      !(r->last_done = malloc(sizeof(int) * (size_t)customers))) {
    snprintf(errstr, errstr_size,
             "replier: threads, customers >= 1, client, memory");
    if (r)
      free(r->th);
    free(r);
    return NULL;
  }
  r->customers = customers;
  for (int u = 0; u < customers; u++)
    r->last_done[u] = -1;
  r->cl = cl;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  for (; r->nthreads < threads; r->nthreads++)
    if (pthread_create(&r->th[r->nthreads], NULL, kmq__replier_loop, r)) {
      snprintf(errstr, errstr_size, "replier: cannot start a thread");
      kmq_wecom_replier_destroy(r);
      return NULL;
    }
  return r;
}

void kmq_wecom_replier_destroy(kmq_wecom_replier_t *r) {
  if (!r)
    return;
  pthread_mutex_lock(&r->mu);
  r->stop = 1;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  for (int i = 0; i < r->nthreads; i++)
    pthread_join(r->th[i], NULL);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r->th);
  free(r->last_done);
  free(r);
}

void kmq_wecom_replier_counts(const kmq_wecom_replier_t *r,
                              kmq_wecom_replier_counts_t *out) {
  kmq_wecom_replier_t *m = (kmq_wecom_replier_t *)r; /* atomics only */
  out->sent = atomic_load_explicit(&m->sent, memory_order_relaxed);
  out->failed = atomic_load_explicit(&m->failed, memory_order_relaxed);
  out->duplicates =
      atomic_load_explicit(&m->duplicates, memory_order_relaxed);
  out->foreign = atomic_load_explicit(&m->foreign, memory_order_relaxed);
}
