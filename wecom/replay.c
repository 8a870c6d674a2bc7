/* Replay cache of the callback server (see wecom_int.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "wecom/wecom_int.h"

typedef struct {
  char sig[40];
  int64_t expires; /* 0: free */
} kmq__replay_slot_t;

struct kmq__replay_s {
  pthread_mutex_t lock;
  size_t n;
  kmq__replay_slot_t *slots;
};

kmq__replay_t *kmq__replay_new(size_t slots) {
  kmq__replay_t *r = calloc(1, sizeof(*r));
  if (!r)
    return NULL;
  if (!(r->slots = calloc(slots, sizeof(*r->slots)))) {
    free(r);
    return NULL;
  }
  r->n = slots;
  pthread_mutex_init(&r->lock, NULL);
  return r;
}

void kmq__replay_destroy(kmq__replay_t *r) {
  if (!r)
    return;
  pthread_mutex_destroy(&r->lock);
  free(r->slots);
  free(r);
}

kmq_wecom_err_t kmq__replay_add(kmq__replay_t *r, const char *sig,
                                int64_t expires, int64_t now) {
  kmq__replay_slot_t *free_slot = NULL;
  kmq_wecom_err_t err = KMQ_WECOM_OK;
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < r->n; i++) {
    kmq__replay_slot_t *s = &r->slots[i];
    if (s->expires && s->expires < now)
      s->expires = 0; /* outside the window: its replay is stale anyway */
    if (!s->expires) {
      if (!free_slot)
        free_slot = s;
      continue;
    }
    if (!memcmp(s->sig, sig, 40)) {
      err = KMQ_WECOM_ERR_REPLAYED;
      break;
    }
  }
  if (!err && !free_slot)
    err = KMQ_WECOM_ERR_NOMEM;
  if (!err) {
    memcpy(free_slot->sig, sig, 40);
    free_slot->expires = expires > 0 ? expires : 1;
  }
  pthread_mutex_unlock(&r->lock);
  return err;
}

void kmq__replay_forget(kmq__replay_t *r, const char *sig) {
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < r->n; i++)
    if (r->slots[i].expires && !memcmp(r->slots[i].sig, sig, 40)) {
      r->slots[i].expires = 0;
      break;
    }
  pthread_mutex_unlock(&r->lock);
}
