/* Fallback store on MariaDB/MySQL (libmariadb). Every statement is one
 * autocommit InnoDB transaction, durable when it returns (the server's
 * innodb_flush_log_at_trx_commit=1 default). Values travel as literals: blobs
 * and keys as hex (X'..', no escaping pitfalls with binary data), text
 * through mysql_real_escape_string. A lost connection is reopened once per
 * call. The password is kept only inside libmariadb's handle and for
 * reconnecting; no message ever contains it. */
#include <errmsg.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/fallback_int.h"
#include "lib/fallback_sql.h"

typedef struct {
  MYSQL *m;
  char *user, *pass, *host, *db;
  unsigned port;
} kmq__my_t;

static const char kmq__my_schema[] =
    "CREATE TABLE IF NOT EXISTS kafka_fallback_messages ("
    " id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " message_id VARBINARY(191) NOT NULL,"
    " user_id VARBINARY(191) NOT NULL,"
    " open_kf_id VARCHAR(191) NOT NULL DEFAULT '',"
    " msg_type VARCHAR(64) NOT NULL DEFAULT '',"
    " content LONGBLOB,"
    " status VARCHAR(16) NOT NULL DEFAULT 'pending',"
    " retry_count INT NOT NULL DEFAULT 0,"
    " max_retries INT NOT NULL,"
    " error_message TEXT,"
    " created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL,"
    " next_retry_at BIGINT NOT NULL,"
    " topic VARCHAR(249) NOT NULL,"
    " msg_key MEDIUMBLOB,"
    " headers MEDIUMBLOB,"
    " orig_partition INT NOT NULL DEFAULT -1,"
    " orig_offset BIGINT NOT NULL DEFAULT -1,"
    " source VARCHAR(16) NOT NULL,"
    " claimed_by VARCHAR(96) NULL,"
    " claim_until BIGINT NOT NULL DEFAULT 0,"
    " UNIQUE KEY uk_kfm_message_id (message_id),"
    " KEY idx_kfm_user_status_created (user_id, status, created_at),"
    " KEY idx_kfm_status_next (status, next_retry_at)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

static kmq_err_t kmq__my_err(kmq__my_t *d, const char *what, char *errstr,
                             size_t errstr_size) {
  snprintf(errstr, errstr_size, "mysql %s@%s:%u/%s: %s: %s", d->user,
           d->host, d->port, d->db, what,
           d->m ? mysql_error(d->m) : "not connected");
  return KMQ_ERR_FALLBACK;
}

static kmq_err_t kmq__my_connect(kmq__my_t *d, char *errstr,
                                 size_t errstr_size) {
  if (d->m)
    mysql_close(d->m);
  d->m = mysql_init(NULL);
  if (!d->m) {
    snprintf(errstr, errstr_size, "mysql: out of memory");
    return KMQ_ERR_NOMEM;
  }
  /* Bounded: a store that does not answer must fail the write (the sender
   * then gets LOST or an error), not hang the delivery thread. */
  unsigned int ct = 3, rwt = 10;
  mysql_options(d->m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
  mysql_options(d->m, MYSQL_OPT_READ_TIMEOUT, &rwt);
  mysql_options(d->m, MYSQL_OPT_WRITE_TIMEOUT, &rwt);
  if (!mysql_real_connect(d->m, d->host, d->user, d->pass, d->db, d->port,
                          NULL, 0)) {
    kmq_err_t e = kmq__my_err(d, "connect", errstr, errstr_size);
    mysql_close(d->m);
    d->m = NULL;
    return e;
  }
  return KMQ_OK;
}

/* Runs sql; reconnects once and retries when the connection was lost
 * (every statement here is safe to repeat: puts are idempotent, claims and
 * marks are compare-and-set). */
static kmq_err_t kmq__my_query(kmq__my_t *d, const char *sql, char *errstr,
                               size_t errstr_size) {
  for (int attempt = 0; attempt < 2; attempt++) {
    if (!d->m) {
      kmq_err_t e = kmq__my_connect(d, errstr, errstr_size);
      if (e)
        return e;
    }
    if (!mysql_query(d->m, sql))
      return KMQ_OK;
    unsigned no = mysql_errno(d->m);
    if (no != CR_SERVER_GONE_ERROR && no != CR_SERVER_LOST &&
        no != CR_CONNECTION_ERROR && no != CR_CONN_HOST_ERROR)
      break;
    kmq__my_err(d, "query", errstr, errstr_size);
    mysql_close(d->m);
    d->m = NULL;
  }
  if (!d->m)
    return KMQ_ERR_FALLBACK;
  return kmq__my_err(d, "query", errstr, errstr_size);
}

static char *kmq__my_dup(const char *s, size_t n) {
  return kmq__fb_memdup(s, n);
}

void *kmq__fb_mariadb_open(const char *url, char *errstr, size_t errstr_size) {
  /* mysql://user:pass@host:port/db (user, pass and port optional) */
  if (strncmp(url, "mysql://", 8)) {
    snprintf(errstr, errstr_size, "kmq.fallback.url must start with "
                                  "mysql://");
    return NULL;
  }
  kmq__my_t *d = calloc(1, sizeof(*d));
  if (!d) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  const char *p = url + 8, *at = strrchr(p, '@'), *slash;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    d->user = kmq__my_dup(p, (size_t)((colon ? colon : at) - p));
    d->pass = colon ? kmq__my_dup(colon + 1, (size_t)(at - colon - 1))
                    : kmq__my_dup("", 0);
    p = at + 1;
  } else {
    d->user = kmq__my_dup("root", 4);
    d->pass = kmq__my_dup("", 0);
  }
  slash = strchr(p, '/');
  if (!slash || !slash[1]) {
    snprintf(errstr, errstr_size, "kmq.fallback.url has no database "
                                  "(mysql://user:pass@host:port/db)");
    goto fail;
  }
  const char *pc = memchr(p, ':', (size_t)(slash - p));
  d->host = kmq__my_dup(p, (size_t)((pc ? pc : slash) - p));
  d->port = pc ? (unsigned)strtoul(pc + 1, NULL, 10) : 3306;
  d->db = kmq__my_dup(slash + 1, strlen(slash + 1));
  if (!d->user || !d->pass || !d->host || !d->db) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  if (kmq__my_connect(d, errstr, errstr_size) ||
      kmq__my_query(d, kmq__my_schema, errstr, errstr_size))
    goto fail;
  return d;
fail:
  if (d->m)
    mysql_close(d->m);
  free(d->user);
  free(d->pass);
  free(d->host);
  free(d->db);
  free(d);
  return NULL;
}

static void kmq__my_close(void *vd) {
  kmq__my_t *d = vd;
  if (d->m)
    mysql_close(d->m);
  free(d->user);
  if (d->pass)
    memset(d->pass, 0, strlen(d->pass));
  free(d->pass);
  free(d->host);
  free(d->db);
  free(d);
}

/* X'<hex>' (or NULL for a NULL p) in a new string. */
static char *kmq__my_hex(const void *p, size_t n) {
  if (!p)
    return kmq__my_dup("NULL", 4);
  char *s = malloc(2 * n + 4);
  if (!s)
    return NULL;
  static const char hx[] = "0123456789ABCDEF";
  const unsigned char *b = p;
  size_t o = 0;
  s[o++] = 'X';
  s[o++] = '\'';
  for (size_t i = 0; i < n; i++) {
    s[o++] = hx[b[i] >> 4];
    s[o++] = hx[b[i] & 15];
  }
  s[o++] = '\'';
  s[o] = '\0';
  return s;
}

/* '<escaped text>' in a new string. */
static char *kmq__my_text(kmq__my_t *d, const char *t) {
  size_t n = strlen(t);
  char *s = malloc(2 * n + 3);
  if (!s)
    return NULL;
  s[0] = '\'';
  unsigned long w;
  if (d->m)
    w = mysql_real_escape_string(d->m, s + 1, t, (unsigned long)n);
  else
    w = mysql_escape_string(s + 1, t, (unsigned long)n);
  s[1 + w] = '\'';
  s[2 + w] = '\0';
  return s;
}

#define KMQ__MY_NOMEM(errstr, size)                                           \
  (snprintf(errstr, size, "out of memory"), KMQ_ERR_NOMEM)

static kmq_err_t kmq__my_put(void *vd, const kmq__fb_put_t *p, int *dup,
                             char *errstr, size_t errstr_size) {
  kmq__my_t *d = vd;
  const kmq_fallback_row_t *r = p->row;
  char *lit[10] = {
      kmq__my_hex(r->message_id, strlen(r->message_id)),
      kmq__my_hex(r->user_id, strlen(r->user_id)),
      kmq__my_text(d, r->open_kf_id ? r->open_kf_id : ""),
      kmq__my_text(d, r->msg_type ? r->msg_type : ""),
      kmq__my_hex(r->value ? r->value : "", r->value_len),
      r->error ? kmq__my_text(d, r->error) : kmq__my_dup("NULL", 4),
      kmq__my_text(d, r->topic),
      kmq__my_hex(r->key, r->key_len),
      kmq__my_hex(p->headers, p->headers_len),
      kmq__my_text(d, r->source),
  };
  char *sql = NULL;
  kmq_err_t err = KMQ_OK;
  for (int i = 0; i < 10; i++)
    if (!lit[i])
      err = KMQ__MY_NOMEM(errstr, errstr_size);
  long long created = r->created_at ? r->created_at : p->now;
  /* ON DUPLICATE KEY UPDATE id = id changes nothing: 0 affected rows is
   * "already there" (INSERT IGNORE would also hide real errors). */
  if (!err &&
      asprintf(&sql,
               "INSERT INTO kafka_fallback_messages (message_id, user_id,"
               " open_kf_id, msg_type, content, status, retry_count,"
               " max_retries, error_message, created_at, updated_at,"
               " next_retry_at, topic, msg_key, headers, orig_partition,"
               " orig_offset, source) VALUES (%s, %s, %s, %s, %s, 'pending',"
               " 0, %d, %s, %lld, %lld, %lld, %s, %s, %s, %d, %lld, %s)"
               " ON DUPLICATE KEY UPDATE id = id",
               lit[0], lit[1], lit[2], lit[3], lit[4], p->max_retries, lit[5],
               created, (long long)p->now, (long long)p->now, lit[6], lit[7],
               lit[8], (int)r->partition, (long long)r->offset, lit[9]) < 0) {
    sql = NULL;
    err = KMQ__MY_NOMEM(errstr, errstr_size);
  }
  for (int i = 0; i < 10; i++)
    free(lit[i]);
  if (!err)
    err = kmq__my_query(d, sql, errstr, errstr_size);
  free(sql);
  if (!err)
    *dup = mysql_affected_rows(d->m) == 0;
  return err;
}

static kmq_err_t kmq__my_fill(MYSQL_ROW row, unsigned long *len,
                              kmq_fallback_entry_t *e) {
  e->id = strtoll(row[0], NULL, 10);
  e->message_id = kmq__my_dup(row[1], len[1]);
  e->user_id = kmq__my_dup(row[2], len[2]);
  e->topic = kmq__my_dup(row[3], len[3]);
  e->source = kmq__my_dup(row[4], len[4]);
  if (row[5] && !(e->key = kmq__my_dup(row[5], e->key_len = len[5])))
    return KMQ_ERR_NOMEM;
  if (row[6] && !(e->value = kmq__my_dup(row[6], e->value_len = len[6])))
    return KMQ_ERR_NOMEM;
  if (row[7] &&
      !(e->headers = kmq__my_dup(row[7], e->headers_len = len[7])))
    return KMQ_ERR_NOMEM;
  e->partition = (int32_t)strtol(row[8], NULL, 10);
  e->offset = strtoll(row[9], NULL, 10);
  e->retry_count = (int)strtol(row[10], NULL, 10);
  e->max_retries = (int)strtol(row[11], NULL, 10);
  e->created_at = strtoll(row[12], NULL, 10);
  if (!e->message_id || !e->user_id || !e->topic || !e->source)
    return KMQ_ERR_NOMEM;
  return KMQ_OK;
}

static kmq_err_t kmq__my_claim(void *vd, const char *token, int64_t now,
                               int64_t until, size_t max,
                               kmq_fallback_entry_t *out, size_t *n,
                               char *errstr, size_t errstr_size) {
  kmq__my_t *d = vd;
  *n = 0;
  char *sql = NULL, *tok = kmq__my_text(d, token);
  if (!tok || asprintf(&sql, KMQ__FB_HEADS_FMT, (long long)now,
                       (long long)now, (long long)max) < 0) {
    free(tok);
    return KMQ__MY_NOMEM(errstr, errstr_size);
  }
  kmq_err_t err = kmq__my_query(d, sql, errstr, errstr_size);
  free(sql);
  MYSQL_RES *res = err ? NULL : mysql_store_result(d->m);
  if (!err && !res)
    err = kmq__my_err(d, "claim result", errstr, errstr_size);
  size_t got = 0;
  MYSQL_ROW row;
  while (!err && got < max && (row = mysql_fetch_row(res))) {
    if (kmq__my_fill(row, mysql_fetch_lengths(res), &out[got++]))
      err = KMQ__MY_NOMEM(errstr, errstr_size);
  }
  if (res)
    mysql_free_result(res);
  /* The select read a snapshot without locks: another process may claim the
   * same heads meanwhile. The compare-and-set decides (one statement, one
   * commit); InnoDB evaluates its WHERE on the latest committed rows under
   * the row locks, so exactly one claimer changes each. Which rows are ours
   * is read back by token and lease end; rows lost to another claimer are
   * dropped. */
  int64_t *ids = got && !err ? malloc(got * sizeof(*ids)) : NULL;
  char *list = NULL;
  for (size_t i = 0; ids && i < got; i++)
    ids[i] = out[i].id;
  if (got && !err && (!ids || !(list = kmq__fb_idlist(ids, got))))
    err = KMQ__MY_NOMEM(errstr, errstr_size);
  free(ids);
  if (!err && got) {
    if (asprintf(&sql, KMQ__FB_CLAIM_FMT, tok, (long long)until,
                 (long long)now, list, (long long)now) < 0)
      err = KMQ__MY_NOMEM(errstr, errstr_size);
    else {
      err = kmq__my_query(d, sql, errstr, errstr_size);
      free(sql);
    }
  }
  char *mine = NULL;
  if (!err && got &&
      asprintf(&mine,
               "SELECT id FROM kafka_fallback_messages WHERE id IN (%s) AND "
               "claimed_by = %s AND claim_until = %lld",
               list, tok, (long long)until) < 0) {
    mine = NULL;
    err = KMQ__MY_NOMEM(errstr, errstr_size);
  }
  free(list);
  if (!err && got) {
    err = kmq__my_query(d, mine, errstr, errstr_size);
    res = err ? NULL : mysql_store_result(d->m);
    if (!err && !res)
      err = kmq__my_err(d, "claim result", errstr, errstr_size);
    while (!err && (row = mysql_fetch_row(res))) {
      int64_t id = strtoll(row[0], NULL, 10);
      for (size_t i = *n; i < got; i++)
        if (out[i].id == id) {
          kmq_fallback_entry_t t = out[*n];
          out[*n] = out[i];
          out[i] = t;
          (*n)++;
          break;
        }
    }
    if (res)
      mysql_free_result(res);
  }
  free(mine);
  if (err)
    *n = 0; /* the leases end; the caller gets nothing */
  free(tok);
  /* What was filled but not claimed: free it here, the caller frees 0..*n. */
  for (size_t i = *n; i < got; i++) {
    kmq_fallback_entry_t *e = &out[i];
    free(e->message_id);
    free(e->user_id);
    free(e->topic);
    free(e->source);
    free(e->key);
    free(e->value);
    free(e->headers);
    memset(e, 0, sizeof(*e));
  }
  return err;
}

/* Runs an UPDATE from asprintf; *changed = affected rows. Frees sql. */
static kmq_err_t kmq__my_update(kmq__my_t *d, char *sql, int rc,
                                my_ulonglong *changed, char *errstr,
                                size_t errstr_size) {
  *changed = 0;
  if (rc < 0)
    return KMQ__MY_NOMEM(errstr, errstr_size);
  kmq_err_t err = kmq__my_query(d, sql, errstr, errstr_size);
  free(sql);
  if (!err)
    *changed = mysql_affected_rows(d->m);
  return err;
}

static kmq_err_t kmq__my_done(void *vd, const char *token,
                              const int64_t *ids, size_t n, int64_t now,
                              size_t *marked, char *errstr,
                              size_t errstr_size) {
  kmq__my_t *d = vd;
  char *sql = NULL, *tok = kmq__my_text(d, token), *list = kmq__fb_idlist(ids, n);
  int rc = tok && list ? asprintf(&sql, KMQ__FB_DONE_FMT, (long long)now, list,
                                  tok)
                       : -1;
  free(tok);
  free(list);
  my_ulonglong changed;
  kmq_err_t err = kmq__my_update(d, sql, rc, &changed, errstr, errstr_size);
  *marked = err ? 0 : (size_t)changed;
  return err;
}

/* Runs a one-row, one-or-two-column integer query. */
static kmq_err_t kmq__my_ints(kmq__my_t *d, const char *sql, int64_t *a,
                              int64_t *b, char *errstr, size_t errstr_size) {
  kmq_err_t err = kmq__my_query(d, sql, errstr, errstr_size);
  if (err)
    return err;
  MYSQL_RES *res = mysql_store_result(d->m);
  if (!res)
    return kmq__my_err(d, "result", errstr, errstr_size);
  MYSQL_ROW row = mysql_fetch_row(res);
  if (row) {
    *a = row[0] ? strtoll(row[0], NULL, 10) : 0;
    if (b)
      *b = row[1] ? strtoll(row[1], NULL, 10) : 0;
  }
  mysql_free_result(res);
  return KMQ_OK;
}

static kmq_err_t kmq__my_retry(void *vd, const char *token, int64_t id,
                               int64_t now, int64_t next, const char *error,
                               int *gave_up, char *errstr,
                               size_t errstr_size) {
  kmq__my_t *d = vd;
  *gave_up = 0;
  char *sql = NULL, *tok = kmq__my_text(d, token),
       *msg = kmq__my_text(d, error);
  int rc = tok && msg ? asprintf(&sql, KMQ__FB_RETRY_FMT, msg, (long long)now,
                                 (long long)next, (long long)id, tok)
                      : -1;
  free(tok);
  free(msg);
  my_ulonglong changed;
  kmq_err_t err = kmq__my_update(d, sql, rc, &changed, errstr, errstr_size);
  if (err)
    return err;
  if (changed != 1) {
    snprintf(errstr, errstr_size, "row %lld is not claimed by this store",
             (long long)id);
    return KMQ_ERR_NOT_FOUND;
  }
  char q[128];
  snprintf(q, sizeof(q),
           "SELECT status = 'failed' FROM kafka_fallback_messages WHERE "
           "id = %lld",
           (long long)id);
  int64_t g = 0;
  err = kmq__my_ints(d, q, &g, NULL, errstr, errstr_size);
  *gave_up = (int)g;
  return err;
}

static kmq_err_t kmq__my_user_pending(void *vd, const char *user, int64_t *n,
                                      char *errstr, size_t errstr_size) {
  kmq__my_t *d = vd;
  char *sql = NULL, *u = kmq__my_hex(user, strlen(user));
  *n = 0;
  if (!u || asprintf(&sql,
                     "SELECT COUNT(*) FROM kafka_fallback_messages WHERE "
                     "user_id = %s AND " KMQ__FB_LIVE,
                     u) < 0) {
    free(u);
    return KMQ__MY_NOMEM(errstr, errstr_size);
  }
  free(u);
  kmq_err_t err = kmq__my_ints(d, sql, n, NULL, errstr, errstr_size);
  free(sql);
  return err;
}

static kmq_err_t kmq__my_pending_users(void *vd,
                                       void (*cb)(const char *, void *),
                                       void *opaque, char *errstr,
                                       size_t errstr_size) {
  kmq__my_t *d = vd;
  kmq_err_t err = kmq__my_query(d,
                                "SELECT DISTINCT user_id FROM "
                                "kafka_fallback_messages WHERE " KMQ__FB_LIVE,
                                errstr, errstr_size);
  if (err)
    return err;
  MYSQL_RES *res = mysql_store_result(d->m);
  if (!res)
    return kmq__my_err(d, "result", errstr, errstr_size);
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res)))
    cb(row[0], opaque); /* VARBINARY comes NUL-terminated from libmariadb */
  mysql_free_result(res);
  return KMQ_OK;
}

static kmq_err_t kmq__my_pending_stats(void *vd, int64_t *pending,
                                       int64_t *oldest, char *errstr,
                                       size_t errstr_size) {
  return kmq__my_ints(vd,
                      "SELECT COUNT(*), COALESCE(MIN(created_at), 0) FROM "
                      "kafka_fallback_messages WHERE " KMQ__FB_LIVE,
                      pending, oldest, errstr, errstr_size);
}

static kmq_err_t kmq__my_select(void *vd, const char *fmt, const char *user,
                                void (*cb)(const char *const *, const size_t *,
                                           int, void *),
                                void *opaque, char *errstr,
                                size_t errstr_size) {
  kmq__my_t *d = vd;
  char *u = user ? kmq__my_hex(user, strlen(user)) : NULL;
  char *cond = NULL, *sql = NULL;
  if ((user && !u) ||
      asprintf(&cond, "%s%s", u ? "user_id = " : "1 = 1", u ? u : "") < 0) {
    free(u);
    return KMQ__MY_NOMEM(errstr, errstr_size);
  }
  free(u);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  int r = asprintf(&sql, fmt, cond); /* fmt: fallback.c's, one %s */
#pragma GCC diagnostic pop
  free(cond);
  if (r < 0)
    return KMQ__MY_NOMEM(errstr, errstr_size);
  kmq_err_t err = kmq__my_query(d, sql, errstr, errstr_size);
  free(sql);
  if (err)
    return err;
  MYSQL_RES *res = mysql_store_result(d->m);
  if (!res)
    return kmq__my_err(d, "result", errstr, errstr_size);
  int n = (int)mysql_num_fields(res);
  size_t len[32];
  n = n < 32 ? n : 32;
  MYSQL_ROW row;
  while ((row = mysql_fetch_row(res))) {
    unsigned long *l = mysql_fetch_lengths(res);
    for (int i = 0; i < n; i++)
      len[i] = l[i];
    cb((const char *const *)row, len, n, opaque);
  }
  mysql_free_result(res);
  return KMQ_OK;
}

const kmq__fb_ops_t kmq__fb_mariadb_ops = {
    kmq__my_put,           kmq__my_claim,         kmq__my_done,
    kmq__my_retry,         kmq__my_user_pending,  kmq__my_pending_users,
    kmq__my_pending_stats, kmq__my_select,        kmq__my_close,
};
