/* Redaction of secrets in texts (lib/redact.h). */
#include "lib/redact.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "lib/util.h"

/* Secret by name; the librdkafka keys below hold one without saying so.
 * ssl.key.pem is a private key; sasl.oauthbearer.config carries the
 * unsecured-JWT settings and librdkafka quotes it back when it is bad. */
static const char *const kmq__secret_words[] = {"password", "secret", "token",
                                                "aes_key"};
static const char *const kmq__secret_keys[] = {"ssl.key.pem",
                                               "sasl.oauthbearer.config"};

int kmq__conf_is_secret(const char *name) {
  if (!name)
    return 0;
  for (size_t i = 0; i < sizeof(kmq__secret_words) / sizeof(char *); i++)
    if (strcasestr(name, kmq__secret_words[i]))
      return 1;
  if (!strncmp(name, "producer.", 9) || !strncmp(name, "consumer.", 9))
    name += 9;
  for (size_t i = 0; i < sizeof(kmq__secret_keys) / sizeof(char *); i++)
    if (!strcasecmp(name, kmq__secret_keys[i]))
      return 1;
  return 0;
}

/* Replaces every occurrence of the n bytes at s in buf, then a prefix of
 * them (4 bytes or more) that ends buf: the text was cut inside the secret.
 * A replacement that makes the text longer cuts its end to fit size. */
static void kmq__redact_span(char *buf, size_t size, const char *s, size_t n) {
  const size_t rn = sizeof(KMQ__REDACTED) - 1;
  if (!n || !size)
    return;
  size_t len = strlen(buf); /* < size */
  size_t off = 0;
  char *at;
  while ((at = memmem(buf + off, len - off, s, n))) {
    off = (size_t)(at - buf);
    /* at + n <= buf + len < buf + size - 1: room >= 1, so off advances. */
    size_t tail = len - off - n, room = size - 1 - off;
    size_t mark = rn < room ? rn : room;
    size_t keep = tail < room - mark ? tail : room - mark;
    memmove(at + mark, at + n, keep);
    memcpy(at, KMQ__REDACTED, mark);
    len = off + mark + keep;
    buf[len] = '\0';
    off += mark;
  }
  for (size_t k = n - 1 < len ? n - 1 : len; k >= 4; k--)
    if (!memcmp(buf + len - k, s, k)) {
      size_t room = size - 1 - (len - k);
      size_t mark = rn < room ? rn : room;
      memcpy(buf + len - k, KMQ__REDACTED, mark);
      buf[len - k + mark] = '\0';
      break;
    }
}

void kmq__redact(char *buf, size_t size, const char *value) {
  if (!buf || !value || !*value)
    return;
  kmq__redact_span(buf, size, value, strlen(value));
  /* Words: separated by white space, and the value of a "key=value" word,
   * so that a quoted remainder of the value is caught too. */
  const char *p = value;
  while (*p) {
    while (*p && isspace((unsigned char)*p))
      p++;
    const char *w = p;
    while (*p && !isspace((unsigned char)*p))
      p++;
    size_t n = (size_t)(p - w);
    if (n >= 4 && n < strlen(value))
      kmq__redact_span(buf, size, w, n);
    const char *eq = memchr(w, '=', n);
    if (eq && (size_t)(p - eq - 1) >= 4)
      kmq__redact_span(buf, size, eq + 1, (size_t)(p - eq - 1));
  }
}

void kmq__rdk_conf_redact(const rd_kafka_conf_t *rc, char *buf, size_t size) {
  if (!rc)
    return;
  size_t cnt;
  /* rd_kafka_conf_dump() takes a non-const conf but only reads it. */
  const char **kv = rd_kafka_conf_dump((rd_kafka_conf_t *)rc, &cnt);
  for (size_t i = 0; i + 1 < cnt; i += 2)
    if (kmq__conf_is_secret(kv[i]))
      kmq__redact(buf, size, kv[i + 1]);
  rd_kafka_conf_dump_free(kv, cnt);
}

rd_kafka_t *kmq__rdk_new(rd_kafka_type_t type, rd_kafka_conf_t *rc,
                         char *errstr, size_t errstr_size) {
  rd_kafka_t *rk = rd_kafka_new(type, rc, errstr, errstr_size);
  if (!rk) /* rc is still whole: the caller owns it on failure */
    kmq__rdk_conf_redact(rc, errstr, errstr_size);
  return rk;
}

/* Costs a dump of the client's configuration per line (~15 us on the
 * development machine): log lines are rare unless librdkafka's debug is on,
 * and keeping a copy of the secrets instead would need a place per client
 * that the log callback cannot reach (the client's opaque is kmq's object). */
void kmq__rdk_log(const rd_kafka_t *rk, int level, const char *fac,
                  const char *buf) {
  char line[2048];
  snprintf(line, sizeof(line), "%s", buf);
  /* rd_kafka_conf() reads the client's configuration, which librdkafka
   * keeps unchanged for the client's lifetime: safe from its threads. */
  if (rk)
    kmq__rdk_conf_redact(rd_kafka_conf((rd_kafka_t *)rk), line, sizeof(line));
  struct timeval tv;
  gettimeofday(&tv, NULL);
  fprintf(stderr, "%%%i|%u.%03u|%s|%s| %s\n", level, (unsigned)tv.tv_sec,
          (unsigned)(tv.tv_usec / 1000), fac,
          rk ? rd_kafka_name(rk) : "", line);
}

