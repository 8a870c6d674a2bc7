/* Fallback store on SQLite: the embedded default. WAL journal with
 * synchronous=FULL, so a committed put survives a power cut, and a claim is
 * one BEGIN IMMEDIATE transaction, so processes sharing the file take the
 * write lock in turn (busy_timeout waits for it). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/fallback_int.h"
#include "lib/fallback_sql.h"

#define KMQ__SQLITE_BUSY_MS 10000

static const char *kmq__sqlite_schema[] = {
    "CREATE TABLE IF NOT EXISTS kafka_fallback_messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " message_id TEXT NOT NULL UNIQUE,"
    " user_id TEXT NOT NULL,"
    " open_kf_id TEXT NOT NULL DEFAULT '',"
    " msg_type TEXT NOT NULL DEFAULT '',"
    " content BLOB,"
    " status TEXT NOT NULL DEFAULT 'pending',"
    " retry_count INTEGER NOT NULL DEFAULT 0,"
    " max_retries INTEGER NOT NULL,"
    " error_message TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " next_retry_at INTEGER NOT NULL,"
    " topic TEXT NOT NULL,"
    " msg_key BLOB,"
    " headers BLOB,"
    " orig_partition INTEGER NOT NULL DEFAULT -1,"
    " orig_offset INTEGER NOT NULL DEFAULT -1,"
    " source TEXT NOT NULL,"
    " claimed_by TEXT,"
    " claim_until INTEGER NOT NULL DEFAULT 0)",
    KMQ__FB_INDEXES,
};

static kmq_err_t kmq__sq_err(sqlite3 *db, const char *what, char *errstr,
                             size_t errstr_size) {
  snprintf(errstr, errstr_size, "sqlite: %s: %s", what, sqlite3_errmsg(db));
  return KMQ_ERR_FALLBACK;
}

/* Runs sql (no result rows). */
static kmq_err_t kmq__sq_exec(sqlite3 *db, const char *sql, char *errstr,
                              size_t errstr_size) {
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return kmq__sq_err(db, sql, errstr, errstr_size);
  return KMQ_OK;
}

void *kmq__fb_sqlite_open(const char *path, char *errstr, size_t errstr_size) {
  sqlite3 *db = NULL;
  if (!path || !*path) {
    snprintf(errstr, errstr_size, "kmq.fallback.path is empty");
    return NULL;
  }
  if (sqlite3_open_v2(path, &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                          SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    snprintf(errstr, errstr_size, "sqlite: cannot open %s: %s", path,
             db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_busy_timeout(db, KMQ__SQLITE_BUSY_MS);
  /* journal_mode answers with the mode in force: anything but "wal" (e.g. a
   * file system without shared memory) would silently weaken the contract. */
  sqlite3_stmt *st = NULL;
  int wal = 0;
  if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) ==
          SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    wal = !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  if (!wal) {
    kmq__sq_err(db, "cannot switch to WAL", errstr, errstr_size);
    sqlite3_close(db);
    return NULL;
  }
  if (kmq__sq_exec(db, "PRAGMA synchronous=FULL", errstr, errstr_size))
    goto fail;
  for (size_t i = 0; i < sizeof(kmq__sqlite_schema) / sizeof(char *); i++)
    if (kmq__sq_exec(db, kmq__sqlite_schema[i], errstr, errstr_size))
      goto fail;
  return db;
fail:
  sqlite3_close(db);
  return NULL;
}

static void kmq__sq_close(void *db) { sqlite3_close(db); }

static kmq_err_t kmq__sq_put(void *vdb, const kmq__fb_put_t *p, int *dup,
                             char *errstr, size_t errstr_size) {
  sqlite3 *db = vdb;
  const kmq_fallback_row_t *r = p->row;
  static const char sql[] =
      "INSERT INTO kafka_fallback_messages (message_id, user_id, open_kf_id,"
      " msg_type, content, status, retry_count, max_retries, error_message,"
      " created_at, updated_at, next_retry_at, topic, msg_key, headers,"
      " orig_partition, orig_offset, source) VALUES (?1, ?2, ?3, ?4, ?5,"
      " 'pending', 0, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
      " ON CONFLICT(message_id) DO NOTHING";
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
    return kmq__sq_err(db, "prepare insert", errstr, errstr_size);
  sqlite3_bind_text(st, 1, r->message_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, r->user_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, r->open_kf_id ? r->open_kf_id : "", -1,
                    SQLITE_STATIC);
  sqlite3_bind_text(st, 4, r->msg_type ? r->msg_type : "", -1, SQLITE_STATIC);
  sqlite3_bind_blob64(st, 5, r->value ? r->value : "", r->value_len,
                      SQLITE_STATIC);
  sqlite3_bind_int(st, 6, p->max_retries);
  if (r->error)
    sqlite3_bind_text(st, 7, r->error, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 8, r->created_at ? r->created_at : p->now);
  sqlite3_bind_int64(st, 9, p->now);
  sqlite3_bind_text(st, 10, r->topic, -1, SQLITE_STATIC);
  if (r->key)
    sqlite3_bind_blob64(st, 11, r->key, r->key_len, SQLITE_STATIC);
  if (p->headers)
    sqlite3_bind_blob64(st, 12, p->headers, p->headers_len, SQLITE_STATIC);
  sqlite3_bind_int(st, 13, r->partition);
  sqlite3_bind_int64(st, 14, r->offset);
  sqlite3_bind_text(st, 15, r->source, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return kmq__sq_err(db, "insert", errstr, errstr_size);
  /* An autocommit statement: with synchronous=FULL it is durable here. */
  *dup = sqlite3_changes(db) == 0;
  return KMQ_OK;
}

static void *kmq__sq_col(sqlite3_stmt *st, int i, size_t *len) {
  const void *p = sqlite3_column_blob(st, i);
  size_t n = (size_t)sqlite3_column_bytes(st, i);
  if (len)
    *len = n;
  if (!p)
    return len ? NULL : kmq__fb_memdup("", 0);
  return kmq__fb_memdup(p, n);
}

/* Fills e from the current row of a KMQ__FB_COLS select; -1 when out of
 * memory (e's buffers are freed by the caller's entries_free). */
static int kmq__sq_entry(sqlite3_stmt *st, kmq_fallback_entry_t *e) {
  e->id = sqlite3_column_int64(st, 0);
  e->message_id = kmq__sq_col(st, 1, NULL);
  e->user_id = kmq__sq_col(st, 2, NULL);
  e->topic = kmq__sq_col(st, 3, NULL);
  e->source = kmq__sq_col(st, 4, NULL);
  e->key = kmq__sq_col(st, 5, &e->key_len);
  e->value = kmq__sq_col(st, 6, &e->value_len);
  e->headers = kmq__sq_col(st, 7, &e->headers_len);
  e->partition = sqlite3_column_int(st, 8);
  e->offset = sqlite3_column_int64(st, 9);
  e->retry_count = sqlite3_column_int(st, 10);
  e->max_retries = sqlite3_column_int(st, 11);
  e->created_at = sqlite3_column_int64(st, 12);
  if (!e->message_id || !e->user_id || !e->topic || !e->source ||
      (e->key_len && !e->key) || (e->value_len && !e->value) ||
      (e->headers_len && !e->headers))
    return -1;
  return 0;
}

static kmq_err_t kmq__sq_claim(void *vdb, const char *token, int64_t now,
                               int64_t until, size_t max,
                               kmq_fallback_entry_t *out, size_t *n,
                               char *errstr, size_t errstr_size) {
  sqlite3 *db = vdb;
  *n = 0;
  kmq_err_t err = kmq__sq_exec(db, "BEGIN IMMEDIATE", errstr, errstr_size);
  if (err)
    return err;
  char *sel = sqlite3_mprintf(KMQ__FB_HEADS_FMT, (long long)now,
                              (long long)now, (long long)max);
  char *tok = sqlite3_mprintf("%Q", token);
  sqlite3_stmt *st = NULL;
  if (!sel || !tok) {
    snprintf(errstr, errstr_size, "out of memory");
    err = KMQ_ERR_NOMEM;
    goto done;
  }
  if (sqlite3_prepare_v2(db, sel, -1, &st, NULL) != SQLITE_OK) {
    err = kmq__sq_err(db, "prepare claim", errstr, errstr_size);
    goto done;
  }
  int rc;
  while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    kmq_fallback_entry_t *e = &out[(*n)++];
    if (kmq__sq_entry(st, e)) {
      snprintf(errstr, errstr_size, "out of memory");
      err = KMQ_ERR_NOMEM;
      goto done;
    }
  }
  sqlite3_finalize(st);
  st = NULL;
  /* The write lock is ours since BEGIN IMMEDIATE: every selected head is
   * still unclaimed, the compare-and-set cannot miss. */
  if (*n) {
    int64_t *ids = malloc(*n * sizeof(*ids));
    char *list = NULL, *upd = NULL;
    for (size_t i = 0; ids && i < *n; i++)
      ids[i] = out[i].id;
    if (ids && (list = kmq__fb_idlist(ids, *n)))
      upd = sqlite3_mprintf(KMQ__FB_CLAIM_FMT, tok, (long long)until,
                            (long long)now, list, (long long)now);
    free(ids);
    free(list);
    if (!upd) {
      snprintf(errstr, errstr_size, "out of memory");
      err = KMQ_ERR_NOMEM;
      goto done;
    }
    err = kmq__sq_exec(db, upd, errstr, errstr_size);
    sqlite3_free(upd);
    if (err)
      goto done;
    if ((size_t)sqlite3_changes(db) != *n) {
      snprintf(errstr, errstr_size, "sqlite: claim lost a row under the lock");
      err = KMQ_ERR_FALLBACK;
      goto done;
    }
  }
  err = kmq__sq_exec(db, "COMMIT", errstr, errstr_size);
done:
  sqlite3_finalize(st);
  sqlite3_free(sel);
  sqlite3_free(tok);
  if (err) {
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    /* The caller frees what was filled (entries_free with *n). */
  }
  return err;
}

/* Runs an UPDATE built by sqlite3_mprintf; *changed = rows it changed. */
static kmq_err_t kmq__sq_update(sqlite3 *db, char *sql, int *changed,
                                char *errstr, size_t errstr_size) {
  if (!sql) {
    snprintf(errstr, errstr_size, "out of memory");
    return KMQ_ERR_NOMEM;
  }
  kmq_err_t err = kmq__sq_exec(db, sql, errstr, errstr_size);
  sqlite3_free(sql);
  *changed = err ? 0 : sqlite3_changes(db);
  return err;
}

static kmq_err_t kmq__sq_done(void *vdb, const char *token,
                              const int64_t *ids, size_t n, int64_t now,
                              size_t *marked, char *errstr,
                              size_t errstr_size) {
  int changed;
  char *tok = sqlite3_mprintf("%Q", token), *list = kmq__fb_idlist(ids, n);
  kmq_err_t err = kmq__sq_update(
      vdb,
      tok && list ? sqlite3_mprintf(KMQ__FB_DONE_FMT, (long long)now, list, tok)
                  : NULL,
      &changed, errstr, errstr_size);
  sqlite3_free(tok);
  free(list);
  *marked = err ? 0 : (size_t)changed;
  return err;
}

static kmq_err_t kmq__sq_retry(void *vdb, const char *token, int64_t id,
                               int64_t now, int64_t next, const char *error,
                               int *gave_up, char *errstr,
                               size_t errstr_size) {
  sqlite3 *db = vdb;
  int changed;
  *gave_up = 0;
  char *tok = sqlite3_mprintf("%Q", token);
  char *msg = sqlite3_mprintf("%Q", error);
  kmq_err_t err = kmq__sq_update(
      db,
      tok && msg ? sqlite3_mprintf(KMQ__FB_RETRY_FMT, msg, (long long)now,
                                   (long long)next, (long long)id, tok)
                 : NULL,
      &changed, errstr, errstr_size);
  sqlite3_free(tok);
  sqlite3_free(msg);
  if (err)
    return err;
  if (!changed) {
    snprintf(errstr, errstr_size, "row %lld is not claimed by this store",
             (long long)id);
    return KMQ_ERR_NOT_FOUND;
  }
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db,
                         "SELECT status = 'failed' FROM "
                         "kafka_fallback_messages WHERE id = ?1",
                         -1, &st, NULL) != SQLITE_OK)
    return kmq__sq_err(db, "prepare status", errstr, errstr_size);
  sqlite3_bind_int64(st, 1, id);
  if (sqlite3_step(st) == SQLITE_ROW)
    *gave_up = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return KMQ_OK;
}

static kmq_err_t kmq__sq_user_pending(void *vdb, const char *user, int64_t *n,
                                      char *errstr, size_t errstr_size) {
  sqlite3 *db = vdb;
  sqlite3_stmt *st;
  *n = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT COUNT(*) FROM kafka_fallback_messages WHERE "
                         "user_id = ?1 AND " KMQ__FB_LIVE,
                         -1, &st, NULL) != SQLITE_OK)
    return kmq__sq_err(db, "prepare count", errstr, errstr_size);
  sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? KMQ_OK
                          : kmq__sq_err(db, "count", errstr, errstr_size);
}

static kmq_err_t kmq__sq_pending_users(void *vdb,
                                       void (*cb)(const char *, void *),
                                       void *opaque, char *errstr,
                                       size_t errstr_size) {
  sqlite3 *db = vdb;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db,
                         "SELECT DISTINCT user_id FROM "
                         "kafka_fallback_messages WHERE " KMQ__FB_LIVE,
                         -1, &st, NULL) != SQLITE_OK)
    return kmq__sq_err(db, "prepare users", errstr, errstr_size);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    cb((const char *)sqlite3_column_text(st, 0), opaque);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? KMQ_OK
                           : kmq__sq_err(db, "users", errstr, errstr_size);
}

static kmq_err_t kmq__sq_pending_stats(void *vdb, int64_t *pending,
                                       int64_t *oldest, char *errstr,
                                       size_t errstr_size) {
  sqlite3 *db = vdb;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db,
                         "SELECT COUNT(*), COALESCE(MIN(created_at), 0) FROM "
                         "kafka_fallback_messages WHERE " KMQ__FB_LIVE,
                         -1, &st, NULL) != SQLITE_OK)
    return kmq__sq_err(db, "prepare stats", errstr, errstr_size);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *pending = sqlite3_column_int64(st, 0);
    *oldest = sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? KMQ_OK
                          : kmq__sq_err(db, "stats", errstr, errstr_size);
}

#define KMQ__SQ_MAXCOLS 32

static kmq_err_t kmq__sq_select(void *vdb, const char *fmt, const char *user,
                                void (*cb)(const char *const *, const size_t *,
                                           int, void *),
                                void *opaque, char *errstr,
                                size_t errstr_size) {
  sqlite3 *db = vdb;
  /* %Q: quoted with '' doubled, SQLite's own literal. */
  char *cond = user ? sqlite3_mprintf("user_id = %Q", user)
                    : sqlite3_mprintf("1 = 1");
  char *sql = cond ? sqlite3_mprintf(fmt, cond) : NULL;
  sqlite3_free(cond);
  if (!sql) {
    snprintf(errstr, errstr_size, "out of memory");
    return KMQ_ERR_NOMEM;
  }
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  if (rc != SQLITE_OK)
    return kmq__sq_err(db, "prepare select", errstr, errstr_size);
  const char *v[KMQ__SQ_MAXCOLS];
  size_t len[KMQ__SQ_MAXCOLS];
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int n = sqlite3_column_count(st);
    n = n < KMQ__SQ_MAXCOLS ? n : KMQ__SQ_MAXCOLS;
    for (int i = 0; i < n; i++) {
      int t = sqlite3_column_type(st, i);
      /* blob for BLOB columns, else text (integers as decimal) */
      v[i] = t == SQLITE_NULL ? NULL
             : t == SQLITE_BLOB
                 ? (const char *)sqlite3_column_blob(st, i)
                 : (const char *)sqlite3_column_text(st, i);
      len[i] = v[i] ? (size_t)sqlite3_column_bytes(st, i) : 0;
      if (t == SQLITE_BLOB && !v[i])
        v[i] = ""; /* an empty blob */
    }
    cb(v, len, n, opaque);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? KMQ_OK
                           : kmq__sq_err(db, "select", errstr, errstr_size);
}

const kmq__fb_ops_t kmq__fb_sqlite_ops = {
    kmq__sq_put,           kmq__sq_claim,         kmq__sq_done,
    kmq__sq_retry,         kmq__sq_user_pending,  kmq__sq_pending_users,
    kmq__sq_pending_stats, kmq__sq_select,        kmq__sq_close,
};
