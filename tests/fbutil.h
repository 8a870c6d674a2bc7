/* Helpers for the fallback-store tests: one fresh, empty store per call on
 * either backend, so that one test body runs on both. Test threads only;
 * they assert (check) instead of returning errors. */
#ifndef KMQ_TESTS_FBUTIL_H
#define KMQ_TESTS_FBUTIL_H

#include <stddef.h>

#include "kmq/conf.h"

enum { KT_FB_SQLITE = 0, KT_FB_MYSQL = 1, KT_FB_NBACKENDS = 2 };

/* "sqlite" or "mysql". */
const char *kt_fb_name(int backend);

/* Points conf at a new empty store of backend: SQLite, a file in a new
 * temporary directory (its path into where, may be NULL); MariaDB, a new
 * database on the server of $KMQ_MARIADB_URL (scripts/mariadb.sh), whose
 * name goes into where. A test that needs the server fails (does not skip)
 * when the variable is unset: scripts/test.sh always starts one. */
void kt_fb_conf(kmq_conf_t *conf, int backend, char *where, size_t size);

/* Runs one SQL statement on the MariaDB database db of $KMQ_MARIADB_URL
 * (NULL: the URL's own). Asserts it succeeded. */
void kt_fb_mysql_exec(const char *db, const char *sql);

/* SELECT COUNT(*) FROM kafka_fallback_messages WHERE <where> on the store
 * conf points at, through its own connection (not the store's API: for
 * observing a store another process uses without touching it). Asserts. */
long long kt_fb_count(const kmq_conf_t *conf, int backend, const char *where);

/* Runs scripts/mariadb.sh (below the source dir `src`) with cmd (start,
 * stop, down, up) on the private server whose state is in `state`; for
 * start and up, the server's URL (KMQ_MARIADB_URL) into url (may be NULL).
 * Asserts the script succeeded; its stderr (the server's error log when
 * it does not come up) stays the test's, for ctest to show on failure. */
void kt_fb_mariadb_sh(const char *src, const char *state, const char *cmd,
                      char *url, size_t size);

/* A conf for a runtime on topic/group whose dead letters neither the DLQ
 * nor (while down) the store takes: the DLQ topic is a name the broker
 * refuses, dead-letter retries are fast (100 ms doubling to max_backoff),
 * metrics sampled every 50 ms, 2 workers, commits every 200 ms. */
kmq_conf_t *kt_fb_dlq_down_conf(const char *topic, const char *group,
                                const char *max_backoff_ms);

#endif
