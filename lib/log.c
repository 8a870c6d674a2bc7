/* Logging through the application's hook or stderr (lib/log.h). */
#include "lib/log.h"

#include "lib/redact.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* syslog levels, as librdkafka reports its own. */
static int kmq__level(const char *level) {
  if (!strcmp(level, "ERROR"))
    return 3;
  if (!strcmp(level, "WARN"))
    return 4;
  if (!strcmp(level, "INFO"))
    return 6;
  return 7;
}

void kmq__log_to(const kmq__log_sink_t *sink, const char *level,
                 const char *who, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (sink && sink->cb)
    sink->cb(kmq__level(level), who, msg, sink->opaque);
  else
    fprintf(stderr, "%%KMQ|%s|%s: %s\n", level, who, msg);
}

void kmq__log_rdk(const kmq__log_sink_t *sink, int level, const char *fac,
                  const char *buf) {
  if (sink && sink->cb)
    sink->cb(level, fac, buf, sink->opaque);
  else /* librdkafka's default logger's format */
    fprintf(stderr, "%%%d|%s|%s\n", level, fac, buf);
}

void kmq__log_rdk_rk(const kmq__log_sink_t *sink, const rd_kafka_t *rk,
                     int level, const char *fac, const char *buf) {
  char line[2048];
  snprintf(line, sizeof(line), "%s", buf);
  /* rd_kafka_conf() reads the client's configuration, which librdkafka
   * keeps unchanged for the client's lifetime: safe from its threads. */
  if (rk)
    kmq__rdk_conf_redact(rd_kafka_conf((rd_kafka_t *)rk), line, sizeof(line));
  kmq__log_rdk(sink, level, fac, line);
}
