/* kmqctl skip: the emergency exit for a record that blocks its partition's
 * commit (a processor that hangs on it, a bug kmq's DLQ path does not
 * catch). The record is dead-lettered first (the DLQ producer of
 * include/kmq/dlq.h, reason skipped_by_operator) and only once the DLQ has
 * it is the group's offset committed past it: nothing is dropped. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmq/dlq.h"
#include "kmq/gate.h"
#include "kmqctl.h"

static const char skip_help[] =
    "usage: kmqctl skip --group G --topic T --partition P --offset O [--yes]\n"
    "          [--force]\n"
    "Writes the record at O to the DLQ (kmq.dlq.topic, default <T>.dlq) with\n"
    "reason skipped_by_operator, waits until the DLQ has it, then commits the\n"
    "group's offset past it (past the offsets finished after it too, as the\n"
    "commit metadata says; the metadata is carried over). O must be the\n"
    "group's committed offset: the record the commit waits for (kmqctl\n"
    "stuck shows it).\n"
    "  --yes     do not ask (asked on a terminal; refused without one)\n"
    "  --force   go on although the group has active members (their next\n"
    "            commit may undo this one). The broker itself refuses a\n"
    "            commit from outside a group with members (Unknown member):\n"
    "            kmqctl tries an unchanged commit first and stops, nothing\n"
    "            written, when it is refused. Stop the consumers first.\n"
    "Exit: 0 skipped; 1 refused (members, not confirmed, not the committed\n"
    "offset) or the dead letter failed (nothing committed); 2 usage;\n"
    "3 Kafka could not be asked.\n";

typedef struct {
  int done;
  kmq_dlq_outcome_t outcome;
  kmq_err_t err;
} skip_dr_t;

/* @locality the DLQ's delivery thread; read after kmq_dlq_flush returned. */
static void skip_done(kmq_dlq_outcome_t outcome, kmq_err_t err, void *opaque) {
  skip_dr_t *d = opaque;
  d->outcome = outcome;
  d->err = err;
  d->done = 1;
}

static int confirm(const char *what) {
  if (!isatty(STDIN_FILENO))
    return 0;
  fprintf(stderr, "%s\nType yes to go on: ", what);
  char line[16];
  return fgets(line, sizeof(line), stdin) && !strcmp(line, "yes\n");
}

/* Dead-letters m; 0 once the DLQ has it. */
static int dead_letter(kmqctl_t *ctl, const char *topic, const char *dlq,
                       const rd_kafka_message_t *m) {
  char errstr[512];
  kmq_conf_t *dc = kmq_conf_dup(ctl->conf);
  if (!dc || kmq_conf_set(dc, "kmq.dlq.topic", dlq, errstr, sizeof(errstr))) {
    kmq_conf_destroy(dc);
    return kmqctl_fail(ctl, KMQCTL_USAGE, "kmq.dlq.topic: %s", errstr);
  }
  kmq_dlq_t *d = kmq_dlq_new(dc, NULL, NULL, errstr, sizeof(errstr));
  kmq_conf_destroy(dc);
  if (!d)
    return kmqctl_fail(ctl, KMQCTL_USAGE, "DLQ producer: %s", errstr);
  kmq_dlq_record_t rec = kmq_dlq_record_of(
      m, "skipped_by_operator", "skipped with kmqctl skip", "operator");
  skip_dr_t dr = {0, KMQ_DLQ_OUTCOME_LOST, KMQ_OK};
  kmq_err_t e = kmq_dlq_send(d, &rec, skip_done, &dr);
  if (!e)
    e = kmq_dlq_flush(d, ctl->timeout_ms > 30000 ? ctl->timeout_ms : 30000);
  /* destroy hands an unfinished letter its outcome (LOST) before it
   * returns, so dr is final after it. */
  kmq_dlq_destroy_within(d, 1000);
  if (e || !dr.done || dr.outcome != KMQ_DLQ_OUTCOME_DLQ)
    return kmqctl_fail(ctl, KMQCTL_NO,
                       "the dead letter did not reach %s (%s): nothing "
                       "committed",
                       dlq, kmq_err2str(e ? e : dr.err));
  printf("dead-lettered %s [%d] offset %lld (user \"%.*s\") to %s\n", topic,
         m->partition, (long long)m->offset, (int)m->key_len,
         m->key ? (const char *)m->key : "", dlq);
  return KMQCTL_OK;
}

/* Commits past `offset` (and past the finished offsets the old metadata
 * lists right after it), with the rest of that metadata re-encoded for the
 * new offset. */
static int commit_past(kmqctl_t *ctl, rd_kafka_t *rk, const char *topic,
                       rd_kafka_topic_partition_t *old, int64_t offset) {
  char err[128], meta[4096];
  kmq_gate_t *g = kmq_gate_new(offset, (size_t)1 << 24, err, sizeof(err));
  if (!g)
    return kmqctl_fail(ctl, KMQCTL_NO, "gate: %s", err);
  if (kmq_gate_restore_done(g, old->metadata, old->metadata_size, NULL))
    printf("old commit metadata is not kmq's: dropped\n");
  kmq_gate_track(g, offset);
  int64_t next;
  kmq_gate_mark_done(g, offset, &next);
  size_t len = 0;
  int64_t left_out = 0;
  size_t cap = (size_t)kmq_conf_get_int(ctl->conf,
                                        "kmq.commit.metadata.max.bytes") + 1;
  if (cap > sizeof(meta))
    cap = sizeof(meta);
  if (cap < KMQ_GATE_META_MIN)
    meta[0] = '\0';
  else
    kmq_gate_encode_done(g, meta, cap, &len, NULL, &left_out);
  kmq_gate_destroy(g);

  rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_t *p =
      rd_kafka_topic_partition_list_add(c, topic, old->partition);
  p->offset = next;
  p->metadata = len ? strdup(meta) : NULL;
  p->metadata_size = len;
  rd_kafka_resp_err_t e = rd_kafka_commit(rk, c, 0);
  if (!e)
    e = c->elems[0].err;
  rd_kafka_topic_partition_list_destroy(c);
  if (e)
    return kmqctl_fail(ctl, KMQCTL_KAFKA,
                       "commit of %lld: %s (the dead letter is written; "
                       "run skip again to retry the commit)",
                       (long long)next, rd_kafka_err2str(e));
  printf("committed %s [%d] at %lld%s\n", topic, old->partition,
         (long long)next,
         next > offset + 1 ? " (the offsets after it were finished already)"
                           : "");
  return KMQCTL_OK;
}

enum {
  OPT_GROUP = KMQCTL_OPT_FIRST_LOCAL,
  OPT_TOPIC,
  OPT_PARTITION,
  OPT_OFFSET,
  OPT_YES,
  OPT_FORCE
};

typedef struct {
  const char *topic, *group;
  int64_t partition, offset;
  int yes, force;
} skip_opts_t;

static int skip_opt(kmqctl_t *ctl, int c, const char *arg, void *opaque) {
  skip_opts_t *o = opaque;
  switch (c) {
  case OPT_GROUP: o->group = arg; return 0;
  case OPT_TOPIC: o->topic = arg; return 0;
  case OPT_PARTITION:
    return kmqctl_parse_int(ctl, "partition", arg, 0, INT32_MAX,
                            &o->partition);
  case OPT_OFFSET:
    return kmqctl_parse_int(ctl, "offset", arg, 0, INT64_MAX - 1, &o->offset);
  case OPT_YES: o->yes = 1; return 0;
  default: o->force = 1; return 0;
  }
}

int kmqctl_skip(kmqctl_t *ctl, int argc, char **argv) {
  static const struct option opts[] = {
      {"group", required_argument, 0, OPT_GROUP},
      {"topic", required_argument, 0, OPT_TOPIC},
      {"partition", required_argument, 0, OPT_PARTITION},
      {"offset", required_argument, 0, OPT_OFFSET},
      {"yes", no_argument, 0, OPT_YES},
      {"force", no_argument, 0, OPT_FORCE},
      KMQCTL_GLOBAL_LONGOPTS,
      {0, 0, 0, 0}};
  skip_opts_t o = {NULL, NULL, -1, -1, 0, 0};
  int rc = kmqctl_parse(ctl, argc, argv, opts, skip_help, skip_opt, &o);
  if (rc >= 0)
    return rc;
  const char *topic = o.topic, *group = o.group;
  int64_t partition = o.partition, offset = o.offset;
  int yes = o.yes, force = o.force;
  if (!group || !topic || partition < 0 || offset < 0)
    return kmqctl_fail(ctl, KMQCTL_USAGE,
                       "--group, --topic, --partition and --offset are all "
                       "required (an emergency tool names its target)");
  rc = kmqctl_conf_build(ctl, 1);
  if (rc)
    return rc;
  rd_kafka_t *rk = kmqctl_client(ctl, RD_KAFKA_CONSUMER, group);
  if (!rk)
    return KMQCTL_USAGE;
  char dlq[256];
  kmqctl_dlq_topic(ctl, NULL, topic, dlq, sizeof(dlq)); /* topic is set */
  const rd_kafka_metadata_t *md = kmqctl_topic_metadata(ctl, rk, topic);
  rd_kafka_topic_partition_list_t *parts = NULL;
  rd_kafka_message_t *m = NULL;
  int members = 0;
  const char *state = "";
  rc = KMQCTL_KAFKA;
  if (!md)
    goto out;
  if (partition >= md->topics[0].partition_cnt) {
    rc = kmqctl_fail(ctl, KMQCTL_USAGE, "--partition %lld: %s has %d",
                     (long long)partition, topic, md->topics[0].partition_cnt);
    goto out;
  }
  if (kmqctl_group_members(ctl, rk, group, &members, &state, NULL))
    goto out;
  if (members > 0 && !force) {
    rc = kmqctl_fail(ctl, KMQCTL_NO,
                     "group %s has %d active member%s (%s): stop them first, "
                     "or --force (a member's next commit may undo this one)",
                     group, members, members == 1 ? "" : "s", state);
    goto out;
  }
  parts = kmqctl_committed(ctl, rk, topic, md->topics[0].partition_cnt);
  if (!parts)
    goto out;
  rd_kafka_topic_partition_t *old = &parts->elems[partition];
  int64_t lo, hi;
  rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
      rk, topic, (int32_t)partition, &lo, &hi, ctl->timeout_ms);
  if (err) {
    rc = kmqctl_fail(ctl, KMQCTL_KAFKA, "end offset: %s",
                     rd_kafka_err2str(err));
    goto out;
  }
  int64_t committed = old->offset >= 0 ? old->offset : lo;
  if (offset != committed) {
    rc = kmqctl_fail(ctl, KMQCTL_NO,
                     "--offset %lld is not the group's committed offset "
                     "%lld on %s [%lld]: only the record the commit waits "
                     "for can be skipped (kmqctl stuck)",
                     (long long)offset, (long long)committed, topic,
                     (long long)partition);
    goto out;
  }
  m = kmqctl_read_at(ctl, rk, topic, (int32_t)partition, offset);
  if (!m || m->offset != offset) {
    rc = kmqctl_fail(ctl, KMQCTL_KAFKA, "no record at %s [%lld] offset %lld",
                     topic, (long long)partition, (long long)offset);
    goto out;
  }
  char what[512];
  snprintf(what, sizeof(what),
           "skip %s [%lld] offset %lld (user \"%.*s\", %zu bytes) for group "
           "%s: dead-letter it to %s and commit past it?",
           topic, (long long)partition, (long long)offset,
           (int)(m->key_len > 100 ? 100 : m->key_len),
           m->key ? (const char *)m->key : "", m->len, group, dlq);
  if (!yes && !confirm(what)) {
    rc = kmqctl_fail(ctl, KMQCTL_NO,
                     "not confirmed (--yes to skip without a terminal)");
    goto out;
  }
  /* The same commit again (offset and metadata unchanged) tells whether the
   * broker takes a commit from outside the group: with members it answers
   * UNKNOWN_MEMBER_ID (also under --force). Asked before the dead letter
   * is written, so that a refused skip leaves nothing behind. */
  if (old->offset >= 0) {
    rd_kafka_topic_partition_list_t *same =
        rd_kafka_topic_partition_list_copy(parts);
    for (int i = same->cnt - 1; i >= 0; i--)
      if (same->elems[i].partition != partition)
        rd_kafka_topic_partition_list_del_by_idx(same, i);
    rd_kafka_resp_err_t ce = rd_kafka_commit(rk, same, 0);
    if (!ce)
      ce = same->elems[0].err;
    rd_kafka_topic_partition_list_destroy(same);
    if (ce) {
      rc = kmqctl_fail(ctl, KMQCTL_NO,
                       "the broker refuses a commit for group %s now (%s): "
                       "nothing written; stop the group's members first",
                       group, rd_kafka_err2str(ce));
      goto out;
    }
  }
  rc = dead_letter(ctl, topic, dlq, m);
  if (rc == KMQCTL_OK)
    rc = commit_past(ctl, rk, topic, old, offset);
out:
  if (m)
    rd_kafka_message_destroy(m);
  if (parts)
    rd_kafka_topic_partition_list_destroy(parts);
  if (md)
    rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  return rc;
}
