/* kmqctl fallback stats | list | replay: the fallback store (fallback.h)
 * that the configuration selects (kmq.fallback.backend, .path, .url: -F /
 * -X). stats and list only read; replay runs a compensator (compensator.h)
 * on this thread until nothing is due. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/compensator.h"
#include "kmq/fallback.h"
#include "kmqctl.h"
#include "lib/util.h"

static const char fb_help[] =
    "usage: kmqctl fallback stats [--user U]\n"
    "       kmqctl fallback list [--status S] [--user U] [--max N]\n"
    "       kmqctl fallback replay [--dry-run] [--max-time MS]\n"
    "The fallback store the configuration selects: kmq.fallback.backend\n"
    "(sqlite | mysql), kmq.fallback.path (SQLite file), kmq.fallback.url\n"
    "(mysql://user:pass@host:port/db; the password is never printed), from\n"
    "-F FILE and -X key=value (kmq.fallback.* as in the runtime). Only\n"
    "replay (without --dry-run) needs a broker (-b, bootstrap.servers).\n"
    "  stats    rows by status (pending, retrying, success, failed), their\n"
    "           total (stored) and the age of the oldest pending or retrying\n"
    "           row, in seconds\n"
    "  list     rows as JSON lines in created order (the replay order of a\n"
    "           user): id, message_id, user_id, topic, source, status,\n"
    "           error, partition, offset, retry_count, max_retries,\n"
    "           created_at, updated_at, next_retry_at (ms since the epoch),\n"
    "           key and value (null plus key_base64 / value_base64 when not\n"
    "           UTF-8)\n"
    "    --status S  pending | retrying | success | failed (default: any)\n"
    "    --user U    only user U's rows (default: all)\n"
    "    --max N     at most N rows (default 100)\n"
    "  replay   a run-once compensator: claims the due rows (one head per\n"
    "           user, in order), produces each to its topic (bootstrap.servers\n"
    "           and producer.* from the configuration), marks delivered rows\n"
    "           success, counts failures (kmq.fallback.max.retries, backoff),\n"
    "           until nothing is due or --max-time passed\n"
    "    --dry-run     list the rows that are pending or retrying instead;\n"
    "                  claim and produce nothing\n"
    "    --max-time MS stop starting rounds after MS ms (default 60000)\n"
    "Exit: 0 done; 1 replay: some deliveries failed or rows were given up,\n"
    "or rows are still due; 2 usage or configuration, or no store\n"
    "configured; 3 the store or Kafka could not be used.\n";

enum { OPT_USER = KMQCTL_OPT_FIRST_LOCAL, OPT_STATUS, OPT_MAX, OPT_DRY,
       OPT_MAXTIME };

typedef struct {
  const char *user;
  int status;
  int64_t max, max_time;
  int dry;
} fb_opts_t;

static int fb_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  fb_opts_t *o = opaque;
  static const char *const names[] = {"pending", "retrying", "success",
                                      "failed"};
  switch (c) {
  case OPT_USER: o->user = arg; return 0;
  case OPT_STATUS:
    for (int i = 0; i < 4; i++)
      if (!strcmp(arg, names[i])) {
        o->status = i;
        return 0;
      }
    fprintf(stderr, "%s: --status: \"%s\" is not pending, retrying, "
            "success or failed\n", ctl->prog, arg);
    return -1;
  case OPT_MAX: return kmqctl_parse_int(ctl, "max", arg, 1, INT64_MAX, &o->max);
  case OPT_MAXTIME:
    return kmqctl_parse_int(ctl, "max-time", arg, 1, 86400000, &o->max_time);
  default: o->dry = 1; return 0;
  }
}

static void print_row(const kmq_fallback_view_t *r, void *opaque) {
  int64_t *n = opaque;
  json_t *o = json_object();
  json_object_set_new(o, "id", json_integer(r->id));
  json_object_set_new(o, "message_id", json_string(r->message_id));
  json_object_set_new(o, "user_id", json_string(r->user_id));
  json_object_set_new(o, "topic", json_string(r->topic));
  json_object_set_new(o, "source", json_string(r->source));
  json_object_set_new(o, "status", json_string(r->status));
  json_object_set_new(o, "error",
                      r->error ? json_string(r->error) : json_null());
  json_object_set_new(o, "partition", json_integer(r->partition));
  json_object_set_new(o, "offset", json_integer(r->offset));
  json_object_set_new(o, "retry_count", json_integer(r->retry_count));
  json_object_set_new(o, "max_retries", json_integer(r->max_retries));
  json_object_set_new(o, "created_at", json_integer(r->created_at));
  json_object_set_new(o, "updated_at", json_integer(r->updated_at));
  json_object_set_new(o, "next_retry_at", json_integer(r->next_retry_at));
  kmqctl_put_bytes(o, "key", r->key, r->key_len);
  kmqctl_put_bytes(o, "value", r->value, r->value_len);
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s)
    puts(s);
  free(s);
  json_decref(o);
  ++*n;
}

static int fb_stats(kmqctl_t *ctl, kmq_fallback_t *fb, const fb_opts_t *o) {
  kmq_fallback_counts_t c;
  char errstr[512];
  if (kmq_fallback_counts(fb, o->user, &c, errstr, sizeof(errstr)))
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "%s", errstr);
  int64_t age = c.oldest_live_created_at
                    ? (kmq__wall_ms() - c.oldest_live_created_at) / 1000
                    : 0;
  printf("stored %lld\npending %lld\nretrying %lld\nsuccess %lld\n"
         "failed %lld\noldest_pending_age_seconds %lld\n",
         (long long)(c.count[0] + c.count[1] + c.count[2] + c.count[3]),
         (long long)c.count[0], (long long)c.count[1], (long long)c.count[2],
         (long long)c.count[3], (long long)(age > 0 ? age : 0));
  return KMQCTL_OK;
}

static int fb_list(kmqctl_t *ctl, kmq_fallback_t *fb, const fb_opts_t *o,
                   int status) {
  char errstr[512];
  int64_t n = 0;
  if (kmq_fallback_list(fb, status, o->user, (size_t)o->max, print_row, &n,
                        errstr, sizeof(errstr)))
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "%s", errstr);
  return KMQCTL_OK;
}

static int fb_replay(kmqctl_t *ctl, kmq_fallback_t *fb, const fb_opts_t *o) {
  char errstr[512];
  if (o->dry) {
    /* What a replay would take: the live rows, in order. */
    fb_opts_t l = *o;
    int rc = fb_list(ctl, fb, &l, KMQ_FALLBACK_PENDING);
    return rc ? rc : fb_list(ctl, fb, &l, KMQ_FALLBACK_RETRYING);
  }
  kmq_compensator_t *c =
      kmq_compensator_new(ctl->conf, fb, NULL, NULL, errstr, sizeof(errstr));
  if (!c)
    return kmqctl_fail(ctl, KMQCTL_USAGE, "%s", errstr);
  kmq_err_t err = kmq_compensator_run_once(c, (int)o->max_time);
  kmq_compensator_stats_t st;
  kmq_compensator_stats(c, &st);
  kmq_compensator_destroy(c);
  printf("claimed %lld\ndelivered %lld\nretried %lld\nfailed %lld\n",
         (long long)st.claimed, (long long)st.delivered,
         (long long)st.retried, (long long)st.failed);
  if (err && err != KMQ_ERR_TIMED_OUT)
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "replay: %s", kmq_err2str(err));
  kmq_fallback_counts_t n;
  if (kmq_fallback_counts(fb, NULL, &n, errstr, sizeof(errstr)))
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "%s", errstr);
  if (st.retried || st.failed || err == KMQ_ERR_TIMED_OUT)
    return kmqctl_fail(ctl, KMQCTL_NO,
                       "replay incomplete: %lld failed attempts, %lld rows "
                       "given up, %lld rows still pending or retrying",
                       (long long)st.retried, (long long)st.failed,
                       (long long)(n.count[0] + n.count[1]));
  return KMQCTL_OK;
}

int kmqctl_fallback(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"user", required_argument, 0, OPT_USER},
      {"status", required_argument, 0, OPT_STATUS},
      {"max", required_argument, 0, OPT_MAX},
      {"dry-run", no_argument, 0, OPT_DRY},
      {"max-time", required_argument, 0, OPT_MAXTIME},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  static const char *const subs[] = {"stats", "list", "replay"};
  int sub = -1;
  for (int i = 0; argc >= 2 && i < 3; i++)
    if (!strcmp(argv[1], subs[i]))
      sub = i;
  if (sub < 0) /* --help, or usage */
    return kmqctl_subcommand(ctl, argc, argv, "stats|list|replay", fb_help);
  fb_opts_t o = {NULL, -1, 100, 60000, 0};
  int rc = kmqctl_parse(ctl, argc - 1, argv + 1, opts, fb_help, fb_opt, &o);
  if (rc >= 0)
    return rc;
  if ((sub != 1 && o.status >= 0) || (sub != 2 && o.dry) ||
      (sub == 2 && o.user))
    return kmqctl_fail(ctl, KMQCTL_USAGE,
                       "that option does not apply to \"fallback %s\" "
                       "(kmqctl fallback --help)",
                       subs[sub]);
  /* Only a replay that produces talks to Kafka. */
  rc = kmqctl_conf_build(ctl, sub == 2 && !o.dry);
  if (rc)
    return rc;
  if (!kmq_fallback_configured(ctl->conf))
    return kmqctl_fail(ctl, KMQCTL_USAGE,
                       "no fallback store configured: set "
                       "kmq.fallback.backend (sqlite | mysql) with -F or -X");
  char errstr[512];
  kmq_fallback_t *fb = kmq_fallback_new(ctl->conf, errstr, sizeof(errstr));
  if (!fb)
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "%s", errstr);
  rc = sub == 0   ? fb_stats(ctl, fb, &o)
       : sub == 1 ? fb_list(ctl, fb, &o, o.status)
                  : fb_replay(ctl, fb, &o);
  kmq_fallback_destroy(fb);
  return rc;
}
