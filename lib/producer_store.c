/* The producer's side of the fallback store: see producer_store.h. */
#include "lib/producer_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/fallback_int.h"
#include "lib/log.h"
#include "lib/util.h"

/* user ids are stored as C strings, cut to the store's column width */
#define KMQ__USER_MAX 191

typedef struct kmq__sticky_s {
  struct kmq__sticky_s *next;
  /* Failed deliveries of the user still on their way through the DLQ: the
   * user is not released while one may still land in the store. */
  int64_t failing;
  char user[];
} kmq__sticky_t;

struct kmq__pstore_s {
  kmq__log_sink_t log; /* the conf's log hook */
  kmq_fallback_t *fb;
  kmq_compensator_t *comp;
  pthread_rwlock_t lock; /* the set below */
  kmq__sticky_t **bucket;
  size_t nbuckets;
  /* Count of the set: read without the lock by senders so that an empty set
   * costs nothing; relaxed: a send that races with a user becoming sticky
   * is one that happened just before it. */
  atomic_llong nsticky;
  atomic_llong seq; /* message ids generated for messages without msg_id */
  int64_t started_ms;
};

struct kmq__pstore_msg_s {
  char *topic;
  void *key, *value;
  size_t key_len, value_len;
  rd_kafka_headers_t *headers;
  int32_t partition;
  int64_t created_at;
  rd_kafka_resp_err_t err;
};

static uint64_t kmq__hash(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

/* @locks_required lock (either mode) */
static kmq__sticky_t **kmq__find(kmq__pstore_t *ps, const char *user) {
  kmq__sticky_t **pp = &ps->bucket[kmq__hash(user) % ps->nbuckets];
  while (*pp && strcmp((*pp)->user, user))
    pp = &(*pp)->next;
  return pp;
}

/* Adds user (if absent) and returns its entry, NULL when out of memory.
 * @locks_required write lock. Grows the table past one entry per bucket. */
static kmq__sticky_t *kmq__add(kmq__pstore_t *ps, const char *user) {
  kmq__sticky_t **pp = kmq__find(ps, user);
  if (*pp)
    return *pp;
  size_t n = strlen(user);
  kmq__sticky_t *e = malloc(sizeof(*e) + n + 1);
  if (!e) {
    kmq__log_to(&ps->log, "ERROR", "producer", "out of memory: user %s not kept in the "
             "store order", user);
    return NULL;
  }
  memcpy(e->user, user, n + 1);
  e->next = NULL;
  e->failing = 0;
  *pp = e;
  long long cnt = atomic_fetch_add_explicit(&ps->nsticky, 1,
                                            memory_order_relaxed) + 1;
  if ((size_t)cnt > ps->nbuckets) {
    size_t nb = ps->nbuckets * 2;
    kmq__sticky_t **b = calloc(nb, sizeof(*b));
    if (!b)
      return e; /* longer chains, still correct */
    for (size_t i = 0; i < ps->nbuckets; i++)
      for (kmq__sticky_t *x = ps->bucket[i], *nx; x; x = nx) {
        nx = x->next;
        size_t k = kmq__hash(x->user) % nb;
        x->next = b[k];
        b[k] = x;
      }
    free(ps->bucket);
    ps->bucket = b;
    ps->nbuckets = nb;
  }
  return e;
}

/* The user id of a key: a C string, cut to the column width. */
static void kmq__user(const void *key, size_t len, char *buf) {
  if (len > KMQ__USER_MAX)
    len = KMQ__USER_MAX;
  memcpy(buf, key ? key : "", key ? len : 0);
  buf[key ? len : 0] = '\0';
}

static void kmq__load_user(const char *user, void *opaque) {
  (void)kmq__add(opaque, user);
}

/* Releases user if nothing of theirs is failing or in the store.
 * failed_done: one of the user's failures reached its outcome.
 * @locality the compensator's, DLQ or producer poll thread */
static void kmq__release(kmq__pstore_t *ps, const char *user,
                         int failed_done) {
  char errstr[256];
  int64_t live = -1;
  pthread_rwlock_wrlock(&ps->lock);
  kmq__sticky_t **pp = kmq__find(ps, user);
  if (*pp && failed_done)
    (*pp)->failing--;
  if (*pp && (*pp)->failing <= 0 &&
      !kmq_fallback_user_pending(ps->fb, user, &live, errstr,
                                 sizeof(errstr)) &&
      live == 0) {
    kmq__sticky_t *x = *pp;
    *pp = x->next;
    free(x);
    atomic_fetch_sub_explicit(&ps->nsticky, 1, memory_order_relaxed);
  }
  pthread_rwlock_unlock(&ps->lock);
}

/* A row was replayed: release its user once the store has none left.
 * @locality the compensator's thread */
static void kmq__replayed(const kmq_fallback_entry_t *e, void *opaque) {
  kmq__release(opaque, e->user_id, 0);
}

kmq_err_t kmq__pstore_new(const kmq_conf_t *conf, kmq__pstore_t **out,
                          char *errstr, size_t errstr_size) {
  *out = NULL;
  if (!kmq_fallback_configured(conf))
    return KMQ_OK;
  const char *on = kmq_conf_get(conf, "kmq.fallback.compensator");
  if (strcmp(on, "on") && strcmp(on, "off")) {
    snprintf(errstr, errstr_size, "kmq.fallback.compensator must be on or "
                                  "off, not \"%s\"", on);
    return KMQ_ERR_CONF_INVALID;
  }
  kmq__pstore_t *ps = calloc(1, sizeof(*ps));
  if (!ps || !(ps->bucket = calloc(ps->nbuckets = 256, sizeof(*ps->bucket)))) {
    free(ps);
    snprintf(errstr, errstr_size, "out of memory");
    return KMQ_ERR_NOMEM;
  }
  pthread_rwlock_init(&ps->lock, NULL);
  ps->log = kmq__conf_hooks(conf)->log;
  ps->started_ms = kmq__wall_ms();
  ps->fb = kmq_fallback_new(conf, errstr, errstr_size);
  if (!ps->fb)
    goto fail;
  /* Users with rows left from before: their new messages queue behind. */
  if (kmq_fallback_pending_users(ps->fb, kmq__load_user, ps, errstr,
                                 errstr_size))
    goto fail;
  if (!strcmp(on, "on")) {
    ps->comp = kmq_compensator_new(conf, ps->fb, kmq__replayed, ps, errstr,
                                   errstr_size);
    if (!ps->comp || kmq_compensator_start(ps->comp)) {
      if (ps->comp)
        snprintf(errstr, errstr_size, "cannot start the compensator");
      goto fail;
    }
  }
  *out = ps;
  return KMQ_OK;
fail:
  kmq__pstore_destroy(ps);
  return KMQ_ERR_FALLBACK;
}

void kmq__pstore_destroy(kmq__pstore_t *ps) {
  if (!ps)
    return;
  kmq_compensator_destroy(ps->comp);
  kmq_fallback_destroy(ps->fb);
  for (size_t i = 0; i < ps->nbuckets; i++)
    for (kmq__sticky_t *x = ps->bucket[i], *nx; x; x = nx) {
      nx = x->next;
      free(x);
    }
  free(ps->bucket);
  pthread_rwlock_destroy(&ps->lock);
  free(ps);
}

/* message_id: the msg_id header, else one unique to this producer. */
static const char *kmq__mid(kmq__pstore_t *ps, const rd_kafka_headers_t *h,
                            char *buf, size_t size) {
  const void *v;
  size_t n;
  if (h && !rd_kafka_header_get_last(h, "msg_id", &v, &n) && v && n &&
      n < size) {
    memcpy(buf, v, n);
    buf[n] = '\0';
    return buf;
  }
  snprintf(buf, size, "kmq-%d-%lld-%lld", (int)getpid(),
           (long long)ps->started_ms,
           (long long)atomic_fetch_add_explicit(&ps->seq, 1,
                                                memory_order_relaxed));
  return buf;
}

static kmq_err_t kmq__put(kmq__pstore_t *ps, const char *topic,
                          const void *key, size_t key_len, const void *value,
                          size_t value_len, const rd_kafka_headers_t *h,
                          int32_t partition, int64_t created_at,
                          const char *error) {
  char user[KMQ__USER_MAX + 1], mid[256], type[64], errstr[512];
  const void *v;
  size_t n;
  const char *mt = NULL;
  if (h && !rd_kafka_header_get_last(h, "msg_type", &v, &n) && v &&
      n < sizeof(type)) {
    memcpy(type, v, n);
    type[n] = '\0';
    mt = type;
  }
  kmq__user(key, key_len, user);
  kmq_fallback_row_t row = {
      .message_id = kmq__mid(ps, h, mid, sizeof(mid)),
      .user_id = user,
      .msg_type = mt,
      .topic = topic,
      .key = key,
      .key_len = key_len,
      .value = value,
      .value_len = value_len,
      .headers = h,
      .partition = partition,
      .offset = -1,
      .source = "producer",
      .error = error,
      .created_at = created_at,
  };
  kmq_err_t err = kmq_fallback_put(ps->fb, &row, NULL, errstr, sizeof(errstr));
  if (err)
    kmq__log_to(&ps->log, "ERROR", "producer", "fallback store failed: %s", errstr);
  return err;
}

int kmq__pstore_send(kmq__pstore_t *ps, const char *topic,
                     const kmq_produce_msg_t *msg,
                     const rd_kafka_headers_t *hdrs, kmq_err_t *err) {
  if (!ps || atomic_load_explicit(&ps->nsticky, memory_order_relaxed) == 0)
    return 0;
  char user[KMQ__USER_MAX + 1];
  kmq__user(msg->key, msg->key_len, user);
  pthread_rwlock_rdlock(&ps->lock);
  int sticky = *kmq__find(ps, user) != NULL;
  if (sticky)
    *err = kmq__put(ps, topic, msg->key, msg->key_len, msg->value,
                    msg->value_len, hdrs, -1, kmq__wall_ms(),
                    "queued behind the user's stored messages");
  pthread_rwlock_unlock(&ps->lock);
  if (sticky && ps->comp && !*err)
    kmq_compensator_wake(ps->comp);
  return sticky;
}

kmq__pstore_msg_t *kmq__pstore_failed(kmq__pstore_t *ps,
                                      const rd_kafka_message_t *m) {
  char user[KMQ__USER_MAX + 1];
  kmq__user(m->key, m->key_len, user);
  pthread_rwlock_wrlock(&ps->lock);
  kmq__sticky_t *st = kmq__add(ps, user);
  if (st)
    st->failing++; /* until kmq__pstore_failed_done */
  pthread_rwlock_unlock(&ps->lock);
  kmq__pstore_msg_t *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  rd_kafka_headers_t *h = NULL;
  rd_kafka_message_headers(m, &h);
  /* The send time, so that the row sorts among the user's rows by when it
   * was sent, not by when it failed (message.timeout.ms later, after newer
   * messages of the user went to the store). rd_kafka_message_timestamp()
   * is -1 for a failed message; the latency since produce() is not. */
  int64_t lat_us = rd_kafka_message_latency(m);
  c->created_at = kmq__wall_ms() - (lat_us > 0 ? lat_us / 1000 : 0);
  c->topic = strdup(rd_kafka_topic_name(m->rkt));
  c->key = kmq__fb_memdup(m->key, m->key_len);
  c->key_len = m->key_len;
  c->value = kmq__fb_memdup(m->payload, m->len);
  c->value_len = m->len;
  c->headers = h ? rd_kafka_headers_copy(h) : NULL;
  c->partition = m->partition;
  c->err = m->err;
  if (!c->topic || !c->key || !c->value || (h && !c->headers)) {
    kmq__pstore_msg_free(c);
    kmq__release(ps, user, 1);
    return NULL;
  }
  return c;
}

kmq_err_t kmq__pstore_put_failed(kmq__pstore_t *ps,
                                 const kmq__pstore_msg_t *c) {
  kmq_err_t err = kmq__put(ps, c->topic, c->key, c->key_len, c->value,
                           c->value_len, c->headers, c->partition,
                           c->created_at, rd_kafka_err2str(c->err));
  if (!err && ps->comp)
    kmq_compensator_wake(ps->comp);
  return err;
}

void kmq__pstore_msg_free(kmq__pstore_msg_t *c) {
  if (!c)
    return;
  free(c->topic);
  free(c->key);
  free(c->value);
  if (c->headers)
    rd_kafka_headers_destroy(c->headers);
  free(c);
}

void kmq__pstore_failed_done(kmq__pstore_t *ps,
                             const kmq__pstore_msg_t *msg) {
  char user[KMQ__USER_MAX + 1];
  kmq__user(msg->key, msg->key_len, user);
  kmq__release(ps, user, 1);
}

kmq_fallback_t *kmq__pstore_fb(kmq__pstore_t *ps) { return ps->fb; }
kmq_compensator_t *kmq__pstore_comp(kmq__pstore_t *ps) { return ps->comp; }
int64_t kmq__pstore_sticky(kmq__pstore_t *ps) {
  return atomic_load_explicit(&ps->nsticky, memory_order_relaxed);
}
