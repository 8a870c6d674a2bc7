/* kmqctl replay: dead letters back to their original topic (issue 11).
 *
 * Progress lives in a consumer group per filter (its name is a hash of the
 * DLQ topic and the filter), so a run with another filter starts from the
 * oldest letter again instead of behind what an earlier filter skipped.
 * Letters are handled in batches; after each, every partition's position
 * is committed up to (not past) its first letter that is neither delivered
 * (its own delivery report, not rd_kafka_flush's return) nor skipped on
 * purpose (filtered out, truncated, unreadable). A partition whose letter
 * failed replays nothing more in this run: its later letters would overtake
 * the failed one (a user's order) and be replayed again by the next run. */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmqctl.h"
#include "lib/util.h"

static const char replay_help[] =
    "usage: kmqctl replay [--dlq-topic D | --topic T] [--user U]\n"
    "          [--since TIME] [--until TIME] [--reason R] [--to TOPIC]\n"
    "          [--group G] [--batch N] [--dry-run]\n"
    "Re-produces dead letters: the original payload with its key and its\n"
    "original headers (the DLQ's dlq_* ones dropped) plus replayed=true, to\n"
    "the letter's original_topic (or --to).\n"
    "  --dlq-topic D  the DLQ (default: kmq.dlq.topic, else <T>.dlq with T\n"
    "                 from --topic or kmq.topic)\n"
    "  --user U       only letters whose key is U\n"
    "  --since TIME   only letters dead-lettered at or after TIME\n"
    "  --until TIME   only letters dead-lettered before TIME; TIME is UTC:\n"
    "                 2026-12-02T08:00:00Z, 2026-12-02 08:00:00, 2026-12-02\n"
    "                 or ms since the epoch (the dlq_timestamp header)\n"
    "  --reason R     only letters with reason R (bad_json, processor_failed..)\n"
    "  --group G      progress group (default: kmqctl-replay-<hash of the DLQ\n"
    "                 and filter>: each filter remembers what it replayed)\n"
    "  --batch N      letters per delivery wait and commit (default 500)\n"
    "  --dry-run      print \"would replay\" for each, produce and commit\n"
    "                 nothing\n"
    "Letters with payload_truncated/key_truncated hold only a prefix: they\n"
    "are skipped and counted, never replayed cut (find the original by its\n"
    "payload_sha256). Progress is committed past delivered and skipped\n"
    "letters only, so a rerun retries what failed.\n"
    "Exit: 0 all replayed; 1 some failed (not committed past) or were\n"
    "skipped as truncated/unreadable; 2 usage; 3 Kafka could not be asked\n"
    "(unreachable, missing DLQ topic).\n";

enum { SLOT_DONE, SLOT_PENDING, SLOT_FAILED };

typedef struct {
  int32_t partition;
  int64_t offset;
  int status;
} slot_t;

typedef struct {
  kmqctl_t *ctl;
  const char *dlq, *user, *reason, *to;
  int64_t since, until; /* ms; -1: open */
  int dry_run;
  rd_kafka_t *consumer, *producer;
  slot_t *slots;
  int nslots, batch;
  int32_t *failed_parts; /* partitions with a failure in this run */
  int nfailed, failed_cap;
  int64_t replayed, filtered, cut, bad, failed, held;
  int kafka_error;
} replay_t;

static void mark_failed(replay_t *r, int32_t p);

/* @locality the producer's rd_kafka_poll/flush caller (main's thread). */
static void replay_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                      void *opaque) {
  (void)rk;
  replay_t *r = opaque;
  slot_t *s = m->_private;
  if (m->err) {
    s->status = SLOT_FAILED;
    mark_failed(r, s->partition); /* hold its later letters back */
    fprintf(stderr, "%s: replay of DLQ [%d] offset %lld to %s failed: %s\n",
            r->ctl->prog, s->partition, (long long)s->offset,
            rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
  } else {
    s->status = SLOT_DONE;
    r->replayed++;
  }
}

static int part_failed(const replay_t *r, int32_t p) {
  for (int i = 0; i < r->nfailed; i++)
    if (r->failed_parts[i] == p)
      return 1;
  return 0;
}

static void mark_failed(replay_t *r, int32_t p) {
  if (part_failed(r, p))
    return;
  if (r->nfailed == r->failed_cap) {
    int n = r->failed_cap ? r->failed_cap * 2 : 16;
    int32_t *np = realloc(r->failed_parts, (size_t)n * sizeof(*np));
    if (!np)
      return; /* then later letters of p may be tried: still never committed */
    r->failed_parts = np;
    r->failed_cap = n;
  }
  r->failed_parts[r->nfailed++] = p;
}

/* Waits for every delivery report of the batch, then commits each
 * partition up to its first letter not done. Returns 0, or -1 when the
 * commit failed or reports did not come (the run stops). */
static int drain_and_commit(replay_t *r) {
  int ret = 0;
  if (r->producer) {
    /* Each message has its report by message.timeout.ms; this bound only
     * guards against a report that never comes. */
    rd_kafka_flush(r->producer, 600000);
    if (rd_kafka_outq_len(r->producer) > 0) {
      fprintf(stderr, "%s: delivery reports missing: stopping\n",
              r->ctl->prog);
      ret = -1;
    }
  }
  /* Per partition: the position to commit, and err set once a letter that
   * is not done was met (nothing after it may be committed). */
  rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(8);
  for (int i = 0; i < r->nslots; i++) {
    slot_t *s = &r->slots[i];
    if (s->status != SLOT_DONE) {
      r->failed += s->status == SLOT_FAILED;
      mark_failed(r, s->partition);
    }
    rd_kafka_topic_partition_t *p =
        rd_kafka_topic_partition_list_find(c, r->dlq, s->partition);
    if (!p) {
      p = rd_kafka_topic_partition_list_add(c, r->dlq, s->partition);
      p->offset = -1; /* nothing to commit unless the first one is done */
    }
    if (p->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (s->status == SLOT_DONE)
        p->offset = s->offset + 1;
      else
        p->err = RD_KAFKA_RESP_ERR__FAIL;
    }
  }
  r->nslots = 0;
  /* Only partitions that advanced: a batch starting behind a failed
   * letter commits nothing there. */
  for (int i = c->cnt - 1; i >= 0; i--) {
    if (c->elems[i].offset < 0)
      rd_kafka_topic_partition_list_del_by_idx(c, i);
    else
      c->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  if (!r->dry_run && c->cnt) {
    rd_kafka_resp_err_t err = rd_kafka_commit(r->consumer, c, 0);
    for (int i = 0; !err && i < c->cnt; i++)
      err = c->elems[i].err;
    if (err) {
      fprintf(stderr, "%s: committing the replay position on %s: %s\n",
              r->ctl->prog, r->dlq, rd_kafka_err2str(err));
      r->kafka_error = 1;
      ret = -1;
    }
  }
  rd_kafka_topic_partition_list_destroy(c);
  return ret;
}

/* ms since the epoch of a UTC time: digits, or a date with an optional
 * time. -1 when it is neither. */
static int64_t parse_time(const char *s) {
  char *end;
  long long ms = strtoll(s, &end, 10);
  if (*s && !*end && ms >= 0)
    return ms;
  static const char *const fmts[] = {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S",
                                     "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%MZ",
                                     "%Y-%m-%d %H:%M", "%Y-%m-%d"};
  for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *e = strptime(s, fmts[i], &tm);
    if (e && !*e)
      return (int64_t)timegm(&tm) * 1000;
  }
  return -1;
}

/* When the letter was written: its dlq_timestamp header, else the record's
 * timestamp. */
static int64_t letter_time(const rd_kafka_message_t *m) {
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t n;
  if (!rd_kafka_message_headers(m, &h) &&
      !rd_kafka_header_get_last(h, "dlq_timestamp", &v, &n) && v && n < 24) {
    char buf[24];
    memcpy(buf, v, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
  }
  return rd_kafka_message_timestamp(m, NULL);
}

/* Produces the letter's original record; the slot's status follows. */
static void replay_one(replay_t *r, const rd_kafka_message_t *m, json_t *j,
                       const char *otopic, slot_t *slot) {
  const char *text = json_string_value(json_object_get(j, "payload"));
  size_t len = 0;
  unsigned char *buf = NULL;
  const void *val = text;
  if (text) {
    len = json_string_length(json_object_get(j, "payload"));
  } else {
    buf = kmq__unbase64(
        json_string_value(json_object_get(j, "payload_base64")), &len);
    val = buf;
    if (!buf) {
      r->bad++;
      return; /* slot stays DONE: skipped, unreadable */
    }
  }
  const char *reason = json_string_value(json_object_get(j, "reason"));
  if (r->dry_run) {
    printf("would replay DLQ [%d] offset %lld: user \"%.*s\" -> %s "
           "(%s, %zu bytes)\n",
           m->partition, (long long)m->offset, (int)m->key_len,
           m->key ? (const char *)m->key : "", otopic,
           reason ? reason : "?", len);
    r->replayed++;
    free(buf);
    return;
  }
  /* The original headers, without the DLQ's own, plus replayed=true. */
  rd_kafka_headers_t *src = NULL, *h = rd_kafka_headers_new(8);
  rd_kafka_message_headers(m, &src);
  const char *name;
  const void *hv;
  size_t hn;
  for (size_t i = 0;
       src && !rd_kafka_header_get_all(src, i, &name, &hv, &hn); i++)
    if (strncmp(name, "dlq_", 4))
      rd_kafka_header_add(h, name, -1, hv, (ssize_t)hn);
  rd_kafka_header_add(h, "replayed", -1, "true", 4);
  slot->status = SLOT_PENDING;
  rd_kafka_resp_err_t err = rd_kafka_producev(
      r->producer, RD_KAFKA_V_TOPIC(otopic), RD_KAFKA_V_KEY(m->key, m->key_len),
      RD_KAFKA_V_VALUE((void *)val, len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
      RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
  if (err) { /* not queued: no report will come */
    rd_kafka_headers_destroy(h);
    slot->status = SLOT_FAILED;
    fprintf(stderr, "%s: replay of DLQ [%d] offset %lld to %s failed: %s\n",
            r->ctl->prog, m->partition, (long long)m->offset, otopic,
            rd_kafka_err2str(err));
  }
  rd_kafka_poll(r->producer, 0); /* serve reports as they come */
  free(buf);
}

static int replay_cb(rd_kafka_message_t *m, void *opaque) {
  replay_t *r = opaque;
  slot_t *slot = &r->slots[r->nslots++];
  *slot = (slot_t){m->partition, m->offset, SLOT_DONE};
  json_t *j = NULL;
  if (part_failed(r, m->partition)) {
    slot->status = SLOT_PENDING; /* held back behind a failed letter */
    r->held++;
    goto next;
  }
  int64_t t = letter_time(m);
  if ((r->user && (!m->key || m->key_len != strlen(r->user) ||
                   memcmp(m->key, r->user, m->key_len))) ||
      (r->since >= 0 && t < r->since) || (r->until >= 0 && t >= r->until)) {
    r->filtered++;
    goto next;
  }
  j = json_loadb(m->payload, m->len, 0, NULL);
  const char *reason = json_string_value(json_object_get(j, "reason"));
  const char *otopic = r->to ? r->to
                             : json_string_value(
                                   json_object_get(j, "original_topic"));
  if (r->reason && (!reason || strcmp(reason, r->reason))) {
    r->filtered++;
  } else if (!j || !otopic ||
             (!json_is_string(json_object_get(j, "payload")) &&
              !json_is_string(json_object_get(j, "payload_base64")))) {
    r->bad++;
  } else if (json_is_true(json_object_get(j, "payload_truncated")) ||
             json_is_true(json_object_get(j, "key_truncated"))) {
    r->cut++; /* a prefix is not the record: its digest finds the original */
  } else {
    replay_one(r, m, j, otopic, slot);
  }
next:
  json_decref(j);
  rd_kafka_message_destroy(m);
  if (r->nslots == r->batch && drain_and_commit(r))
    return -1;
  return 0;
}

/* kmqctl-replay-<16 hex of SHA-256 of the DLQ and the filter>. */
static void filter_group(const replay_t *r, const char *dlq, char *out,
                         size_t size) {
  char text[2048], s1[24], s2[24];
  snprintf(s1, sizeof(s1), "%lld", (long long)r->since);
  snprintf(s2, sizeof(s2), "%lld", (long long)r->until);
  int n = snprintf(text, sizeof(text), "v1|%s|%s|%s|%s|%s|%s", dlq,
                   r->user ? r->user : "", s1, s2, r->reason ? r->reason : "",
                   r->to ? r->to : "");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_Digest(text, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
  snprintf(out, size, "kmqctl-replay-%02x%02x%02x%02x%02x%02x%02x%02x", md[0],
           md[1], md[2], md[3], md[4], md[5], md[6], md[7]);
}

enum {
  OPT_TOPIC = KMQCTL_OPT_FIRST_LOCAL,
  OPT_DLQ_TOPIC,
  OPT_USER,
  OPT_SINCE,
  OPT_UNTIL,
  OPT_REASON,
  OPT_TO,
  OPT_GROUP,
  OPT_BATCH,
  OPT_DRY_RUN
};

typedef struct {
  replay_t *r;
  const char *topic, *dlq, *group;
} replay_opts_t;

static int replay_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  replay_opts_t *o = opaque;
  replay_t *r = o->r;
  int64_t v;
  switch (c) {
  case OPT_TOPIC: o->topic = arg; return 0;
  case OPT_DLQ_TOPIC: o->dlq = arg; return 0;
  case OPT_USER: r->user = arg; return 0;
  case OPT_REASON: r->reason = arg; return 0;
  case OPT_TO: r->to = arg; return 0;
  case OPT_GROUP: o->group = arg; return 0;
  case OPT_DRY_RUN: r->dry_run = 1; return 0;
  case OPT_SINCE:
  case OPT_UNTIL:
    v = parse_time(arg);
    if (v < 0) {
      kmqctl_fail(ctl, KMQCTL_USAGE,
                  "--%s: \"%s\" is not a UTC time "
                  "(2026-12-02T08:00:00Z, 2026-12-02, or epoch ms)",
                  c == OPT_SINCE ? "since" : "until", arg);
      return -1;
    }
    *(c == OPT_SINCE ? &r->since : &r->until) = v;
    return 0;
  default:
    if (kmqctl_parse_int(ctl, "batch", arg, 1, 100000, &v))
      return -1;
    r->batch = (int)v;
    return 0;
  }
}

int kmqctl_replay(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"topic", required_argument, 0, OPT_TOPIC},
      {"dlq-topic", required_argument, 0, OPT_DLQ_TOPIC},
      {"user", required_argument, 0, OPT_USER},
      {"since", required_argument, 0, OPT_SINCE},
      {"until", required_argument, 0, OPT_UNTIL},
      {"reason", required_argument, 0, OPT_REASON},
      {"to", required_argument, 0, OPT_TO},
      {"group", required_argument, 0, OPT_GROUP},
      {"batch", required_argument, 0, OPT_BATCH},
      {"dry-run", no_argument, 0, OPT_DRY_RUN},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  replay_t r = {.ctl = ctl, .since = -1, .until = -1, .batch = 500};
  replay_opts_t o = {&r, NULL, NULL, NULL};
  int rc = kmqctl_parse(ctl, argc, argv, opts, replay_help, replay_opt, &o);
  if (rc >= 0)
    return rc;
  const char *topic = o.topic, *dlq_opt = o.dlq, *group = o.group;
  if (r.since >= 0 && r.until >= 0 && r.until <= r.since)
    return kmqctl_fail(ctl, KMQCTL_USAGE, "--until must be after --since");
  rc = kmqctl_conf_build(ctl, 1);
  if (rc)
    return rc;
  char dlq[256], gbuf[64];
  if (!kmqctl_dlq_topic(ctl, dlq_opt, topic, dlq, sizeof(dlq)))
    return KMQCTL_USAGE;
  r.dlq = dlq;
  if (!group) {
    filter_group(&r, dlq, gbuf, sizeof(gbuf));
    group = gbuf;
  }
  r.slots = calloc((size_t)r.batch, sizeof(*r.slots));
  r.consumer = kmqctl_client(ctl, RD_KAFKA_CONSUMER, group);
  if (!r.dry_run && r.consumer)
    r.producer = kmqctl_client_dr(ctl, RD_KAFKA_PRODUCER, NULL, replay_dr, &r);
  if (!r.slots || !r.consumer || (!r.dry_run && !r.producer)) {
    rc = KMQCTL_USAGE;
    goto out;
  }
  printf("replaying %s with progress group %s%s\n", dlq, group,
         r.dry_run ? " (dry run: nothing produced or committed)" : "");
  rc = KMQCTL_KAFKA;
  const rd_kafka_metadata_t *md = kmqctl_topic_metadata(ctl, r.consumer, dlq);
  if (!md)
    goto out;
  rd_kafka_topic_partition_list_t *from =
      kmqctl_committed(ctl, r.consumer, dlq, md->topics[0].partition_cnt);
  rd_kafka_metadata_destroy(md);
  if (!from)
    goto out;
  int res = kmqctl_read_to_end(ctl, r.consumer, dlq, from, replay_cb, &r);
  rd_kafka_topic_partition_list_destroy(from);
  /* Also after a read error: what was delivered is committed past. */
  if (r.nslots && drain_and_commit(&r))
    res = -1;
  printf("%s %lld, filtered out %lld, truncated %lld (not replayable), "
         "unreadable %lld, failed %lld, held back behind a failure %lld\n",
         r.dry_run ? "would replay" : "replayed", (long long)r.replayed,
         (long long)r.filtered, (long long)r.cut, (long long)r.bad,
         (long long)r.failed, (long long)r.held);
  if (res < 0 && (r.kafka_error || !r.failed))
    rc = KMQCTL_KAFKA;
  else
    rc = r.failed || r.held || r.cut || r.bad || res < 0 ? KMQCTL_NO
                                                        : KMQCTL_OK;
out:
  if (r.producer)
    rd_kafka_destroy(r.producer); /* before the slots its reports name */
  if (r.consumer)
    rd_kafka_destroy(r.consumer);
  free(r.slots);
  free(r.failed_parts);
  return rc;
}
