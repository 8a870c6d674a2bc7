/* kmqctl: short-lived librdkafka clients and the queries the subcommands
 * share, each bounded by --timeout so that an unreachable broker is an exit
 * code within that bound, never a hang. */
#include <stdlib.h>
#include <string.h>

#include "kmqctl.h"

rd_kafka_t *kmqctl_client(const kmqctl_t *ctl, rd_kafka_type_t type,
                          const char *group) {
  return kmqctl_client_dr(ctl, type, group, NULL, NULL);
}

rd_kafka_t *kmqctl_client_dr(const kmqctl_t *ctl, rd_kafka_type_t type,
                             const char *group,
                             void (*dr)(rd_kafka_t *,
                                        const rd_kafka_message_t *, void *),
                             void *opaque) {
  char err[512];
  rd_kafka_conf_t *rc = kmq_conf_build_rdkafka(
      ctl->conf,
      type == RD_KAFKA_PRODUCER ? KMQ_CLIENT_PRODUCER : KMQ_CLIENT_CONSUMER,
      err, sizeof(err));
  if (!rc) {
    kmqctl_fail(ctl, KMQCTL_USAGE, "%s", err);
    return NULL;
  }
  /* librdkafka 2.0.2 refuses assign() without a group.id: readers that
   * commit nothing get a placeholder (no subscribe, so no join). */
  if (!group && type == RD_KAFKA_CONSUMER)
    group = "kmqctl-reader";
  if (group &&
      rd_kafka_conf_set(rc, "group.id", group, err, sizeof(err)) !=
          RD_KAFKA_CONF_OK) {
    kmqctl_fail(ctl, KMQCTL_USAGE, "group.id: %s", err);
    rd_kafka_conf_destroy(rc);
    return NULL;
  }
  if (dr)
    rd_kafka_conf_set_dr_msg_cb(rc, dr);
  rd_kafka_conf_set_opaque(rc, opaque);
  /* Readers stop at a partition's end: EOF events say where it is even
   * when the last offsets are not records (transaction markers). */
  if (type == RD_KAFKA_CONSUMER)
    rd_kafka_conf_set(rc, "enable.partition.eof", "true", err, sizeof(err));
  rd_kafka_t *rk = rd_kafka_new(type, rc, err, sizeof(err));
  if (!rk) {
    kmqctl_fail(ctl, KMQCTL_USAGE, "%s", err);
    rd_kafka_conf_destroy(rc);
  }
  return rk;
}

const rd_kafka_metadata_t *kmqctl_topic_metadata(const kmqctl_t *ctl,
                                                 rd_kafka_t *rk,
                                                 const char *topic) {
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, ctl->timeout_ms);
  rd_kafka_topic_destroy(rkt);
  if (err) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "metadata of %s from %s: %s", topic,
                kmq_conf_get(ctl->conf, "bootstrap.servers"),
                rd_kafka_err2str(err));
    return NULL;
  }
  if (md->topic_cnt != 1 || md->topics[0].err) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "topic %s: %s", topic,
                rd_kafka_err2str(md->topic_cnt ? md->topics[0].err
                                               : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    rd_kafka_metadata_destroy(md);
    return NULL;
  }
  return md;
}

/* Runs one admin request already sent to q and waits for its event. */
static rd_kafka_event_t *kmqctl_admin_wait(const kmqctl_t *ctl,
                                           rd_kafka_queue_t *q,
                                           const char *what) {
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ctl->timeout_ms + 1000);
  if (!ev) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "%s: timed out", what);
    return NULL;
  }
  if (rd_kafka_event_error(ev)) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "%s: %s", what,
                rd_kafka_event_error_string(ev));
    rd_kafka_event_destroy(ev);
    return NULL;
  }
  return ev;
}

static rd_kafka_AdminOptions_t *kmqctl_admin_options(const kmqctl_t *ctl,
                                                     rd_kafka_t *rk,
                                                     rd_kafka_admin_op_t op) {
  char err[256];
  rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
  rd_kafka_AdminOptions_set_request_timeout(o, ctl->timeout_ms, err,
                                            sizeof(err));
  return o;
}

int kmqctl_topic_configs(const kmqctl_t *ctl, rd_kafka_t *rk,
                         const char *topic,
                         void (*cb)(const char *, const char *, void *),
                         void *opaque) {
  rd_kafka_ConfigResource_t *res =
      rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *o =
      kmqctl_admin_options(ctl, rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_DescribeConfigs(rk, &res, 1, o, q);
  char what[300];
  snprintf(what, sizeof(what), "DescribeConfigs(%s)", topic);
  rd_kafka_event_t *ev = kmqctl_admin_wait(ctl, q, what);
  int ret = -1;
  if (ev) {
    size_t n;
    const rd_kafka_ConfigResource_t **rs =
        rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &n);
    if (n == 1 && rd_kafka_ConfigResource_error(rs[0])) {
      kmqctl_fail(ctl, KMQCTL_KAFKA, "%s: %s", what,
                  rd_kafka_ConfigResource_error_string(rs[0]));
    } else if (n == 1) {
      size_t ne;
      const rd_kafka_ConfigEntry_t **es =
          rd_kafka_ConfigResource_configs(rs[0], &ne);
      for (size_t i = 0; i < ne; i++) {
        const char *v = rd_kafka_ConfigEntry_value(es[i]);
        cb(rd_kafka_ConfigEntry_name(es[i]), v ? v : "", opaque);
      }
      ret = 0;
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_AdminOptions_destroy(o);
  rd_kafka_queue_destroy(q);
  rd_kafka_ConfigResource_destroy(res);
  return ret;
}

int kmqctl_group_members(const kmqctl_t *ctl, rd_kafka_t *rk,
                         const char *group, int *members, const char **state,
                         FILE *list) {
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *o =
      kmqctl_admin_options(ctl, rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
  const char *groups[] = {group};
  rd_kafka_DescribeConsumerGroups(rk, groups, 1, o, q);
  char what[300];
  snprintf(what, sizeof(what), "DescribeConsumerGroups(%s)", group);
  rd_kafka_event_t *ev = kmqctl_admin_wait(ctl, q, what);
  int ret = -1;
  if (ev) {
    size_t n;
    const rd_kafka_ConsumerGroupDescription_t **gs =
        rd_kafka_DescribeConsumerGroups_result_groups(
            rd_kafka_event_DescribeConsumerGroups_result(ev), &n);
    const rd_kafka_error_t *e =
        n == 1 ? rd_kafka_ConsumerGroupDescription_error(gs[0]) : NULL;
    if (n != 1 || e) {
      kmqctl_fail(ctl, KMQCTL_KAFKA, "%s: %s", what,
                  e ? rd_kafka_error_string(e) : "no answer");
    } else {
      *members = (int)rd_kafka_ConsumerGroupDescription_member_count(gs[0]);
      *state = rd_kafka_consumer_group_state_name(
          rd_kafka_ConsumerGroupDescription_state(gs[0]));
      for (int i = 0; list && i < *members; i++) {
        const rd_kafka_MemberDescription_t *md =
            rd_kafka_ConsumerGroupDescription_member(gs[0], (size_t)i);
        const rd_kafka_topic_partition_list_t *a =
            rd_kafka_MemberAssignment_partitions(
                rd_kafka_MemberDescription_assignment(md));
        fprintf(list, "  member %s (client %s, host %s): %d partitions\n",
                rd_kafka_MemberDescription_consumer_id(md),
                rd_kafka_MemberDescription_client_id(md),
                rd_kafka_MemberDescription_host(md), a ? a->cnt : 0);
      }
      ret = 0;
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_AdminOptions_destroy(o);
  rd_kafka_queue_destroy(q);
  return ret;
}

rd_kafka_topic_partition_list_t *kmqctl_committed(const kmqctl_t *ctl,
                                                  rd_kafka_t *consumer,
                                                  const char *topic, int n) {
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
  for (int p = 0; p < n; p++)
    rd_kafka_topic_partition_list_add(parts, topic, p);
  rd_kafka_resp_err_t err = rd_kafka_committed(consumer, parts, ctl->timeout_ms);
  for (int p = 0; !err && p < n; p++)
    err = parts->elems[p].err;
  if (err) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "committed offsets on %s: %s", topic,
                rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(parts);
    return NULL;
  }
  return parts;
}

rd_kafka_message_t *kmqctl_read_at(const kmqctl_t *ctl, rd_kafka_t *rk,
                                   const char *topic, int32_t partition,
                                   int64_t offset) {
  rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(a, topic, partition)->offset = offset;
  rd_kafka_resp_err_t err = rd_kafka_assign(rk, a);
  rd_kafka_topic_partition_list_destroy(a);
  if (err) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "assign %s [%d]: %s", topic, partition,
                rd_kafka_err2str(err));
    return NULL;
  }
  rd_kafka_message_t *found = NULL;
  /* One poll bounded by the whole timeout: the fetch answers as soon as
   * the record is there. */
  for (int64_t left = ctl->timeout_ms; !found && left > 0; left -= 100) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m)
      continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset >= offset) {
      found = m;
    } else {
      if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        kmqctl_fail(ctl, KMQCTL_KAFKA, "reading %s [%d] at %lld: %s", topic,
                    partition, (long long)offset, rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
    }
  }
  rd_kafka_assign(rk, NULL);
  return found;
}

int kmqctl_read_to_end(const kmqctl_t *ctl, rd_kafka_t *rk, const char *topic,
                       const rd_kafka_topic_partition_list_t *from,
                       int (*cb)(rd_kafka_message_t *m, void *opaque),
                       void *opaque) {
  const rd_kafka_metadata_t *md = kmqctl_topic_metadata(ctl, rk, topic);
  if (!md)
    return -1;
  int np = md->topics[0].partition_cnt, left = 0, ret = 0;
  rd_kafka_metadata_destroy(md);
  int64_t *end = calloc((size_t)np, sizeof(*end));
  rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(np);
  for (int p = 0; p < np; p++) {
    int64_t lo;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        rk, topic, p, &lo, &end[p], ctl->timeout_ms);
    if (err) {
      kmqctl_fail(ctl, KMQCTL_KAFKA, "end offset of %s [%d]: %s", topic, p,
                  rd_kafka_err2str(err));
      ret = -1;
      goto out;
    }
    int64_t start = lo;
    for (int i = 0; from && i < from->cnt; i++)
      if (from->elems[i].partition == p && from->elems[i].offset > lo)
        start = from->elems[i].offset;
    if (start >= end[p]) {
      end[p] = -1; /* nothing to read there */
      continue;
    }
    rd_kafka_topic_partition_list_add(a, topic, p)->offset = start;
    left++;
  }
  if (!left)
    goto out;
  rd_kafka_resp_err_t err = rd_kafka_assign(rk, a);
  if (err) {
    kmqctl_fail(ctl, KMQCTL_KAFKA, "assign %s: %s", topic,
                rd_kafka_err2str(err));
    ret = -1;
    goto out;
  }
  /* Until every partition reached the end it had when we started; a
   * silence of --timeout is an error (the broker went away). */
  while (left > 0 && ret == 0) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, ctl->timeout_ms);
    if (!m) {
      kmqctl_fail(ctl, KMQCTL_KAFKA,
                  "%s: nothing read for %d ms (%d partitions unfinished)",
                  topic, ctl->timeout_ms, left);
      ret = -1;
      break;
    }
    int32_t p = m->partition;
    int eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
    if (m->err && !eof) {
      kmqctl_fail(ctl, KMQCTL_KAFKA, "reading %s: %s", topic,
                  rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      ret = -1;
      break;
    }
    if (p < 0 || p >= np || end[p] < 0) {
      rd_kafka_message_destroy(m);
      continue;
    }
    int64_t off = m->offset;
    if (eof || off >= end[p]) { /* reached: later records are new */
      rd_kafka_message_destroy(m);
      end[p] = -1;
      left--;
      continue;
    }
    ret = cb(m, opaque); /* takes m */
    if (off + 1 >= end[p]) {
      end[p] = -1;
      left--;
    }
  }
  rd_kafka_assign(rk, NULL);
out:
  rd_kafka_topic_partition_list_destroy(a);
  free(end);
  return ret;
}
