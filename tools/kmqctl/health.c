/* kmqctl health: one answer for a probe: are the brokers up, can acks=all
 * writes succeed on every partition (ISR >= min.insync.replicas), does the
 * group have members, is the lag below a bound. */
#include <stdlib.h>
#include <string.h>

#include "kmq/admin.h"
#include "kmqctl.h"

static const char health_help[] =
    "usage: kmqctl health [--topic T] [--group G] [--max-lag N] "
    "[--min-members N]\n"
    "Checks, and prints per partition:\n"
    "  - brokers: the live brokers; a replica on a broker not live is down;\n"
    "  - the main topic and its DLQ: leader, replicas, ISR against the\n"
    "    topic's min.insync.replicas (below it acks=all writes fail);\n"
    "  - the group: state, members, committed offset, end offset and lag.\n"
    "  --topic T          main topic (default: kmq.topic)\n"
    "  --group G          consumer group (default: group.id / consumer.group.id;\n"
    "                     without one, the group is not checked)\n"
    "  --max-lag N        unhealthy when a partition lags more than N (default:\n"
    "                     lag is shown, not judged)\n"
    "  --min-members N    unhealthy with fewer members (default 1)\n"
    "Unhealthy: a partition without leader or with ISR below\n"
    "min.insync.replicas, too few members, lag above --max-lag. Under-\n"
    "replicated (ISR < replicas, still >= min.insync) is a warning.\n"
    "Exit: 0 healthy; 1 unhealthy; 2 usage; 3 Kafka could not be asked.\n";

static void min_isr_cb(const char *name, const char *value, void *opaque) {
  if (!strcmp(name, "min.insync.replicas"))
    *(int *)opaque = atoi(value);
}

/* ISR check of one topic. Returns the count of unhealthy partitions, or -1
 * when Kafka could not be asked. */
static int check_topic(kmqctl_t *ctl, rd_kafka_t *rk, const char *topic) {
  const rd_kafka_metadata_t *md = kmqctl_topic_metadata(ctl, rk, topic);
  if (!md)
    return -1;
  int min_isr = 1, bad = 0;
  if (kmqctl_topic_configs(ctl, rk, topic, min_isr_cb, &min_isr)) {
    rd_kafka_metadata_destroy(md);
    return -1;
  }
  const rd_kafka_metadata_topic_t *t = &md->topics[0];
  printf("topic %s: %d partitions, min.insync.replicas %d\n", topic,
         t->partition_cnt, min_isr);
  printf("  %-9s %6s %-12s %-12s %s\n", "partition", "leader", "replicas",
         "isr", "status");
  for (int i = 0; i < t->partition_cnt; i++) {
    const rd_kafka_metadata_partition_t *p = &t->partitions[i];
    char reps[64] = "", isrs[64] = "";
    for (int r = 0; r < p->replica_cnt; r++)
      snprintf(reps + strlen(reps), sizeof(reps) - strlen(reps), "%s%d",
               r ? "," : "", p->replicas[r]);
    for (int r = 0; r < p->isr_cnt; r++)
      snprintf(isrs + strlen(isrs), sizeof(isrs) - strlen(isrs), "%s%d",
               r ? "," : "", p->isrs[r]);
    const char *status = "ok";
    if (p->leader < 0 || p->err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
      status = "UNHEALTHY: no leader";
    else if (p->isr_cnt < min_isr)
      status = "UNHEALTHY: ISR below min.insync.replicas (acks=all fails)";
    else if (p->isr_cnt < p->replica_cnt)
      status = "warning: under-replicated";
    bad += !strncmp(status, "UNHEALTHY", 9);
    printf("  %-9d %6d %-12s %-12s %s\n", p->id, p->leader, reps, isrs,
           status);
  }
  rd_kafka_metadata_destroy(md);
  return bad;
}

enum {
  OPT_TOPIC = KMQCTL_OPT_FIRST_LOCAL,
  OPT_GROUP,
  OPT_MAX_LAG,
  OPT_MIN_MEMBERS
};

typedef struct {
  const char *topic, *group;
  int64_t max_lag, min_members;
} health_opts_t;

static int health_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  health_opts_t *o = opaque;
  switch (c) {
  case OPT_TOPIC:
    o->topic = arg;
    return 0;
  case OPT_GROUP:
    o->group = arg;
    return 0;
  case OPT_MAX_LAG:
    return kmqctl_parse_int(ctl, "max-lag", arg, 0, INT64_MAX, &o->max_lag);
  default:
    return kmqctl_parse_int(ctl, "min-members", arg, 0, 100000,
                            &o->min_members);
  }
}

int kmqctl_health(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"topic", required_argument, 0, OPT_TOPIC},
      {"group", required_argument, 0, OPT_GROUP},
      {"max-lag", required_argument, 0, OPT_MAX_LAG},
      {"min-members", required_argument, 0, OPT_MIN_MEMBERS},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  health_opts_t o = {NULL, NULL, -1, 1};
  int rc = kmqctl_parse(ctl, argc, argv, opts, health_help, health_opt, &o);
  if (rc >= 0)
    return rc;
  const char *topic = o.topic, *group = o.group;
  int64_t max_lag = o.max_lag, min_members = o.min_members;
  rc = kmqctl_conf_build(ctl, 1);
  if (rc)
    return rc;
  char dlq[256], errstr[512];
  topic = kmqctl_need_topic(ctl, topic);
  if (!topic || !kmqctl_dlq_topic(ctl, NULL, topic, dlq, sizeof(dlq)))
    return KMQCTL_USAGE;
  group = kmqctl_group(ctl, group);
  rd_kafka_t *rk = kmqctl_client(ctl, RD_KAFKA_CONSUMER, NULL);
  if (!rk)
    return KMQCTL_USAGE;
  int unhealthy = 0;

  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, ctl->timeout_ms);
  if (err) {
    rd_kafka_destroy(rk);
    return kmqctl_fail(ctl, KMQCTL_KAFKA, "brokers %s: %s",
                       kmq_conf_get(ctl->conf, "bootstrap.servers"),
                       rd_kafka_err2str(err));
  }
  printf("brokers: %d live\n", md->broker_cnt);
  for (int i = 0; i < md->broker_cnt; i++)
    printf("  %d %s:%d\n", md->brokers[i].id, md->brokers[i].host,
           md->brokers[i].port);
  rd_kafka_metadata_destroy(md);

  const char *topics[] = {topic, dlq};
  for (int i = 0; i < 2; i++) {
    int bad = check_topic(ctl, rk, topics[i]);
    if (bad < 0) {
      rd_kafka_destroy(rk);
      return KMQCTL_KAFKA;
    }
    unhealthy += bad;
  }

  if (group) {
    int members = 0;
    const char *state = "";
    char *list = NULL;
    size_t list_len = 0;
    FILE *lf = open_memstream(&list, &list_len);
    if (kmqctl_group_members(ctl, rk, group, &members, &state, lf)) {
      if (lf)
        fclose(lf);
      free(list);
      rd_kafka_destroy(rk);
      return KMQCTL_KAFKA;
    }
    if (lf)
      fclose(lf);
    int few = members < min_members;
    unhealthy += few;
    printf("group %s: %s, %d member%s%s\n%s", group, state, members,
           members == 1 ? "" : "s",
           few ? " (UNHEALTHY: fewer than --min-members)" : "",
           list ? list : "");
    free(list);
    kmq_partition_lag_t lag[4096];
    int n = (int)(sizeof(lag) / sizeof(lag[0]));
    if (kmq_admin_group_lag(ctl->conf, group, topic, lag, &n, ctl->timeout_ms,
                            errstr, sizeof(errstr))) {
      rd_kafka_destroy(rk);
      return kmqctl_fail(ctl, KMQCTL_KAFKA, "lag: %s", errstr);
    }
    long long total = 0;
    printf("  %-9s %12s %12s %10s\n", "partition", "committed", "end", "lag");
    for (int i = 0; i < n; i++) {
      int over = max_lag >= 0 && lag[i].lag > max_lag;
      unhealthy += over;
      total += lag[i].lag;
      printf("  %-9d %12lld %12lld %10lld%s\n", lag[i].partition,
             (long long)lag[i].committed, (long long)lag[i].high,
             (long long)lag[i].lag, over ? " UNHEALTHY: over --max-lag" : "");
    }
    printf("  total lag %lld\n", total);
  }
  rd_kafka_destroy(rk);
  printf("%s\n", unhealthy ? "UNHEALTHY" : "healthy");
  return unhealthy ? KMQCTL_NO : KMQCTL_OK;
}
