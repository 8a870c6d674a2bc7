/* kmqctl stuck: per partition where a group's commit does not reach the
 * end, the record at the committed offset (the first one not finished: the
 * one the commit waits for), its user and age, and the offsets already
 * finished beyond it (the commit metadata, include/kmq/gate.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/gate.h"
#include "kmqctl.h"

static const char stuck_help[] =
    "usage: kmqctl stuck --group G [--topic T] [--endpoint URL] [--all]\n"
    "For every partition whose committed offset is below its end offset:\n"
    "  committed and end offsets; the record at the committed offset read\n"
    "  from the broker (its key is the user, its timestamp gives its age):\n"
    "  the commit cannot move before this record is finished; and the\n"
    "  offsets finished beyond it, from the commit's metadata (processed,\n"
    "  waiting only for it).\n"
    "  --group G       consumer group (default: group.id from -F/-X)\n"
    "  --topic T       topic (default: kmq.topic)\n"
    "  --endpoint URL  also GET URL/stuck from the running kmq process: what\n"
    "                  blocks each partition now (user, attempts, seconds)\n"
    "  --all           print caught-up partitions too\n"
    "  --runtime-only  only GET URL/stuck (no broker, no --group needed)\n"
    "Exit: 0 nothing behind; 1 some partition behind (see above; with\n"
    "--runtime-only: the process reports a blocked partition); 2 usage;\n"
    "3 Kafka (or the endpoint) could not be asked.\n";

/* Prints "a-b, c" runs of the offsets finished beyond `committed`, from the
 * commit metadata; returns how many. */
static int64_t print_finished(const char *meta, size_t len, int64_t committed,
                              int64_t end) {
  char err[128];
  kmq_gate_t *g = kmq_gate_new(committed, (size_t)1 << 24, err, sizeof(err));
  int64_t restored = 0;
  if (!g)
    return 0;
  kmq_err_t e = kmq_gate_restore_done(g, meta, len, &restored);
  if (e) {
    printf("  commit metadata: not kmq's (%s): \"%.*s\"\n", kmq_err_name(e),
           (int)(len > 60 ? 60 : len), meta);
  } else if (!restored) {
    printf("  finished beyond it: none\n");
  } else {
    printf("  finished beyond it (commit metadata): %lld offsets:",
           (long long)restored);
    int64_t seen = 0, shown = 0;
    for (int64_t o = committed; o < end && seen < restored; o++) {
      if (!kmq_gate_is_done(g, o))
        continue;
      int64_t s = o;
      while (o + 1 < end && kmq_gate_is_done(g, o + 1))
        o++;
      seen += o - s + 1;
      if (shown++ < 20) {
        if (s == o)
          printf(" %lld", (long long)s);
        else
          printf(" %lld-%lld", (long long)s, (long long)o);
      }
    }
    printf("%s\n", shown > 20 ? " ..." : "");
  }
  kmq_gate_destroy(g);
  return restored;
}

static void print_record(const rd_kafka_message_t *m, int64_t committed) {
  rd_kafka_timestamp_type_t tst;
  int64_t ts = rd_kafka_message_timestamp(m, &tst);
  char when[64] = "?", age[64] = "?";
  if (ts >= 0) {
    time_t secs = (time_t)(ts / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    double a = (double)time(NULL) - (double)secs;
    snprintf(age, sizeof(age), "%.0f s", a < 0 ? 0 : a);
  }
  printf("  record at %lld: user \"%.*s\", %zu bytes, written %s (age %s)%s\n",
         (long long)m->offset, (int)(m->key_len > 200 ? 200 : m->key_len),
         m->key ? (const char *)m->key : "", m->len, when, age,
         m->offset != committed ? " (the first readable one)" : "");
}

enum {
  OPT_GROUP = KMQCTL_OPT_FIRST_LOCAL,
  OPT_TOPIC,
  OPT_ENDPOINT,
  OPT_ALL,
  OPT_RUNTIME_ONLY
};

typedef struct {
  const char *topic, *group, *endpoint;
  int all, runtime_only;
} stuck_opts_t;

static int stuck_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  stuck_opts_t *o = opaque;
  (void)ctl;
  switch (c) {
  case OPT_GROUP: o->group = arg; break;
  case OPT_TOPIC: o->topic = arg; break;
  case OPT_ENDPOINT: o->endpoint = arg; break;
  case OPT_ALL: o->all = 1; break;
  default: o->runtime_only = 1; break;
  }
  return 0;
}

int kmqctl_stuck(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"group", required_argument, 0, OPT_GROUP},
      {"topic", required_argument, 0, OPT_TOPIC},
      {"endpoint", required_argument, 0, OPT_ENDPOINT},
      {"all", no_argument, 0, OPT_ALL},
      {"runtime-only", no_argument, 0, OPT_RUNTIME_ONLY},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  stuck_opts_t o = {0};
  int rc = kmqctl_parse(ctl, argc, argv, opts, stuck_help, stuck_opt, &o);
  if (rc >= 0)
    return rc;
  const char *topic = o.topic, *group = o.group, *endpoint = o.endpoint;
  int all = o.all, runtime_only = o.runtime_only;
  if (runtime_only && !endpoint)
    return kmqctl_fail(ctl, KMQCTL_USAGE, "--runtime-only needs --endpoint");
  if (runtime_only) {
    /* The process's own view: a blocked partition is "behind" (exit 1). */
    int blocked = kmqctl_stuck_endpoint(ctl, endpoint);
    return blocked < 0 ? KMQCTL_KAFKA : blocked ? KMQCTL_NO : KMQCTL_OK;
  }
  rc = kmqctl_conf_build(ctl, 1);
  if (rc)
    return rc;
  topic = kmqctl_topic(ctl, topic);
  group = kmqctl_group(ctl, group);
  if (!topic || !group)
    return kmqctl_fail(ctl, KMQCTL_USAGE,
                       "give --group and --topic (or group.id and kmq.topic "
                       "in -F/-X)");
  rd_kafka_t *rk = kmqctl_client(ctl, RD_KAFKA_CONSUMER, group);
  if (!rk)
    return KMQCTL_USAGE;
  const rd_kafka_metadata_t *md = kmqctl_topic_metadata(ctl, rk, topic);
  rd_kafka_topic_partition_list_t *parts =
      md ? kmqctl_committed(ctl, rk, topic, md->topics[0].partition_cnt)
         : NULL;
  if (!parts) {
    if (md)
      rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return KMQCTL_KAFKA;
  }
  int behind = 0;
  rc = KMQCTL_OK;
  printf("group %s on %s\n", group, topic);
  for (int i = 0; i < parts->cnt && rc == KMQCTL_OK; i++) {
    rd_kafka_topic_partition_t *p = &parts->elems[i];
    int64_t lo, hi;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        rk, topic, p->partition, &lo, &hi, ctl->timeout_ms);
    if (err) {
      rc = kmqctl_fail(ctl, KMQCTL_KAFKA, "end offset of %s [%d]: %s", topic,
                       p->partition, rd_kafka_err2str(err));
      break;
    }
    /* Nothing committed: the group starts at the oldest record. */
    int64_t committed = p->offset >= 0 ? p->offset : lo;
    if (committed >= hi) {
      if (all)
        printf("partition %d: committed %lld, end %lld: caught up\n",
               p->partition, (long long)committed, (long long)hi);
      continue;
    }
    behind++;
    printf("partition %d: committed %lld%s, end %lld (%lld behind)\n",
           p->partition, (long long)committed,
           p->offset >= 0 ? "" : " (nothing committed: oldest)",
           (long long)hi, (long long)(hi - committed));
    rd_kafka_message_t *m =
        kmqctl_read_at(ctl, rk, topic, p->partition, committed);
    if (m) {
      print_record(m, committed);
      rd_kafka_message_destroy(m);
    } else {
      printf("  record at %lld: not readable within --timeout\n",
             (long long)committed);
    }
    print_finished(p->metadata ? p->metadata : "", p->metadata_size,
                   committed, hi);
  }
  int np = parts->cnt;
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  if (rc)
    return rc;
  printf("%d of %d partitions behind\n", behind, np);
  if (endpoint && kmqctl_stuck_endpoint(ctl, endpoint) < 0)
    return KMQCTL_KAFKA;
  return behind ? KMQCTL_NO : KMQCTL_OK;
}
