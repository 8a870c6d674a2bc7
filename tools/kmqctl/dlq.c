/* kmqctl dlq inspect: what is in the dead-letter topic, read from the
 * beginning to its current end without a consumer group (nothing is
 * committed, nothing changes). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "kmqctl.h"
#include "lib/util.h"

static const char dlq_help[] =
    "usage: kmqctl dlq inspect [--topic DLQ] [--max N] [--top N] [--json]\n"
    "Reads the dead-letter topic up to its current end and prints the count\n"
    "of letters by reason (header dlq_reason, else the envelope's reason) and\n"
    "by user (the record key), most frequent first.\n"
    "  --topic DLQ  the DLQ topic (default: kmq.dlq.topic, else\n"
    "               <kmq.topic>.dlq)\n"
    "  --max N      read at most N letters (default: all)\n"
    "  --top N      users listed (default 20)\n"
    "  --json       print every letter as one JSON line instead, like kcat -J:\n"
    "               {\"topic\",\"partition\",\"offset\",\"tstype\",\"ts\",\"key\",\n"
    "               \"headers\":[name,value,...],\"payload\"} (key/payload null\n"
    "               and key_base64/payload_base64 when not UTF-8)\n"
    "Exit: 0 read; 2 usage; 3 Kafka could not be asked (missing topic).\n";

typedef struct {
  json_t *reasons, *users; /* name -> count: jansson's hash table */
  int64_t count, max;
  int json;
} inspect_t;

static void print_json(const rd_kafka_message_t *m) {
  json_t *o = json_object();
  rd_kafka_timestamp_type_t tst;
  int64_t ts = rd_kafka_message_timestamp(m, &tst);
  json_object_set_new(o, "topic", json_string(rd_kafka_topic_name(m->rkt)));
  json_object_set_new(o, "partition", json_integer(m->partition));
  json_object_set_new(o, "offset", json_integer(m->offset));
  json_object_set_new(o, "tstype",
                      json_string(tst == RD_KAFKA_TIMESTAMP_CREATE_TIME
                                      ? "create"
                                      : tst == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME
                                            ? "logappend"
                                            : "none"));
  json_object_set_new(o, "ts", json_integer(ts));
  rd_kafka_headers_t *h = NULL;
  json_t *ha = json_array();
  if (!rd_kafka_message_headers(m, &h)) {
    const char *name;
    const void *v;
    size_t n;
    for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &v, &n); i++) {
      json_array_append_new(ha, json_string(name));
      json_t *s = v ? json_stringn(v, n) : json_null();
      json_array_append_new(ha, s ? s : json_null());
    }
  }
  json_object_set_new(o, "headers", ha);
  kmqctl_put_bytes(o, "key", m->key, m->key_len);
  kmqctl_put_bytes(o, "payload", m->payload, m->len);
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s)
    puts(s);
  free(s);
  json_decref(o);
}

static void bump(json_t *counts, const char *name) {
  json_t *c = json_object_get(counts, name);
  json_object_set_new(counts, name,
                      json_integer(c ? json_integer_value(c) + 1 : 1));
}

static int inspect_cb(rd_kafka_message_t *m, void *opaque) {
  inspect_t *in = opaque;
  if (in->json) {
    print_json(m);
  } else {
    char reason[128] = "";
    const void *v;
    size_t n;
    rd_kafka_headers_t *h = NULL;
    if (!rd_kafka_message_headers(m, &h) &&
        !rd_kafka_header_get_last(h, "dlq_reason", &v, &n) && v)
      snprintf(reason, sizeof(reason), "%.*s", (int)n, (const char *)v);
    if (!*reason) {
      json_t *j = json_loadb(m->payload, m->len, 0, NULL);
      const char *r = json_string_value(json_object_get(j, "reason"));
      snprintf(reason, sizeof(reason), "%s", r ? r : "(unreadable)");
      json_decref(j);
    }
    bump(in->reasons, reason);
    char user[256];
    snprintf(user, sizeof(user), "%.*s", (int)m->key_len,
             m->key ? (const char *)m->key : "");
    bump(in->users, m->key ? user : "(no key)");
  }
  rd_kafka_message_destroy(m);
  return ++in->count >= in->max;
}

typedef struct {
  const char *name;
  json_int_t n;
} count_t;

static int by_count(const void *a, const void *b) {
  const count_t *x = a, *y = b;
  return x->n != y->n ? (x->n < y->n ? 1 : -1) : strcmp(x->name, y->name);
}

static void print_counts(const char *title, json_t *counts, int64_t top) {
  size_t n = json_object_size(counts), i = 0;
  count_t *c = calloc(n ? n : 1, sizeof(*c));
  const char *k;
  json_t *v;
  json_object_foreach(counts, k, v) {
    c[i].name = k;
    c[i++].n = json_integer_value(v);
  }
  qsort(c, n, sizeof(*c), by_count);
  printf("by %s (%zu distinct):\n", title, n);
  for (i = 0; i < n && (int64_t)i < top; i++)
    printf("  %8lld  %s\n", (long long)c[i].n, c[i].name);
  if ((int64_t)n > top)
    printf("  ... %zu more\n", n - (size_t)top);
  free(c);
}

enum { OPT_TOPIC = KMQCTL_OPT_FIRST_LOCAL, OPT_MAX, OPT_TOP, OPT_JSON };

typedef struct {
  const char *topic;
  int64_t max, top;
  int json;
} dlq_opts_t;

static int dlq_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  dlq_opts_t *o = opaque;
  switch (c) {
  case OPT_TOPIC: o->topic = arg; return 0;
  case OPT_MAX: return kmqctl_parse_int(ctl, "max", arg, 1, INT64_MAX, &o->max);
  case OPT_TOP: return kmqctl_parse_int(ctl, "top", arg, 1, 1000000, &o->top);
  default: o->json = 1; return 0;
  }
}

int kmqctl_dlq(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"topic", required_argument, 0, OPT_TOPIC},
      {"max", required_argument, 0, OPT_MAX},
      {"top", required_argument, 0, OPT_TOP},
      {"json", no_argument, 0, OPT_JSON},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  dlq_opts_t o = {NULL, INT64_MAX, 20, 0};
  int rc = kmqctl_subcommand(ctl, argc, argv, "inspect", dlq_help);
  if (rc < 0)
    rc = kmqctl_parse(ctl, argc - 1, argv + 1, opts, dlq_help, dlq_opt, &o);
  if (rc >= 0)
    return rc;
  const char *topic = o.topic;
  int64_t max = o.max, top = o.top;
  int json = o.json;
  rc = kmqctl_conf_build(ctl, 1);
  if (rc)
    return rc;
  char dlq[256];
  topic = kmqctl_dlq_topic(ctl, topic, NULL, dlq, sizeof(dlq));
  if (!topic)
    return KMQCTL_USAGE;
  rd_kafka_t *rk = kmqctl_client(ctl, RD_KAFKA_CONSUMER, NULL);
  if (!rk)
    return KMQCTL_USAGE;
  inspect_t in = {json_object(), json_object(), 0, max, json};
  int r = kmqctl_read_to_end(ctl, rk, topic, NULL, inspect_cb, &in);
  rd_kafka_destroy(rk);
  if (r >= 0 && !json) {
    printf("%s: %lld letters%s\n", topic, (long long)in.count,
           in.count >= max ? " (--max reached)" : "");
    print_counts("reason", in.reasons, INT64_MAX);
    print_counts("user", in.users, top);
  }
  json_decref(in.reasons);
  json_decref(in.users);
  return r < 0 ? KMQCTL_KAFKA : KMQCTL_OK;
}
