/* kmqctl: global options, the configuration, argument checks. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

#include "kmqctl.h"

const char kmqctl_global_help[] =
    "Global options (before or after the subcommand):\n"
    "  -b, --bootstrap HOST:PORT[,..]  brokers (default: bootstrap.servers\n"
    "                                  from -F, else $KMQ_BOOTSTRAP)\n"
    "  -F, --config FILE               configuration file (config/kafka.yaml's\n"
    "                                  shape; default: $KMQ_CONFIG when set)\n"
    "      --profile NAME              profile of the file or built in:\n"
    "                                  development|dev, production|prod\n"
    "  -X KEY=VALUE                    any librdkafka (or kmq.*) property,\n"
    "                                  e.g. -X security.protocol=ssl; after -F\n"
    "      --timeout MS                bound of each broker request\n"
    "                                  (default 10000)\n"
    "  -h, --help                      this help\n"
    "Exit codes: 0 ok; 1 the answer is no (unhealthy, drift, failed or\n"
    "skipped records, refused); 2 bad arguments or configuration; 3 Kafka\n"
    "could not be asked (unreachable within --timeout, missing topic/group).\n";

int kmqctl_fail(const kmqctl_t *ctl, int code, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", ctl->prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return code;
}

int kmqctl_parse_int(const kmqctl_t *ctl, const char *opt, const char *arg,
                     int64_t min, int64_t max, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(arg, &end, 10);
  if (errno || end == arg || *end) {
    kmqctl_fail(ctl, KMQCTL_USAGE, "--%s: \"%s\" is not an integer", opt, arg);
    return -1;
  }
  if (v < min || v > max) {
    kmqctl_fail(ctl, KMQCTL_USAGE, "--%s: %lld is out of range %lld..%lld",
                opt, v, (long long)min, (long long)max);
    return -1;
  }
  *out = v;
  return 0;
}

int kmqctl_global_opt(kmqctl_t *ctl, int c, const char *arg) {
  int64_t v;
  switch (c) {
  case 'b':
    ctl->bootstrap = arg;
    return 0;
  case 'F':
    ctl->file = arg;
    return 0;
  case KMQCTL_OPT_PROFILE:
    ctl->profile = arg;
    return 0;
  case 'X':
    if (!strchr(arg, '=') || arg[0] == '=') {
      kmqctl_fail(ctl, KMQCTL_USAGE, "-X %s: expected KEY=VALUE", arg);
      return -1;
    }
    if (ctl->nx == (int)(sizeof(ctl->xs) / sizeof(ctl->xs[0]))) {
      kmqctl_fail(ctl, KMQCTL_USAGE, "too many -X options");
      return -1;
    }
    ctl->xs[ctl->nx++] = arg;
    return 0;
  case KMQCTL_OPT_TIMEOUT:
    if (kmqctl_parse_int(ctl, "timeout", arg, 1, 3600000, &v))
      return -1;
    ctl->timeout_ms = (int)v;
    return 0;
  case 'h':
    return 'h';
  default: /* getopt printed what was wrong */
    return -1;
  }
}

int kmqctl_conf_build(kmqctl_t *ctl, int need_broker) {
  char err[1024];
  ctl->conf = kmq_conf_new();
  if (!ctl->conf)
    return kmqctl_fail(ctl, KMQCTL_USAGE, "out of memory");
  const char *file = ctl->file ? ctl->file : getenv("KMQ_CONFIG");
  if (file && *file) {
    if (kmq_conf_load_file(ctl->conf, file, ctl->profile, err, sizeof(err)))
      return kmqctl_fail(ctl, KMQCTL_USAGE, "%s", err);
  } else if (ctl->profile &&
             kmq_conf_set_profile(ctl->conf, ctl->profile, err, sizeof(err))) {
    return kmqctl_fail(ctl, KMQCTL_USAGE, "--profile: %s", err);
  }
  const char *boot = ctl->bootstrap;
  if (!boot && !kmq_conf_get(ctl->conf, "bootstrap.servers"))
    boot = getenv("KMQ_BOOTSTRAP");
  if (boot && kmq_conf_set(ctl->conf, "bootstrap.servers", boot, err,
                           sizeof(err)))
    return kmqctl_fail(ctl, KMQCTL_USAGE, "-b %s: %s", boot, err);
  /* librdkafka's own log lines repeat what kmqctl reports once (e.g. a
   * refused connection every second): errors only above critical, unless
   * asked for with -X log_level=N. */
  if (!kmq_conf_get(ctl->conf, "log_level"))
    kmq_conf_set(ctl->conf, "log_level", "2", err, sizeof(err));
  for (int i = 0; i < ctl->nx; i++) {
    char key[256];
    const char *eq = strchr(ctl->xs[i], '=');
    size_t kn = (size_t)(eq - ctl->xs[i]);
    if (kn >= sizeof(key))
      return kmqctl_fail(ctl, KMQCTL_USAGE, "-X: key too long");
    memcpy(key, ctl->xs[i], kn);
    key[kn] = '\0';
    if (kmq_conf_set(ctl->conf, key, eq + 1, err, sizeof(err)))
      return kmqctl_fail(ctl, KMQCTL_USAGE, "-X %s=%s: %s", key,
                         kmq_conf_is_secret(key) ? "(redacted)" : eq + 1,
                         err);
  }
  if (need_broker && !kmq_conf_get(ctl->conf, "bootstrap.servers"))
    return kmqctl_fail(ctl, KMQCTL_USAGE,
                       "no broker: give -b, -F with bootstrap.servers, or "
                       "set $KMQ_BOOTSTRAP");
  return KMQCTL_OK;
}

const char *kmqctl_topic(const kmqctl_t *ctl, const char *topic) {
  return topic ? topic : kmq_conf_get(ctl->conf, "kmq.topic");
}

const char *kmqctl_need_topic(const kmqctl_t *ctl, const char *topic) {
  topic = kmqctl_topic(ctl, topic);
  if (!topic)
    kmqctl_fail(ctl, KMQCTL_USAGE,
                "no topic: give --topic or kmq.topic in -F/-X");
  return topic;
}

const char *kmqctl_dlq_topic(const kmqctl_t *ctl, const char *dlq,
                             const char *topic, char *buf, size_t size) {
  const char *d = dlq ? dlq : kmq_conf_get(ctl->conf, "kmq.dlq.topic");
  topic = kmqctl_topic(ctl, topic);
  if (d)
    snprintf(buf, size, "%s", d);
  else if (topic)
    snprintf(buf, size, "%s.dlq", topic);
  else
    kmqctl_fail(ctl, KMQCTL_USAGE,
                "no DLQ topic: name it (replay --dlq-topic, dlq inspect "
                "--topic) or set kmq.dlq.topic or kmq.topic (-F/-X)");
  return d || topic ? buf : NULL;
}

const char *kmqctl_group(const kmqctl_t *ctl, const char *group) {
  if (group)
    return group;
  const char *g = kmq_conf_get(ctl->conf, "consumer.group.id");
  return g ? g : kmq_conf_get(ctl->conf, "group.id");
}

int kmqctl_parse(kmqctl_t *ctl, int argc, char **argv,
                 const struct option *opts, const char *help,
                 int (*on_opt)(kmqctl_t *, int, const char *, void *),
                 void *opaque) {
  int c;
  while ((c = getopt_long(argc, argv, KMQCTL_GLOBAL_SHORT, opts, NULL)) != -1) {
    if (c >= KMQCTL_OPT_FIRST_LOCAL) {
      if (on_opt(ctl, c, optarg, opaque))
        return KMQCTL_USAGE;
      continue;
    }
    int r = kmqctl_global_opt(ctl, c, optarg);
    if (r == 'h') {
      fputs(help, stdout);
      fputs(kmqctl_global_help, stdout);
      return KMQCTL_OK;
    }
    if (r < 0)
      return KMQCTL_USAGE;
  }
  if (optind < argc)
    return kmqctl_fail(ctl, KMQCTL_USAGE, "unexpected argument \"%s\"",
                       argv[optind]);
  return -1;
}

int kmqctl_subcommand(kmqctl_t *ctl, int argc, char **argv, const char *sub,
                      const char *help) {
  if (argc >= 2 && !strcmp(argv[1], sub))
    return -1;
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    fputs(help, stdout);
    fputs(kmqctl_global_help, stdout);
    return KMQCTL_OK;
  }
  fputs(help, stderr);
  return kmqctl_fail(ctl, KMQCTL_USAGE, "expected \"%s %s\"", argv[0], sub);
}

void kmqctl_put_bytes(json_t *o, const char *field, const void *s, size_t n) {
  json_t *v = s ? json_stringn(s, n) : json_null();
  if (v) {
    json_object_set_new(o, field, v);
    return;
  }
  char *b = kmq__base64(s, n, NULL), name[64];
  json_object_set_new(o, field, json_null());
  snprintf(name, sizeof(name), "%s_base64", field);
  json_object_set_new(o, name, b ? json_string(b) : json_null());
  free(b);
}
