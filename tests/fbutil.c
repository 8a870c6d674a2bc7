#include "fbutil.h"

#include <check.h>
#include <mysql.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

const char *kt_fb_name(int backend) {
  return backend == KT_FB_SQLITE ? "sqlite" : "mysql";
}

/* Splits $KMQ_MARIADB_URL (mysql://user:pass@host:port/db). */
static void kt_fb_url(char *user, char *pass, char *host, unsigned *port,
                      char *db) {
  const char *url = getenv("KMQ_MARIADB_URL");
  ck_assert_msg(url && *url, "KMQ_MARIADB_URL is not set: start MariaDB with "
                             "scripts/mariadb.sh start (scripts/test.sh "
                             "does)");
  ck_assert_int_eq(sscanf(url, "mysql://%63[^:]:%63[^@]@%63[^:]:%u/%63s",
                          user, pass, host, port, db),
                   5);
}

void kt_fb_mysql_exec(const char *dbname, const char *sql) {
  char user[64], pass[64], host[64], db[64];
  unsigned port;
  kt_fb_url(user, pass, host, &port, db);
  MYSQL *m = mysql_init(NULL);
  ck_assert_ptr_nonnull(m);
  ck_assert_msg(mysql_real_connect(m, host, user, pass,
                                   dbname ? dbname : db, port, NULL, 0),
                "%s", mysql_error(m));
  ck_assert_msg(!mysql_query(m, sql), "%s: %s", sql, mysql_error(m));
  mysql_close(m);
}

void kt_fb_conf(kmq_conf_t *conf, int backend, char *where, size_t size) {
  char errstr[512], buf[512];
  ck_assert(!kmq_conf_set(conf, "kmq.fallback.backend", kt_fb_name(backend),
                          errstr, sizeof(errstr)));
  if (backend == KT_FB_SQLITE) {
    char dir[] = "/tmp/kmq-fb-test.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(buf, sizeof(buf), "%s/store.db", dir);
    ck_assert(!kmq_conf_set(conf, "kmq.fallback.path", buf, errstr,
                            sizeof(errstr)));
  } else {
    char user[64], pass[64], host[64], db[64], name[64], sql[128];
    unsigned port;
    kt_fb_url(user, pass, host, &port, db);
    kt_unique_name(name, sizeof(name), "kt");
    for (char *p = name; *p; p++)
      if (*p == '-')
        *p = '_';
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    kt_fb_mysql_exec(NULL, sql);
    snprintf(buf, sizeof(buf), "mysql://%s:%s@%s:%u/%s", user, pass, host,
             port, name);
    ck_assert(!kmq_conf_set(conf, "kmq.fallback.url", buf, errstr,
                            sizeof(errstr)));
    snprintf(buf, sizeof(buf), "%s", name);
  }
  if (where)
    snprintf(where, size, "%s", buf);
}

long long kt_fb_count(const kmq_conf_t *conf, int backend, const char *where) {
  char sql[512];
  long long n = -1;
  snprintf(sql, sizeof(sql),
           "SELECT COUNT(*) FROM kafka_fallback_messages WHERE %s", where);
  if (backend == KT_FB_SQLITE) {
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open_v2(kmq_conf_get(conf, "kmq.fallback.path"),
                                     &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st;
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
                  "%s", sqlite3_errmsg(db));
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  }
  char user[64], pass[64], host[64], db[64];
  unsigned port;
  ck_assert_int_eq(sscanf(kmq_conf_get(conf, "kmq.fallback.url"),
                          "mysql://%63[^:]:%63[^@]@%63[^:]:%u/%63s", user,
                          pass, host, &port, db),
                   5);
  MYSQL *m = mysql_init(NULL);
  ck_assert_ptr_nonnull(m);
  ck_assert_msg(mysql_real_connect(m, host, user, pass, db, port, NULL, 0),
                "%s", mysql_error(m));
  ck_assert_msg(!mysql_query(m, sql), "%s: %s", sql, mysql_error(m));
  MYSQL_RES *res = mysql_store_result(m);
  ck_assert_ptr_nonnull(res);
  MYSQL_ROW row = mysql_fetch_row(res);
  ck_assert_ptr_nonnull(row);
  n = strtoll(row[0], NULL, 10);
  mysql_free_result(res);
  mysql_close(m);
  return n;
}

void kt_fb_mariadb_sh(const char *src, const char *state, const char *cmd,
                      char *url, size_t size) {
  char line[1024], sh[2048];
  snprintf(sh, sizeof(sh),
           "KMQ_MARIADB_STATE='%s' bash '%s/scripts/mariadb.sh' %s",
           state, src, cmd);
  FILE *f = popen(sh, "r");
  ck_assert_ptr_nonnull(f);
  while (fgets(line, sizeof(line), f))
    if (url && !strncmp(line, "export KMQ_MARIADB_URL=", 23))
      snprintf(url, size, "%.*s", (int)strcspn(line + 23, "\n"), line + 23);
  ck_assert_msg(pclose(f) == 0, "scripts/mariadb.sh %s failed", cmd);
}

kmq_conf_t *kt_fb_dlq_down_conf(const char *topic, const char *group,
                                const char *max_backoff_ms) {
  char errstr[512];
  kmq_conf_t *c = kmq_conf_new();
  const char *kv[][2] = {
      {"bootstrap.servers", kt_bootstrap()},
      {"kmq.topic", topic},
      {"kmq.dlq.topic", "kmq-invalid/dlq"}, /* '/' is not allowed */
      {"group.id", group},
      {"kmq.commit.interval.ms", "200"},
      {"kmq.sched.workers", "2"},
      {"kmq.metrics.interval.ms", "50"},
      {"kmq.dlq.retry.backoff.ms", "100"},
      {"kmq.dlq.retry.backoff.max.ms", max_backoff_ms},
      {"producer.message.timeout.ms", "3000"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
    ck_assert_msg(!kmq_conf_set(c, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s", errstr);
  return c;
}
