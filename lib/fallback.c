/* Fallback store: the backend-independent part (configuration, argument
 * checks, serialisation on one connection, counters, the DLQ hook, header
 * packing). The SQL is in fallback_sqlite.c and fallback_mariadb.c. */
#include "kmq/fallback.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "lib/fallback_int.h"
#include "lib/log.h"
#include "lib/util.h"

struct kmq_fallback_s {
  kmq__log_sink_t log; /* the conf's log hook */
  const kmq__fb_ops_t *ops;
  void *db;
  /* One connection per handle: SQLite's and libmariadb's connections are not
   * for concurrent use, so every call holds this. */
  pthread_mutex_t lock;
  int max_retries;
  char token[96]; /* claimed_by of this handle: host, pid, random */
  /* Relaxed: metrics only, nothing is published through them. */
  atomic_llong stored, compensated, failed;
};

const char *kmq__fb_status_name(kmq_fallback_status_t s) {
  switch (s) {
  case KMQ_FALLBACK_PENDING:
    return "pending";
  case KMQ_FALLBACK_RETRYING:
    return "retrying";
  case KMQ_FALLBACK_SUCCESS:
    return "success";
  case KMQ_FALLBACK_FAILED:
    return "failed";
  }
  return "pending";
}

void *kmq__fb_memdup(const void *p, size_t n) {
  char *d = malloc(n + 1);
  if (!d)
    return NULL;
  if (n)
    memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

char *kmq__fb_idlist(const int64_t *ids, size_t n) {
  char *s = malloc(n * 21 + 1), *o = s;
  if (!s)
    return NULL;
  *o = '\0';
  for (size_t i = 0; i < n; i++)
    o += sprintf(o, i ? ",%lld" : "%lld", (long long)ids[i]);
  return s;
}

int kmq_fallback_configured(const kmq_conf_t *conf) {
  const char *b = kmq_conf_get(conf, "kmq.fallback.backend");
  return b && strcmp(b, "none") != 0;
}

kmq_fallback_t *kmq_fallback_new(const kmq_conf_t *conf, char *errstr,
                                 size_t errstr_size) {
  const char *b = kmq_conf_get(conf, "kmq.fallback.backend");
  const kmq__fb_ops_t *ops;
  void *db;
  if (!b || !strcmp(b, "none")) {
    snprintf(errstr, errstr_size, "no fallback store: kmq.fallback.backend "
                                  "is \"none\"");
    return NULL;
  } else if (!strcmp(b, "sqlite")) {
    ops = &kmq__fb_sqlite_ops;
    db = kmq__fb_sqlite_open(kmq_conf_get(conf, "kmq.fallback.path"), errstr,
                             errstr_size);
  } else if (!strcmp(b, "mysql")) {
    const char *url = kmq_conf_get(conf, "kmq.fallback.url");
    if (!url) {
      snprintf(errstr, errstr_size, "kmq.fallback.backend=mysql needs "
                                    "kmq.fallback.url");
      return NULL;
    }
    ops = &kmq__fb_mariadb_ops;
    db = kmq__fb_mariadb_open(url, errstr, errstr_size);
  } else {
    snprintf(errstr, errstr_size, "kmq.fallback.backend must be sqlite, "
                                  "mysql or none, not \"%s\"", b);
    return NULL;
  }
  if (!db)
    return NULL;
  kmq_fallback_t *fb = calloc(1, sizeof(*fb));
  if (fb)
    fb->log = kmq__conf_hooks(conf)->log;
  if (!fb) {
    ops->close(db);
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  fb->ops = ops;
  fb->db = db;
  fb->max_retries = (int)kmq_conf_get_int(conf, "kmq.fallback.max.retries");
  pthread_mutex_init(&fb->lock, NULL);
  /* Unique among every process that may share the database: a crashed
   * claimer's token is never reused. */
  char host[48] = "host";
  gethostname(host, sizeof(host) - 1);
  uint64_t rnd = 0;
  if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
    rnd = (uint64_t)kmq__mono_ms() ^ ((uint64_t)(uintptr_t)fb << 16);
  snprintf(fb->token, sizeof(fb->token), "%.47s-%d-%016llx", host,
           (int)getpid(), (unsigned long long)rnd);
  return fb;
}

void kmq_fallback_destroy(kmq_fallback_t *fb) {
  if (!fb)
    return;
  fb->ops->close(fb->db);
  pthread_mutex_destroy(&fb->lock);
  free(fb);
}

kmq_err_t kmq_fallback_put(kmq_fallback_t *fb, const kmq_fallback_row_t *row,
                           int *duplicate, char *errstr, size_t errstr_size) {
  int dup = 0;
  if (duplicate)
    *duplicate = 0;
  if (!fb || !row || !row->message_id || !*row->message_id ||
      !row->user_id || !row->topic || !*row->topic || !row->source) {
    snprintf(errstr, errstr_size, "message_id, user_id, topic and source "
                                  "are required");
    return KMQ_ERR_INVALID_ARG;
  }
  size_t hlen = 0;
  void *h = NULL;
  if (row->headers && rd_kafka_header_cnt(row->headers) > 0) {
    h = kmq_fallback_headers_pack(row->headers, &hlen);
    if (!h) {
      snprintf(errstr, errstr_size, "out of memory");
      return KMQ_ERR_NOMEM;
    }
  }
  kmq__fb_put_t p = {row, h, hlen, fb->max_retries, kmq__wall_ms()};
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err = fb->ops->put(fb->db, &p, &dup, errstr, errstr_size);
  pthread_mutex_unlock(&fb->lock);
  free(h);
  if (!err && !dup)
    atomic_fetch_add_explicit(&fb->stored, 1, memory_order_relaxed);
  if (duplicate)
    *duplicate = dup;
  return err;
}

void kmq_fallback_entries_free(kmq_fallback_entry_t *e, size_t n) {
  if (!e)
    return;
  for (size_t i = 0; i < n; i++) {
    free(e[i].message_id);
    free(e[i].user_id);
    free(e[i].topic);
    free(e[i].source);
    free(e[i].key);
    free(e[i].value);
    free(e[i].headers);
  }
  free(e);
}

kmq_err_t kmq_fallback_claim(kmq_fallback_t *fb, size_t max, int64_t lease_ms,
                             kmq_fallback_entry_t **out, size_t *n,
                             char *errstr, size_t errstr_size) {
  *out = NULL;
  *n = 0;
  if (!max)
    return KMQ_OK;
  kmq_fallback_entry_t *e = calloc(max, sizeof(*e));
  if (!e) {
    snprintf(errstr, errstr_size, "out of memory");
    return KMQ_ERR_NOMEM;
  }
  size_t got = 0;
  int64_t now = kmq__wall_ms();
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err = fb->ops->claim(fb->db, fb->token, now, now + lease_ms, max,
                                 e, &got, errstr, errstr_size);
  pthread_mutex_unlock(&fb->lock);
  if (err || !got) {
    kmq_fallback_entries_free(e, got);
    return err;
  }
  *out = e;
  *n = got;
  return KMQ_OK;
}

kmq_err_t kmq_fallback_done_many(kmq_fallback_t *fb, const int64_t *ids,
                                 size_t n, size_t *marked, char *errstr,
                                 size_t errstr_size) {
  size_t m = 0;
  kmq_err_t err = KMQ_OK;
  if (n) {
    pthread_mutex_lock(&fb->lock);
    err = fb->ops->done(fb->db, fb->token, ids, n, kmq__wall_ms(), &m, errstr,
                        errstr_size);
    pthread_mutex_unlock(&fb->lock);
  }
  if (!err)
    atomic_fetch_add_explicit(&fb->compensated, (long long)m,
                              memory_order_relaxed);
  if (marked)
    *marked = err ? 0 : m;
  return err;
}

kmq_err_t kmq_fallback_done(kmq_fallback_t *fb, int64_t id, char *errstr,
                            size_t errstr_size) {
  size_t m;
  kmq_err_t err = kmq_fallback_done_many(fb, &id, 1, &m, errstr, errstr_size);
  if (!err && !m) {
    snprintf(errstr, errstr_size, "row %lld is not claimed by this store",
             (long long)id);
    return KMQ_ERR_NOT_FOUND;
  }
  return err;
}

kmq_err_t kmq_fallback_retry(kmq_fallback_t *fb, int64_t id,
                             int64_t next_retry_at, const char *error,
                             int *gave_up, char *errstr, size_t errstr_size) {
  int g = 0;
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err = fb->ops->retry(fb->db, fb->token, id, kmq__wall_ms(),
                                 next_retry_at, error ? error : "", &g, errstr,
                                 errstr_size);
  pthread_mutex_unlock(&fb->lock);
  if (!err && g)
    atomic_fetch_add_explicit(&fb->failed, 1, memory_order_relaxed);
  if (gave_up)
    *gave_up = !err && g;
  return err;
}

kmq_err_t kmq_fallback_user_pending(kmq_fallback_t *fb, const char *user_id,
                                    int64_t *pending, char *errstr,
                                    size_t errstr_size) {
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err =
      fb->ops->user_pending(fb->db, user_id, pending, errstr, errstr_size);
  pthread_mutex_unlock(&fb->lock);
  return err;
}

kmq_err_t kmq_fallback_pending_users(kmq_fallback_t *fb,
                                     void (*cb)(const char *, void *),
                                     void *opaque, char *errstr,
                                     size_t errstr_size) {
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err =
      fb->ops->pending_users(fb->db, cb, opaque, errstr, errstr_size);
  pthread_mutex_unlock(&fb->lock);
  return err;
}

void kmq_fallback_stats(kmq_fallback_t *fb, kmq_fallback_stats_t *out) {
  out->stored = atomic_load_explicit(&fb->stored, memory_order_relaxed);
  out->compensated =
      atomic_load_explicit(&fb->compensated, memory_order_relaxed);
  out->failed = atomic_load_explicit(&fb->failed, memory_order_relaxed);
  int64_t pending = -1, oldest = 0;
  char errstr[256];
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err = fb->ops->pending_stats(fb->db, &pending, &oldest, errstr,
                                         sizeof(errstr));
  pthread_mutex_unlock(&fb->lock);
  if (err) {
    out->pending = -1;
    out->oldest_pending_age_seconds = -1;
    return;
  }
  out->pending = pending;
  int64_t age = oldest ? (kmq__wall_ms() - oldest) / 1000 : 0;
  out->oldest_pending_age_seconds = age > 0 ? age : 0;
}

/* kmq_fallback_counts: one row per status. */
static void kmq__counts_row(const char *const *v, const size_t *len, int n,
                            void *opaque) {
  (void)len;
  kmq_fallback_counts_t *out = opaque;
  if (n < 3 || !v[0])
    return;
  for (int s = KMQ_FALLBACK_PENDING; s <= KMQ_FALLBACK_FAILED; s++)
    if (!strcmp(v[0], kmq__fb_status_name((kmq_fallback_status_t)s))) {
      out->count[s] = v[1] ? strtoll(v[1], NULL, 10) : 0;
      int64_t oldest = v[2] ? strtoll(v[2], NULL, 10) : 0;
      if (s <= KMQ_FALLBACK_RETRYING && oldest &&
          (!out->oldest_live_created_at ||
           oldest < out->oldest_live_created_at))
        out->oldest_live_created_at = oldest;
    }
}

kmq_err_t kmq_fallback_counts(kmq_fallback_t *fb, const char *user_id,
                              kmq_fallback_counts_t *out, char *errstr,
                              size_t errstr_size) {
  memset(out, 0, sizeof(*out));
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err = fb->ops->select(
      fb->db,
      "SELECT status, COUNT(*), MIN(created_at) FROM kafka_fallback_messages "
      "WHERE %s GROUP BY status",
      user_id, kmq__counts_row, out, errstr, errstr_size);
  pthread_mutex_unlock(&fb->lock);
  return err;
}

typedef struct {
  void (*cb)(const kmq_fallback_view_t *, void *);
  void *opaque;
} kmq__list_t;

static char *kmq__cstr(const char *v, size_t n) {
  return v ? kmq__fb_memdup(v, n) : NULL;
}

static void kmq__list_row(const char *const *v, const size_t *len, int n,
                          void *opaque) {
  kmq__list_t *l = opaque;
  if (n < 16)
    return;
#define KMQ__I(i) (v[i] ? strtoll(v[i], NULL, 10) : 0)
  /* Text columns may come as blobs (MariaDB VARBINARY): NUL-terminated
   * copies. */
  char *mid = kmq__cstr(v[1], len[1]), *uid = kmq__cstr(v[2], len[2]),
       *topic = kmq__cstr(v[3], len[3]), *src = kmq__cstr(v[4], len[4]),
       *st = kmq__cstr(v[5], len[5]), *er = kmq__cstr(v[6], len[6]);
  kmq_fallback_view_t r = {
      .id = KMQ__I(0),
      .message_id = mid ? mid : "",
      .user_id = uid ? uid : "",
      .topic = topic ? topic : "",
      .source = src ? src : "",
      .status = st ? st : "",
      .error = er,
      .key = v[7],
      .key_len = len[7],
      .value = v[8],
      .value_len = len[8],
      .partition = (int32_t)KMQ__I(9),
      .offset = KMQ__I(10),
      .retry_count = (int)KMQ__I(11),
      .max_retries = (int)KMQ__I(12),
      .created_at = KMQ__I(13),
      .updated_at = KMQ__I(14),
      .next_retry_at = KMQ__I(15),
  };
#undef KMQ__I
  l->cb(&r, l->opaque);
  free(mid);
  free(uid);
  free(topic);
  free(src);
  free(st);
  free(er);
}

kmq_err_t kmq_fallback_list(kmq_fallback_t *fb, int status,
                            const char *user_id, size_t max,
                            void (*cb)(const kmq_fallback_view_t *row,
                                       void *opaque),
                            void *opaque, char *errstr, size_t errstr_size) {
  if (status < -1 || status > KMQ_FALLBACK_FAILED) {
    snprintf(errstr, errstr_size, "no such status %d", status);
    return KMQ_ERR_INVALID_ARG;
  }
  /* The status is one of four fixed names, the limit a number: only the
   * user needs quoting, which the backend does (%s -> its condition). */
  char fmt[768];
  snprintf(fmt, sizeof(fmt),
           "SELECT id, message_id, user_id, topic, source, status, "
           "error_message, msg_key, content, orig_partition, orig_offset, "
           "retry_count, max_retries, created_at, updated_at, next_retry_at "
           "FROM kafka_fallback_messages WHERE %%s%s%s%s ORDER BY "
           "created_at, id LIMIT %llu",
           status >= 0 ? " AND status = '" : "",
           status >= 0 ? kmq__fb_status_name((kmq_fallback_status_t)status)
                       : "",
           status >= 0 ? "'" : "",
           (unsigned long long)(max > (size_t)INT64_MAX ? INT64_MAX : max));
  kmq__list_t l = {cb, opaque};
  pthread_mutex_lock(&fb->lock);
  kmq_err_t err =
      fb->ops->select(fb->db, fmt, user_id, kmq__list_row, &l, errstr,
                      errstr_size);
  pthread_mutex_unlock(&fb->lock);
  return err;
}

/* Value of header name as a NUL-terminated copy in buf, or NULL. */
static const char *kmq__hdr(const rd_kafka_headers_t *h, const char *name,
                            char *buf, size_t size) {
  const void *v;
  size_t n;
  if (!h || rd_kafka_header_get_last(h, name, &v, &n) || !v)
    return NULL;
  if (n >= size)
    n = size - 1;
  memcpy(buf, v, n);
  buf[n] = '\0';
  return buf;
}

kmq_err_t kmq_fallback_hook(const kmq_fallback_record_t *rec, void *opaque) {
  kmq_fallback_t *fb = opaque;
  char mid[192], user[192], type[64], errstr[256];
  if (!kmq__hdr(rec->headers, "msg_id", mid, sizeof(mid))) {
    /* No id: the digest of what is stored makes a repeated call with the
     * same record a duplicate rather than a second row. */
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(c, rec->key ? rec->key : "", rec->key_len) ||
        !EVP_DigestUpdate(c, rec->value ? rec->value : "", rec->value_len) ||
        !EVP_DigestFinal_ex(c, md, &mdlen)) {
      EVP_MD_CTX_free(c);
      return KMQ_ERR_NOMEM;
    }
    EVP_MD_CTX_free(c);
    int o = snprintf(mid, sizeof(mid), "dlq-");
    for (unsigned i = 0; i < mdlen; i++)
      o += snprintf(mid + o, sizeof(mid) - (size_t)o, "%02x", md[i]);
  }
  size_t ul = rec->key_len < sizeof(user) - 1 ? rec->key_len : sizeof(user) - 1;
  memcpy(user, rec->key ? rec->key : "", rec->key ? ul : 0);
  user[rec->key ? ul : 0] = '\0';
  kmq_fallback_row_t row = {
      .message_id = mid,
      .user_id = user,
      .msg_type = kmq__hdr(rec->headers, "msg_type", type, sizeof(type)),
      .topic = rec->topic,
      .key = rec->key,
      .key_len = rec->key_len,
      .value = rec->value,
      .value_len = rec->value_len,
      .headers = rec->headers,
      .partition = -1,
      .offset = -1,
      .source = "dlq",
      .error = rd_kafka_err2str(rec->kafka_err),
  };
  kmq_err_t err = kmq_fallback_put(fb, &row, NULL, errstr, sizeof(errstr));
  if (err)
    kmq__log_to(&fb->log, "ERROR", "fallback", "cannot store a dead letter: %s", errstr);
  return err;
}

void *kmq_fallback_headers_pack(const rd_kafka_headers_t *h, size_t *len) {
  size_t total = 0, cnt = h ? rd_kafka_header_cnt(h) : 0;
  const char *name;
  const void *v;
  size_t vn;
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_header_get_all(h, i, &name, &v, &vn);
    total += 8 + strlen(name) + (v ? vn : 0);
  }
  unsigned char *buf = malloc(total ? total : 1), *o = buf;
  if (!buf) {
    *len = 0;
    return NULL;
  }
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_header_get_all(h, i, &name, &v, &vn);
    uint32_t nl = (uint32_t)strlen(name);
    int32_t vl = v ? (int32_t)vn : -1;
    for (int b = 0; b < 4; b++)
      *o++ = (unsigned char)(nl >> (8 * b));
    memcpy(o, name, nl);
    o += nl;
    for (int b = 0; b < 4; b++)
      *o++ = (unsigned char)((uint32_t)vl >> (8 * b));
    if (v && vn) {
      memcpy(o, v, vn);
      o += vn;
    }
  }
  *len = total;
  return buf;
}

static int kmq__u32(const unsigned char **p, const unsigned char *end,
                    uint32_t *out) {
  if (end - *p < 4)
    return -1;
  *out = (uint32_t)(*p)[0] | (uint32_t)(*p)[1] << 8 | (uint32_t)(*p)[2] << 16 |
         (uint32_t)(*p)[3] << 24;
  *p += 4;
  return 0;
}

rd_kafka_headers_t *kmq_fallback_headers_unpack(const void *buf, size_t len) {
  rd_kafka_headers_t *h = rd_kafka_headers_new(8);
  const unsigned char *p = buf, *end = p + len;
  while (p && p < end) {
    uint32_t nl, vl;
    if (kmq__u32(&p, end, &nl) || (size_t)(end - p) < nl)
      goto bad;
    const char *name = (const char *)p;
    p += nl;
    if (kmq__u32(&p, end, &vl))
      goto bad;
    if (vl == UINT32_MAX) {
      rd_kafka_header_add(h, name, (ssize_t)nl, NULL, 0);
      continue;
    }
    if ((size_t)(end - p) < vl)
      goto bad;
    rd_kafka_header_add(h, name, (ssize_t)nl, p, (ssize_t)vl);
    p += vl;
  }
  return h;
bad:
  rd_kafka_headers_destroy(h);
  return NULL;
}
