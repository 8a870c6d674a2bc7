/* kmq-admin: operations around a kmq deployment.
 *
 *   kmq-admin create-topics --topic T [--partitions N] [--replication R]
 *       creates T and T.dlq (same partition count: a user's dead letters stay
 *       in one partition) with min.insync.replicas = R > 1 ? 2 : 1.
 *   kmq-admin lag --topic T --group G [--max-lag N]
 *       per-partition committed offset, end offset and lag; exit 1 when any
 *       partition lags more than N (a health check for probes).
 *   kmq-admin replay --topic T [--reason R] [--group G] [--dry-run]
 *       re-produces the original payloads of T.dlq records (optionally only
 *       those with reason R) to their original topic with the original key and
 *       headers; progress is committed in group G (default kmq-dlq-replay), so
 *       a second run only replays what is new. A truncated dead letter
 *       (payload_truncated or key_truncated, include/kmq/dlq.h) holds only a
 *       prefix: it is skipped and counted, never replayed cut.
 * The broker is --bootstrap or $KMQ_BOOTSTRAP. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/admin.h"
#include "kmq/producer.h"

static void usage(void) {
  fprintf(stderr,
          "usage: kmq-admin create-topics|lag|replay --topic T [--bootstrap "
          "B] [--partitions N] [--replication R] [--group G] [--max-lag N] "
          "[--reason R] [--dry-run]\n");
  exit(2);
}

static int b64val(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes base64 into a new buffer; NULL on bad input. */
static unsigned char *unb64(const char *s, size_t *out) {
  size_t n = strlen(s);
  unsigned char *o = malloc(n / 4 * 3 + 3);
  size_t k = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n && s[i] != '='; i++) {
    int v = b64val((unsigned char)s[i]);
    if (v < 0) {
      free(o);
      return NULL;
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[k++] = (unsigned char)(acc >> bits);
    }
  }
  *out = k;
  return o;
}

static int replay(const char *bootstrap, const char *topic, const char *group,
                  const char *reason_filter, int dry_run) {
  char dlq[256], errstr[512];
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  rd_kafka_conf_t *cc = rd_kafka_conf_new();
  rd_kafka_conf_set(cc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
  rd_kafka_conf_set(cc, "group.id", group, errstr, sizeof(errstr));
  rd_kafka_conf_set(cc, "enable.auto.commit", "false", errstr, sizeof(errstr));
  rd_kafka_conf_set(cc, "auto.offset.reset", "earliest", errstr,
                    sizeof(errstr));
  rd_kafka_conf_set(cc, "enable.partition.eof", "true", errstr,
                    sizeof(errstr));
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof(errstr));
  if (!c) {
    fprintf(stderr, "kmq-admin: %s\n", errstr);
    return 2;
  }
  rd_kafka_poll_set_consumer(c);
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  rd_kafka_conf_set(pc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
  rd_kafka_conf_set(pc, "enable.idempotence", "true", errstr, sizeof(errstr));
  rd_kafka_conf_set(pc, "partitioner", "murmur2_random", errstr,
                    sizeof(errstr));
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof(errstr));
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, dlq, RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(c, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  int replayed = 0, skipped = 0, bad = 0, cut = 0, eofs = 0, assigned = -1;
  time_t t0 = time(NULL), idle_since = time(NULL);
  /* Until every assigned partition reached its end (or 10 s of nothing). */
  while (time(NULL) - t0 < 600) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
    if (assigned < 0) {
      rd_kafka_topic_partition_list_t *a = NULL;
      if (!rd_kafka_assignment(c, &a) && a->cnt > 0)
        assigned = a->cnt;
      if (a)
        rd_kafka_topic_partition_list_destroy(a);
    }
    if (!m) {
      if (time(NULL) - idle_since > 10)
        break;
      continue;
    }
    idle_since = time(NULL);
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      rd_kafka_message_destroy(m);
      if (assigned > 0 && ++eofs >= assigned)
        break;
      continue;
    }
    if (m->err) {
      rd_kafka_message_destroy(m);
      continue;
    }
    json_t *j = json_loadb(m->payload, m->len, 0, NULL);
    const char *reason = json_string_value(json_object_get(j, "reason"));
    const char *otopic =
        json_string_value(json_object_get(j, "original_topic"));
    const char *text = json_string_value(json_object_get(j, "payload"));
    const char *b64 = json_string_value(json_object_get(j, "payload_base64"));
    if (!j || !otopic || (!text && !b64)) {
      bad++;
    } else if (reason_filter && (!reason || strcmp(reason, reason_filter))) {
      skipped++;
    } else if (json_is_true(json_object_get(j, "payload_truncated")) ||
               json_is_true(json_object_get(j, "key_truncated"))) {
      cut++; /* a prefix is not the record: its digest finds the original */
    } else {
      size_t len = 0;
      unsigned char *buf = NULL;
      const void *val = text;
      if (text) {
        len = json_string_length(json_object_get(j, "payload"));
      } else {
        buf = unb64(b64, &len);
        val = buf;
      }
      /* Original headers, without the DLQ's own. */
      rd_kafka_headers_t *src = NULL, *h = rd_kafka_headers_new(4);
      rd_kafka_message_headers(m, &src);
      const char *name;
      const void *hv;
      size_t hn;
      for (size_t i = 0; src && !rd_kafka_header_get_all(src, i, &name, &hv,
                                                         &hn);
           i++)
        if (strncmp(name, "dlq_", 4))
          rd_kafka_header_add(h, name, -1, hv, (ssize_t)hn);
      rd_kafka_header_add(h, "replayed_from_dlq", -1, "1", 1);
      if (!val) {
        bad++;
        rd_kafka_headers_destroy(h);
      } else if (dry_run) {
        printf("would replay %.*s -> %s (%s)\n", (int)m->key_len,
               (const char *)m->key, otopic, reason ? reason : "?");
        rd_kafka_headers_destroy(h);
        replayed++;
      } else if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(otopic),
                                   RD_KAFKA_V_KEY(m->key, m->key_len),
                                   RD_KAFKA_V_VALUE((void *)val, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                   RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END)) {
        rd_kafka_headers_destroy(h);
        bad++;
      } else {
        replayed++;
      }
      free(buf);
    }
    json_decref(j);
    rd_kafka_message_destroy(m);
  }
  /* Progress is committed only once the replays are durable. */
  int pending = rd_kafka_flush(p, 30000) ? rd_kafka_outq_len(p) : 0;
  if (!dry_run && !pending)
    rd_kafka_commit(c, NULL, 0);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  rd_kafka_destroy(p);
  printf("replayed %d, skipped %d (reason filter), unreadable %d, "
         "truncated %d (not replayable)%s\n",
         replayed, skipped, bad, cut,
         pending ? ", NOT committed: deliveries outstanding" : "");
  return pending || bad || cut ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2)
    usage();
  const char *cmd = argv[1];
  const char *bootstrap = getenv("KMQ_BOOTSTRAP"), *topic = NULL,
             *group = NULL, *reason = NULL;
  int partitions = 6, rf = 1, dry = 0;
  long long max_lag = -1;
  static struct option opts[] = {
      {"bootstrap", 1, 0, 'b'},   {"topic", 1, 0, 't'},
      {"partitions", 1, 0, 'p'},  {"replication", 1, 0, 'r'},
      {"group", 1, 0, 'g'},       {"max-lag", 1, 0, 'l'},
      {"reason", 1, 0, 'R'},      {"dry-run", 0, 0, 'n'},
      {0, 0, 0, 0}};
  int o;
  optind = 2;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'b': bootstrap = optarg; break;
    case 't': topic = optarg; break;
    case 'p': partitions = atoi(optarg); break;
    case 'r': rf = atoi(optarg); break;
    case 'g': group = optarg; break;
    case 'l': max_lag = atoll(optarg); break;
    case 'R': reason = optarg; break;
    case 'n': dry = 1; break;
    default: usage();
    }
  }
  if (!bootstrap || !topic)
    usage();
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  if (kmq_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                   sizeof(errstr))) {
    fprintf(stderr, "kmq-admin: %s\n", errstr);
    return 2;
  }
  int rc = 0;
  if (!strcmp(cmd, "create-topics")) {
    char dlq[256];
    snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
    const char *cfg[] = {"min.insync.replicas", rf > 1 ? "2" : "1", NULL};
    const char *names[] = {topic, dlq};
    for (int i = 0; i < 2; i++) {
      if (kmq_admin_create_topic(conf, names[i], partitions, rf, cfg, 1, 30000,
                                 errstr, sizeof(errstr))) {
        fprintf(stderr, "kmq-admin: %s\n", errstr);
        rc = 1;
      } else {
        printf("topic %s: %d partitions, replication %d\n", names[i],
               partitions, rf);
      }
    }
  } else if (!strcmp(cmd, "lag")) {
    if (!group)
      usage();
    kmq_partition_lag_t lag[1024];
    int n = 1024;
    if (kmq_admin_group_lag(conf, group, topic, lag, &n, 10000, errstr,
                            sizeof(errstr))) {
      fprintf(stderr, "kmq-admin: %s\n", errstr);
      rc = 2;
    } else {
      long long total = 0;
      printf("%-9s %12s %12s %10s\n", "partition", "committed", "end", "lag");
      for (int i = 0; i < n; i++) {
        printf("%-9d %12lld %12lld %10lld\n", lag[i].partition,
               (long long)lag[i].committed, (long long)lag[i].high,
               (long long)lag[i].lag);
        total += lag[i].lag;
        if (max_lag >= 0 && lag[i].lag > max_lag)
          rc = 1;
      }
      printf("total lag %lld%s\n", total,
             rc ? " (over --max-lag: unhealthy)" : "");
    }
  } else if (!strcmp(cmd, "replay")) {
    rc = replay(bootstrap, topic, group ? group : "kmq-dlq-replay", reason,
                dry);
  } else {
    usage();
  }
  kmq_conf_destroy(conf);
  return rc;
}
