/*
 * Fallback store: the third level of protection (Kafka, the DLQ topic, then
 * this table), and what the compensator (compensator.h) replays from.
 *
 * One table, kafka_fallback_messages, in SQLite (embedded default, WAL mode,
 * synchronous=FULL, kmq.fallback.path) or MariaDB/MySQL (libmariadb,
 * kmq.fallback.url = mysql://user:pass@host:port/db), chosen by
 * kmq.fallback.backend = sqlite | mysql | none. Columns: the design's (id,
 * message_id UNIQUE, user_id, open_kf_id, msg_type, content, status
 * pending/retrying/success/failed, retry_count, max_retries, error_message,
 * created_at, updated_at, next_retry_at; indexes (user_id, status,
 * created_at) and (status, next_retry_at)) plus what a replay needs: topic,
 * msg_key, headers (kmq_fallback_headers_pack), orig_partition, orig_offset,
 * source (producer | dlq | consumer), and the claim: claimed_by,
 * claim_until. Times are ms since the epoch (BIGINT), the same on both
 * backends.
 *
 * Contract:
 *   - kmq_fallback_put() returns KMQ_OK only once the row is durable (SQLite:
 *     committed with synchronous=FULL; MariaDB: an InnoDB commit, which the
 *     server flushes with innodb_flush_log_at_trx_commit=1, its default). A
 *     message_id already stored is KMQ_OK too, and the row is not changed
 *     (idempotent: a retried write cannot duplicate a message).
 *   - Order: a user's rows are in "created order", (created_at, id): the time
 *     the message was first handed to kmq (the producer passes its send time),
 *     then insertion order. kmq_fallback_claim() only ever hands out a user's
 *     *head*: its first row that is pending or retrying. Row n+1 of a user
 *     becomes claimable only once row n is success or failed, so a user is
 *     replayed strictly in order while different users go in parallel.
 *   - Claims are leases: a claimed row carries claimed_by (a token unique to
 *     the claiming handle) and claim_until. Nobody else can claim it before
 *     claim_until; after it (the claimer crashed), anybody can. The claim is a
 *     compare-and-set UPDATE (WHERE id AND unclaimed-or-expired) inside
 *     BEGIN IMMEDIATE on SQLite and a single autocommit statement on MariaDB
 *     (InnoDB re-checks the WHERE on the latest version under the row lock),
 *     so several processes on one database never hold the same row. The
 *     marks (kmq_fallback_done/_retry) only apply while the caller still
 *     holds the claim (same token): a late claimer whose lease expired
 *     cannot undo the newer claimer's work. Replays are at least once (a
 *     claimer that delivers and dies before marking is replayed again).
 *   - After max_retries failed attempts a row is "failed": kept for a
 *     person, counted, never claimed again; the user's next row proceeds.
 *
 * Threads: a kmq_fallback_t may be used from any number of threads; calls are
 * serialised on one database connection per handle (a write is a disk
 * flush: this is the failure path, not the hot one). Errors carry a reason
 * in errstr; the MariaDB password never appears in errstr or logs.
 */
#ifndef KMQ_FALLBACK_H
#define KMQ_FALLBACK_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"
#include "kmq/dlq.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_fallback_s kmq_fallback_t;

typedef enum {
  KMQ_FALLBACK_PENDING,  /* waiting for its turn or its next_retry_at */
  KMQ_FALLBACK_RETRYING, /* claimed, or tried at least once */
  KMQ_FALLBACK_SUCCESS,  /* delivered by the compensator */
  KMQ_FALLBACK_FAILED,   /* gave up after max_retries: for a person */
} kmq_fallback_status_t;

/* One message to store. Every pointer is borrowed for the call. */
typedef struct {
  const char *message_id; /* unique; required */
  const char *user_id;    /* external_userid; required (may be "") */
  const char *open_kf_id; /* may be NULL */
  const char *msg_type;   /* may be NULL */
  const char *topic;      /* where a replay produces it; required */
  const void *key;        /* record key; may be NULL */
  size_t key_len;
  const void *value; /* "content": the record value */
  size_t value_len;
  const rd_kafka_headers_t *headers; /* may be NULL; packed into the row */
  int32_t partition; /* original partition, -1 when unknown */
  int64_t offset;    /* original offset, -1 when unknown */
  const char *source; /* "producer", "dlq" or "consumer" */
  const char *error;  /* error_message: why it is here; may be NULL */
  int64_t created_at; /* ms since epoch; 0: now */
} kmq_fallback_row_t;

/* A claimed row. Owned by the array kmq_fallback_claim() returned. */
typedef struct {
  int64_t id;
  char *message_id, *user_id, *topic, *source;
  void *key;
  size_t key_len;
  void *value;
  size_t value_len;
  void *headers; /* packed; kmq_fallback_headers_unpack */
  size_t headers_len;
  int32_t partition;
  int64_t offset;
  int retry_count, max_retries;
  int64_t created_at;
} kmq_fallback_entry_t;

typedef struct {
  int64_t stored;      /* rows this handle inserted (duplicates excluded) */
  int64_t compensated; /* rows this handle marked success */
  int64_t failed;      /* rows this handle marked failed (max_retries) */
  int64_t pending;     /* rows pending or retrying in the table, now */
  int64_t oldest_pending_age_seconds; /* of those, the oldest; 0 if none */
} kmq_fallback_stats_t;

/* 1 when conf selects a backend (kmq.fallback.backend is not "none"). */
int kmq_fallback_configured(const kmq_conf_t *conf);

/* Opens the store that conf selects and creates the table and indexes if
 * missing. Returns NULL with errstr filled when the backend is "none", the
 * configuration is invalid or the database cannot be opened. Destroy with
 * kmq_fallback_destroy(). */
kmq_fallback_t *kmq_fallback_new(const kmq_conf_t *conf, char *errstr,
                                 size_t errstr_size);

/* Closes the connection and frees. No-op on NULL. Not while another thread
 * uses the handle. */
void kmq_fallback_destroy(kmq_fallback_t *fb);

/* Stores row durably (contract above). *duplicate (may be NULL) is set to 1
 * when message_id was already there. Errors: KMQ_ERR_INVALID_ARG (a required
 * field missing), KMQ_ERR_NOMEM, KMQ_ERR_FALLBACK (database error, errstr
 * says which); on error no row was written. Any thread. */
kmq_err_t kmq_fallback_put(kmq_fallback_t *fb, const kmq_fallback_row_t *row,
                           int *duplicate, char *errstr, size_t errstr_size);

/* Claims up to max due heads (one per user, oldest next_retry_at first) for
 * lease_ms, marks them retrying and returns them in a new array *out of *n
 * entries, which the caller frees with kmq_fallback_entries_free(); *out is
 * NULL when *n is 0. Errors: KMQ_ERR_NOMEM, KMQ_ERR_FALLBACK; then nothing is
 * claimed and *out is NULL. Any thread. */
kmq_err_t kmq_fallback_claim(kmq_fallback_t *fb, size_t max, int64_t lease_ms,
                             kmq_fallback_entry_t **out, size_t *n,
                             char *errstr, size_t errstr_size);

void kmq_fallback_entries_free(kmq_fallback_entry_t *e, size_t n);

/* Marks a claimed row success (it was delivered). KMQ_ERR_NOT_FOUND when this
 * handle no longer holds the claim (expired and taken by another). */
kmq_err_t kmq_fallback_done(kmq_fallback_t *fb, int64_t id, char *errstr,
                            size_t errstr_size);

/* kmq_fallback_done() for n rows in one transaction (one disk flush): marks
 * those still claimed by this handle; *marked (may be NULL) = how many. */
kmq_err_t kmq_fallback_done_many(kmq_fallback_t *fb, const int64_t *ids,
                                 size_t n, size_t *marked, char *errstr,
                                 size_t errstr_size);

/* A delivery of a claimed row failed: counts the attempt, records error and
 * either makes the row due again at next_retry_at (ms since epoch) or, once
 * retry_count reaches max_retries, marks it failed (*gave_up = 1; may be
 * NULL). KMQ_ERR_NOT_FOUND when the claim is no longer held. */
kmq_err_t kmq_fallback_retry(kmq_fallback_t *fb, int64_t id,
                             int64_t next_retry_at, const char *error,
                             int *gave_up, char *errstr, size_t errstr_size);

/* *pending = number of user_id's rows that are pending or retrying. */
kmq_err_t kmq_fallback_user_pending(kmq_fallback_t *fb, const char *user_id,
                                    int64_t *pending, char *errstr,
                                    size_t errstr_size);

/* Calls cb once for every distinct user with pending or retrying rows (at
 * startup, to know who must stay in the store). */
kmq_err_t kmq_fallback_pending_users(kmq_fallback_t *fb,
                                     void (*cb)(const char *user_id,
                                                void *opaque),
                                     void *opaque, char *errstr,
                                     size_t errstr_size);

/* Counters of this handle plus pending / oldest age read from the table
 * (so a query; a failed query leaves those two at -1). Any thread. */
void kmq_fallback_stats(kmq_fallback_t *fb, kmq_fallback_stats_t *out);

/* Rows in the table by status (index: kmq_fallback_status_t), for one user
 * (user_id) or all (NULL), and the created_at of the oldest pending or
 * retrying one (0: none). A query for tools (kmqctl fallback stats), not
 * for a hot path. Errors: KMQ_ERR_FALLBACK, KMQ_ERR_NOMEM. Any thread. */
typedef struct {
  int64_t count[4];
  int64_t oldest_live_created_at;
} kmq_fallback_counts_t;
kmq_err_t kmq_fallback_counts(kmq_fallback_t *fb, const char *user_id,
                              kmq_fallback_counts_t *out, char *errstr,
                              size_t errstr_size);

/* One row as kmq_fallback_list() shows it; every pointer is valid during
 * the callback only (bytes, not NUL-terminated: key, value; the strings
 * are NUL-terminated, error may be NULL). */
typedef struct {
  int64_t id;
  const char *message_id, *user_id, *topic, *source, *status, *error;
  const void *key;
  size_t key_len;
  const void *value;
  size_t value_len;
  int32_t partition;
  int64_t offset;
  int retry_count, max_retries;
  int64_t created_at, updated_at, next_retry_at;
} kmq_fallback_view_t;

/* Calls cb for up to max rows in created order (created_at, id), only
 * those with status (-1: any) and of user_id (NULL: any). Read-only: no
 * claim, no change. Errors: KMQ_ERR_FALLBACK, KMQ_ERR_NOMEM (cb may have
 * been called for some rows). Any thread; cb must not call back into fb. */
kmq_err_t kmq_fallback_list(kmq_fallback_t *fb, int status,
                            const char *user_id, size_t max,
                            void (*cb)(const kmq_fallback_view_t *row,
                                       void *opaque),
                            void *opaque, char *errstr, size_t errstr_size);

/* The store as a DLQ fallback hook (kmq_fallback_cb; opaque = the
 * kmq_fallback_t): stores the dead letter the DLQ could not take, verbatim
 * (topic = the DLQ topic, source "dlq"), with message_id = its "msg_id"
 * header, or when absent a digest of (key, value) so that a retried hook call
 * is idempotent. */
kmq_err_t kmq_fallback_hook(const kmq_fallback_record_t *rec, void *opaque);

/* Headers <-> bytes for the "headers" column: per header, u32 name length
 * (little endian), name, i32 value length (-1: NULL value), value. Pack
 * returns a new buffer of *len bytes (free()), NULL when out of memory.
 * Unpack returns new headers (rd_kafka_headers_destroy) or NULL when buf is
 * malformed. Any thread. */
void *kmq_fallback_headers_pack(const rd_kafka_headers_t *h, size_t *len);
rd_kafka_headers_t *kmq_fallback_headers_unpack(const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_FALLBACK_H */
