/* Fallback store internals: the backend interface behind kmq_fallback_t
 * (fallback.c), implemented by fallback_sqlite.c and fallback_mariadb.c.
 * A backend is one database connection; fallback.c serialises every call on
 * the handle's mutex, so backends are single-threaded by construction. */
#ifndef KMQ_LIB_FALLBACK_INT_H
#define KMQ_LIB_FALLBACK_INT_H

#include "kmq/fallback.h"

/* What put writes: the row as given plus what fallback.c derived. */
typedef struct {
  const kmq_fallback_row_t *row;
  const void *headers; /* packed */
  size_t headers_len;
  int max_retries;
  int64_t now; /* created_at when row->created_at is 0, updated_at,
                * next_retry_at */
} kmq__fb_put_t;

/* Every function returns KMQ_OK or an error with errstr filled; `token` is
 * the handle's claim token; times are ms since the epoch. */
typedef struct {
  kmq_err_t (*put)(void *db, const kmq__fb_put_t *p, int *dup, char *errstr,
                   size_t errstr_size);
  /* Fills out[0..*n) (max entries) with claimed heads; entries own their
   * strings and buffers (kmq_fallback_entries_free). */
  kmq_err_t (*claim)(void *db, const char *token, int64_t now, int64_t until,
                     size_t max, kmq_fallback_entry_t *out, size_t *n,
                     char *errstr, size_t errstr_size);
  /* Marks those of ids[0..n) still claimed by token; *marked = how many. */
  kmq_err_t (*done)(void *db, const char *token, const int64_t *ids,
                    size_t n, int64_t now, size_t *marked, char *errstr,
                    size_t errstr_size);
  kmq_err_t (*retry)(void *db, const char *token, int64_t id, int64_t now,
                     int64_t next, const char *error, int *gave_up,
                     char *errstr, size_t errstr_size);
  kmq_err_t (*user_pending)(void *db, const char *user, int64_t *n,
                            char *errstr, size_t errstr_size);
  kmq_err_t (*pending_users)(void *db, void (*cb)(const char *, void *),
                             void *opaque, char *errstr, size_t errstr_size);
  /* Rows pending or retrying, and the oldest created_at among them (0 when
   * none). */
  kmq_err_t (*pending_stats)(void *db, int64_t *pending, int64_t *oldest,
                             char *errstr, size_t errstr_size);
  /* Read-only query for tools (kmq_fallback_counts / _list): fmt holds one
   * %s, replaced by "user_id = <user as a literal>" or, when user is NULL,
   * by "1 = 1"; cb gets each row's columns as bytes (NULL for SQL NULL;
   * integers as decimal text). */
  kmq_err_t (*select)(void *db, const char *fmt, const char *user,
                      void (*cb)(const char *const *v, const size_t *len,
                                 int n, void *opaque),
                      void *opaque, char *errstr, size_t errstr_size);
  void (*close)(void *db);
} kmq__fb_ops_t;

/* Opens a backend; NULL with errstr filled on error. */
void *kmq__fb_sqlite_open(const char *path, char *errstr, size_t errstr_size);
extern const kmq__fb_ops_t kmq__fb_sqlite_ops;
void *kmq__fb_mariadb_open(const char *url, char *errstr, size_t errstr_size);
extern const kmq__fb_ops_t kmq__fb_mariadb_ops;

/* "1,2,3": ids as an SQL list, in a new string (free()); NULL when out of
 * memory. */
char *kmq__fb_idlist(const int64_t *ids, size_t n);

/* Status names as stored in the status column. */
const char *kmq__fb_status_name(kmq_fallback_status_t s);

/* Copies n bytes into a new NUL-terminated buffer (so that text columns can
 * be used as C strings); NULL when out of memory. */
void *kmq__fb_memdup(const void *p, size_t n);

#endif
