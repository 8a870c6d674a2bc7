/* kmqctl topics bootstrap: the main topic and its DLQ as a profile says
 * (kmq.topic.* keys, include/kmq/conf.h), idempotent, with a drift report
 * read back from the broker (metadata and DescribeConfigs). */
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmqctl.h"

static const char topics_help[] =
    "usage: kmqctl topics bootstrap [--profile dev|prod] [--topic T] "
    "[--check]\n"
    "Creates the main topic and its DLQ (kmq.dlq.topic, default <T>.dlq)\n"
    "with the profile's partitions (the same count for both: a user's dead\n"
    "letters stay in one partition), replication factor, min.insync.replicas,\n"
    "retention.ms (the DLQ's own), compression.type and max.message.bytes,\n"
    "then reads them back and reports every setting that differs (drift).\n"
    "An existing topic is not changed, only compared: fix drift by hand.\n"
    "  --topic T   main topic (default: kmq.topic from -F/-X)\n"
    "  --check     create nothing; exit 1 when a topic is missing or drifted\n"
    "Profiles: development (4 partitions, RF 1, min.insync 1), production\n"
    "(12, RF 3, min.insync 2); -F's profile sections override them.\n"
    "Exit: 0 created or no drift (drift is reported, not an error, without\n"
    "--check); 1 with --check: missing or drifted; 2 usage; 3 Kafka error.\n";

/* One setting: what the profile wants and what the broker has. */
typedef struct {
  const char *name;
  char want[32];
  char have[64];
} setting_t;

static void have_cb(const char *name, const char *value, void *opaque) {
  setting_t *s = opaque;
  for (; s->name; s++)
    if (!strcmp(s->name, name))
      snprintf(s->have, sizeof(s->have), "%s", value);
}

/* Creates (unless check) or compares one topic. Returns 0 no drift, 1
 * drift or missing, 3 Kafka error. */
static int bootstrap_one(kmqctl_t *ctl, rd_kafka_t *rk, const char *topic,
                         const char *retention_key, int check) {
  setting_t s[] = {
      {"partitions", "", ""},
      {"replication.factor", "", ""},
      {"min.insync.replicas", "", ""},
      {"retention.ms", "", ""},
      {"compression.type", "", ""},
      {"max.message.bytes", "", ""},
      {NULL, "", ""},
  };
  const char *keys[] = {"kmq.topic.partitions",
                        "kmq.topic.replication.factor",
                        "kmq.topic.min.insync.replicas",
                        retention_key,
                        "kmq.topic.compression.type",
                        "kmq.topic.max.message.bytes"};
  for (int i = 0; i < 6; i++)
    snprintf(s[i].want, sizeof(s[i].want), "%s",
             kmq_conf_get(ctl->conf, keys[i]));

  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, ctl->timeout_ms);
  if (err)
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "metadata from %s: %s",
                       kmq_conf_get(ctl->conf, "bootstrap.servers"),
                       rd_kafka_err2str(err));
  const rd_kafka_metadata_topic_t *t = NULL;
  for (int i = 0; i < md->topic_cnt; i++)
    if (!strcmp(md->topics[i].topic, topic))
      t = &md->topics[i];
  const char *what = "exists";
  if (!t && check) {
    printf("topic %s: MISSING\n", topic);
    rd_kafka_metadata_destroy(md);
    return KMQCTL_NO;
  }
  if (!t) {
    const char *cfg[] = {s[2].name, s[2].want, s[3].name, s[3].want,
                         s[4].name, s[4].want, s[5].name, s[5].want, NULL};
    char errstr[512];
    int create_ms = ctl->timeout_ms > 30000 ? ctl->timeout_ms : 30000;
    if (kmq_admin_create_topic(ctl->conf, topic, atoi(s[0].want),
                               atoi(s[1].want), cfg, 1, create_ms, errstr,
                               sizeof(errstr))) {
      rd_kafka_metadata_destroy(md);
      return kmqctl_fail(ctl, KMQCTL_KAFKA, "creating %s: %s", topic, errstr);
    }
    what = "created";
    rd_kafka_metadata_destroy(md);
    md = kmqctl_topic_metadata(ctl, rk, topic);
    if (!md)
      return KMQCTL_KAFKA;
    t = &md->topics[0];
  }
  snprintf(s[0].have, sizeof(s[0].have), "%d", t->partition_cnt);
  snprintf(s[1].have, sizeof(s[1].have), "%d",
           t->partition_cnt ? t->partitions[0].replica_cnt : 0);
  rd_kafka_metadata_destroy(md);
  if (kmqctl_topic_configs(ctl, rk, topic, have_cb, s))
    return KMQCTL_KAFKA;
  printf("topic %s: %s\n", topic, what);
  int drift = 0;
  for (int i = 0; s[i].name; i++) {
    int same = !strcmp(s[i].want, s[i].have);
    drift |= !same;
    printf("  %-20s %-12s %s%s\n", s[i].name, s[i].have,
           same ? "ok" : "DRIFT: profile wants ", same ? "" : s[i].want);
  }
  return drift ? KMQCTL_NO : KMQCTL_OK;
}

enum { OPT_TOPIC = KMQCTL_OPT_FIRST_LOCAL, OPT_CHECK };

typedef struct {
  const char *topic;
  int check;
} topics_opts_t;

static int topics_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  topics_opts_t *o = opaque;
  (void)ctl;
  if (c == OPT_TOPIC)
    o->topic = arg;
  else
    o->check = 1;
  return 0;
}

int kmqctl_topics(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"topic", required_argument, 0, OPT_TOPIC},
      {"check", no_argument, 0, OPT_CHECK},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  topics_opts_t o = {NULL, 0};
  int rc = kmqctl_subcommand(ctl, argc, argv, "bootstrap", topics_help);
  if (rc < 0)
    rc = kmqctl_parse(ctl, argc - 1, argv + 1, opts, topics_help, topics_opt,
                      &o);
  if (rc >= 0)
    return rc;
  const char *topic = o.topic;
  int check = o.check;
  rc = kmqctl_conf_build(ctl, 1);
  if (rc)
    return rc;
  char dlq[256];
  topic = kmqctl_need_topic(ctl, topic);
  if (!topic || !kmqctl_dlq_topic(ctl, NULL, topic, dlq, sizeof(dlq)))
    return KMQCTL_USAGE;
  const char *pname = kmq_conf_profile_name(ctl->profile);
  printf("profile %s\n", pname ? pname : ctl->profile ? ctl->profile
                                                     : "(from the configuration)");
  /* A consumer-type client: its metadata requests never auto-create a
   * topic (a producer's may, and would hide a missing one). */
  rd_kafka_t *rk = kmqctl_client(ctl, RD_KAFKA_CONSUMER, NULL);
  if (!rk)
    return KMQCTL_USAGE;
  int r1 = bootstrap_one(ctl, rk, topic, "kmq.topic.retention.ms", check);
  int r2 = r1 == KMQCTL_KAFKA
               ? KMQCTL_KAFKA
               : bootstrap_one(ctl, rk, dlq, "kmq.dlq.retention.ms", check);
  rd_kafka_destroy(rk);
  if (r1 == KMQCTL_KAFKA || r2 == KMQCTL_KAFKA)
    return KMQCTL_KAFKA;
  if (r1 || r2) {
    printf("drift from the profile%s\n",
           check ? "" : " (reported only; --check makes it exit 1)");
    return check ? KMQCTL_NO : KMQCTL_OK;
  }
  printf("no drift\n");
  return KMQCTL_OK;
}
