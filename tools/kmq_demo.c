/* kmq demo: an application embedding kmq, in two phases. First the WeCom
 * path end to end (tools/kmq_demo_wecom.c: simulated WeCom, signed
 * callbacks, the gateway's endpoint and puller, the kmq topic, a runtime
 * replying with send_msg, every reply checked in order). Then the bulk
 * phase: it produces simulated WeCom
 * customer-service traffic (many users, several msgtypes, some bad records)
 * to a real broker, processes it with registered processors that check
 * per-user order, and prints a summary: processed, dead-lettered by reason,
 * order violations, committed offsets. Exit status 0 only if nothing is
 * missing, nothing is out of order and every bad record is in the DLQ. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "kmq/admin.h"
#include "kmq/producer.h"
#include "kmq/runtime.h"
#include "kmq/wecom_api.h"
#include "kmq_demo.h"
#include "traffic.h"

typedef struct {
  int users, per_user, work_us;
  int *last_seq;          /* per user; touched only by that user's actor */
  atomic_int violations;
  atomic_int processed;
  atomic_int duplicates;
} app_t;

/* One processor for every known type: checks that the user's messages
 * arrive strictly in order. */
static kmq_proc_result_t on_message(const kmq_chat_msg_t *msg,
                                    kmq_proc_ctx_t *ctx, void *opaque) {
  app_t *app = opaque;
  int u, seq;
  if (kmq_traffic_parse_id(msg->message_id.ptr, msg->message_id.len, &u,
                           &seq) ||
      u < 0 || u >= app->users) {
    kmq_proc_ctx_set_reason(ctx, "unexpected message_id %.*s",
                            (int)msg->message_id.len, msg->message_id.ptr);
    return KMQ_PROC_FAIL;
  }
  if (app->work_us) {
    struct timespec ts = {0, (long)app->work_us * 1000};
    nanosleep(&ts, NULL); /* simulated work: a call to an upstream API */
  }
  /* The actor runs one message of a user at a time and the scheduler's
   * hand-over between workers orders these plain accesses. */
  if (seq == app->last_seq[u])
    atomic_fetch_add(&app->duplicates, 1);
  else if (seq != app->last_seq[u] + 1)
    atomic_fetch_add(&app->violations, 1);
  app->last_seq[u] = seq;
  atomic_fetch_add(&app->processed, 1);
  return KMQ_PROC_OK;
}

static void die(const char *what, const char *errstr) {
  fprintf(stderr, "kmq-demo: %s: %s\n", what, errstr);
  exit(2);
}

static void set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[512];
  if (kmq_conf_set(c, k, v, errstr, sizeof(errstr)))
    die(k, errstr);
}

typedef struct {
  const char *reason[64];
  int count[64];
  int n;
} reasons_t;

static void count_reason(const rd_kafka_message_t *m, void *opaque) {
  reasons_t *r = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  const char *reason = j ? json_string_value(json_object_get(j, "reason")) : 0;
  if (!reason)
    reason = "(unreadable)";
  int i;
  for (i = 0; i < r->n; i++)
    if (!strcmp(r->reason[i], reason))
      break;
  if (i == r->n && r->n < 64)
    r->reason[r->n++] = strdup(reason);
  if (i < 64)
    r->count[i]++;
  json_decref(j);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: kmq-demo [options]\n"
          "1. WeCom path: simulated WeCom customers write; signed callbacks go\n"
          "over HTTP to the gateway (callback endpoint + sync_msg puller),\n"
          "which produces their messages to a kmq topic; a kmq runtime replies\n"
          "to each with kf/send_msg; the simulator checks every reply, in order.\n"
          "2. Bulk: produces simulated WeCom traffic (and bad records) to a new\n"
          "topic, processes it with kmq (per-user order checked).\n"
          "Both on a real broker; prints what happened.\n"
          "  --wecom-customers N  customers of phase 1 (0: skip it), default 40\n"
          "  --wecom-messages N   messages per customer in phase 1, default 10\n"
          "  --wecom-kfids N      open_kfids of phase 1, default 3\n"
          "  --users N        simulated customers (external_userid), default 500\n"
          "  --messages N     messages per customer, default 20\n"
          "  --work-us N      simulated work per message in microseconds,\n"
          "                   default 200\n"
          "  --workers N      kmq.sched.workers (0: one per CPU), default 0\n"
          "  --partitions N   partitions of the demo topic and its DLQ,\n"
          "                   default 6\n"
          "  --bootstrap H:P  broker (default: $KMQ_BOOTSTRAP)\n"
          "  --check-args     only check the arguments (exit 0 or 2)\n"
          "  -h, --help       this text\n"
          "Environment: KMQ_BOOTSTRAP. Exit status: 0 nothing lost, nothing\n"
          "out of order, every bad record dead-lettered and everything\n"
          "committed; 1 otherwise; 2 bad arguments or set-up failure.\n");
}

/* A whole decimal number in [min, max] or exit 2 with the option's name. */
static int arg_int(const char *opt, const char *v, int min, int max) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < min || n > max) {
    fprintf(stderr, "kmq-demo: --%s: \"%s\" is not a number in [%d, %d]\n",
            opt, v, min, max);
    exit(2);
  }
  return (int)n;
}

/* Reads every partition of a topic (no group) until n records: the DLQ. */
extern int kmq_demo_read_topic(const char *bootstrap, const char *topic, int n,
                               void (*cb)(const rd_kafka_message_t *, void *),
                               void *opaque);

int main(int argc, char **argv) {
  app_t app = {.users = 500, .per_user = 20, .work_us = 200};
  const char *bootstrap = getenv("KMQ_BOOTSTRAP");
  int workers = 0, partitions = 6, check_only = 0;
  kmq__demo_wecom_opts_t wx = {.customers = 40, .messages = 10, .kfids = 3,
                               .partitions = 4, .timeout_s = 40};
  static struct option opts[] = {{"users", 1, 0, 'u'},
                                 {"messages", 1, 0, 'm'},
                                 {"work-us", 1, 0, 'w'},
                                 {"workers", 1, 0, 'W'},
                                 {"partitions", 1, 0, 'p'},
                                 {"bootstrap", 1, 0, 'b'},
                                 {"help", 0, 0, 'h'},
                                 {"check-args", 0, 0, 'C'},
                                 {"wecom-customers", 1, 0, 'c'},
                                 {"wecom-messages", 1, 0, 'M'},
                                 {"wecom-kfids", 1, 0, 'k'},
                                 {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "u:m:w:W:p:b:h", opts, NULL)) != -1) {
    switch (o) {
    case 'u': app.users = arg_int("users", optarg, 1, 1000000); break;
    case 'm': app.per_user = arg_int("messages", optarg, 1, 1000000); break;
    case 'w': app.work_us = arg_int("work-us", optarg, 0, 10000000); break;
    case 'W': workers = arg_int("workers", optarg, 0, 1024); break;
    case 'p': partitions = arg_int("partitions", optarg, 1, 1000); break;
    case 'b': bootstrap = optarg; break;
    case 'h': usage(stdout); return 0;
    case 'C': check_only = 1; break;
    case 'c':
      wx.customers = arg_int("wecom-customers", optarg, 0, 10000);
      break;
    case 'M': wx.messages = arg_int("wecom-messages", optarg, 1, 1000); break;
    case 'k': wx.kfids = arg_int("wecom-kfids", optarg, 1, 100); break;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "kmq-demo: unexpected argument \"%s\"\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if ((long long)app.users * app.per_user > INT_MAX / 2)
    die("arguments", "--users x --messages is too large");
  if (check_only)
    return 0; /* scripts/demo.sh: arguments are fine, start the broker */
  if (!bootstrap)
    die("bootstrap", "set KMQ_BOOTSTRAP or pass --bootstrap");
  int wecom_ok = 1;
  if (wx.customers) {
    if (kmq_wecom_global_init())
      die("libcurl", "did not initialise");
    wx.bootstrap = bootstrap;
    wecom_ok = kmq__demo_wecom(&wx);
    kmq_wecom_global_cleanup();
    printf("== Bulk: simulated traffic with bad records straight to a kmq "
           "topic\n");
    fflush(stdout);
  }
  app.last_seq = malloc(sizeof(int) * (size_t)app.users);
  for (int i = 0; i < app.users; i++)
    app.last_seq[i] = -1;

  char topic[64], group[64], errstr[512], v[32];
  snprintf(topic, sizeof(topic), "wecom-kf-demo-%ld", (long)time(NULL));
  snprintf(group, sizeof(group), "kmq-demo-%ld", (long)time(NULL));
  kmq_conf_t *conf = kmq_conf_new();
  set(conf, "bootstrap.servers", bootstrap);
  set(conf, "kmq.topic", topic);
  set(conf, "group.id", group);
  set(conf, "kmq.msg.max.bytes", "65536");
  snprintf(v, sizeof(v), "%d", workers);
  set(conf, "kmq.sched.workers", v);

  char dlq_topic[80];
  snprintf(dlq_topic, sizeof(dlq_topic), "%s.dlq", topic);
  if (kmq_admin_create_topic(conf, topic, partitions, 1, NULL, 1, 30000,
                             errstr, sizeof(errstr)) ||
      kmq_admin_create_topic(conf, dlq_topic, partitions, 1, NULL, 1, 30000,
                             errstr, sizeof(errstr)))
    die("create topics", errstr);

  /* 1. Produce: users x messages in send order, plus the bad records. */
  kmq_producer_t *p =
      kmq_producer_new(conf, NULL, NULL, NULL, NULL, errstr, sizeof(errstr));
  if (!p)
    die("producer", errstr);
  char buf[1024], user[16], mid[48];
  for (int s = 0; s < app.per_user; s++)
    for (int u = 0; u < app.users; u++) {
      int n = kmq_traffic_envelope(u, s, buf, sizeof(buf));
      kmq_traffic_user(u, user, sizeof(user));
      snprintf(mid, sizeof(mid), "m-%d-%d", u, s);
      kmq_produce_msg_t m = {.key = user, .key_len = strlen(user),
                             .value = buf, .value_len = (size_t)n,
                             .msg_id = mid, .msg_type = "wecom"};
      if (kmq_producer_send(p, &m, NULL))
        die("send", "producer refused a message");
    }
  kmq_traffic_bad_t bad[KMQ_TRAFFIC_BAD_KINDS];
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS; k++) {
    kmq_traffic_bad(k, 65536, &bad[k]);
    /* The producer API insists on a key; a keyless record is what a foreign
     * producer could write, so it goes through librdkafka directly. */
    if (bad[k].key_len) {
      kmq_produce_msg_t m = {.key = bad[k].key, .key_len = bad[k].key_len,
                             .value = bad[k].value,
                             .value_len = bad[k].value_len};
      if (kmq_producer_send(p, &m, NULL))
        die("send", bad[k].name);
    } else {
      rd_kafka_conf_t *rc = rd_kafka_conf_new();
      rd_kafka_conf_set(rc, "bootstrap.servers", bootstrap, errstr,
                        sizeof(errstr));
      rd_kafka_t *raw =
          rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
      if (!raw)
        die("raw producer", errstr);
      rd_kafka_producev(raw, RD_KAFKA_V_TOPIC(topic),
                        RD_KAFKA_V_VALUE(bad[k].value, bad[k].value_len),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_END);
      rd_kafka_flush(raw, 10000);
      rd_kafka_destroy(raw);
    }
  }
  if (kmq_producer_flush(p, 60000))
    die("flush", "deliveries outstanding");
  kmq_producer_stats_t ps;
  kmq_producer_stats(p, &ps);
  kmq_producer_destroy(p);
  const int total = app.users * app.per_user;
  printf("produced    %d messages for %d users (+%d bad records) to topic "
         "%s, %d partitions\n",
         total, app.users, KMQ_TRAFFIC_BAD_KINDS, topic, partitions);

  /* 2. Process with the runtime. */
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  const char *types[] = {"text", "image", "event", "location", "link",
                         "voice"};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    kmq_proc_register(reg, types[i], on_message, &app);
  kmq_runtime_t *rt =
      kmq_runtime_new(conf, reg, NULL, NULL, errstr, sizeof(errstr));
  if (!rt)
    die("runtime", errstr);
  kmq_runtime_metrics_t mx;
  struct timespec ts0, ts1;
  clock_gettime(CLOCK_MONOTONIC, &ts0);
  time_t t0 = time(NULL);
  do {
    kmq_runtime_poll(rt, 100);
    kmq_runtime_metrics(rt, &mx);
  } while ((mx.processed < total || mx.failed < KMQ_TRAFFIC_BAD_KINDS) &&
           time(NULL) - t0 < 120);
  clock_gettime(CLOCK_MONOTONIC, &ts1);
  double secs = (double)(ts1.tv_sec - ts0.tv_sec) +
                (double)(ts1.tv_nsec - ts0.tv_nsec) / 1e9;
  kmq_runtime_destroy(rt);
  kmq_proc_registry_destroy(reg);

  /* 3. Summary from the broker's point of view. */
  reasons_t rs = {0};
  int dlq_n = kmq_demo_read_topic(bootstrap, dlq_topic, KMQ_TRAFFIC_BAD_KINDS,
                                  count_reason, &rs);
  kmq_partition_lag_t lag[64];
  int nl = 64;
  int lag_ok = kmq_admin_group_lag(conf, group, topic, lag, &nl, 10000, errstr,
                                   sizeof(errstr)) == KMQ_OK;
  int missing = 0;
  for (int u = 0; u < app.users; u++)
    missing += app.last_seq[u] != app.per_user - 1;
  printf("processed   %d messages in %.1f s (%.0f messages/s, from the "
         "runtime's start, group join included)\n",
         atomic_load(&app.processed), secs,
         secs > 0 ? atomic_load(&app.processed) / secs : 0.0);
  printf("latency     p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms (dispatch to "
         "processor outcome, incl. %d us of simulated work)\n",
         mx.latency_p50_us / 1000.0, mx.latency_p99_us / 1000.0,
         mx.latency_p999_us / 1000.0, app.work_us);
  printf("dead-lettered %d records to %s (bad input, by reason):\n", dlq_n,
         dlq_topic);
  for (int i = 0; i < rs.n; i++)
    printf("  %-16s %d\n", rs.reason[i], rs.count[i]);
  printf("order       %d violations (a user's message before an earlier "
         "one), %d duplicates, %d users missing messages\n",
         atomic_load(&app.violations), atomic_load(&app.duplicates), missing);
  int64_t lagsum = 0;
  printf("committed   offset/end per partition (equal: nothing left "
         "behind):");
  for (int i = 0; lag_ok && i < nl; i++) {
    printf(" p%d=%lld/%lld", lag[i].partition, (long long)lag[i].committed,
           (long long)lag[i].high);
    lagsum += lag[i].lag;
  }
  printf("%s\n", lag_ok ? "" : " (unavailable)");
  int ok = wecom_ok && atomic_load(&app.processed) == total &&
           atomic_load(&app.violations) == 0 && missing == 0 &&
           dlq_n == KMQ_TRAFFIC_BAD_KINDS && lag_ok && lagsum == 0;
  printf("%s\n", ok ? "RESULT: OK (nothing lost, nothing out of order, "
                      "every reply in order, everything committed)"
                    : "RESULT: FAILED");
  for (int k = 0; k < KMQ_TRAFFIC_BAD_KINDS; k++)
    free(bad[k].value);
  for (int i = 0; i < rs.n; i++)
    free((char *)rs.reason[i]);
  kmq_conf_destroy(conf);
  free(app.last_seq);
  return ok ? 0 : 1;
}
