/* What the endpoint serves: /metrics (Prometheus text format 0.0.4) and
 * /stuck (JSON). @locality the HTTP thread (runtime/metrics_int.h). */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/consumer.h"
#include "kmq/producer.h"
#include "lib/rdstats.h"
#include "lib/util.h"
#include "runtime/metrics_int.h"

/* Histogram bounds, seconds: processing from 0.5 ms, delivery from 1 ms
 * (the producer's latency has millisecond resolution). */
static const double kmq__proc_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,  0.1,    0.25,  0.5,
                                      1,      2.5,   5,      10,    30};
static const double kmq__dr_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,  0.1,    0.25,  0.5,  1,
                                    2.5,   5,      10,    30,   60};
#define KMQ__NLE 15

/* A histogram recorded in `unit` per second (1e6: µs, 1e3: ms). */
static void kmq__hist(kmq__sb_t *sb, const char *name, const char *help,
                      const kmq_hist_t *h, const double *le_s, double unit) {
  int64_t le[KMQ__NLE];
  uint64_t counts[KMQ__NLE], total = 0, sum = 0;
  for (int i = 0; i < KMQ__NLE; i++)
    le[i] = (int64_t)(le_s[i] * unit + 0.5);
  kmq_hist_cumulative(h, le, KMQ__NLE, counts, &total, &sum);
  kmq__expo_family(sb, name, "histogram", help);
  kmq__expo_histogram(sb, name, NULL, le_s, counts, KMQ__NLE, total,
                      (double)sum / unit);
}

static void kmq__one(kmq__sb_t *sb, const char *name, const char *type,
                     const char *help, int64_t v) {
  kmq__expo_family(sb, name, type, help);
  kmq__expo_int(sb, name, NULL, v);
}

static void kmq__runtime(kmq__sb_t *sb, kmq__obs_t *o) {
  kmq_runtime_metrics_t m;
  kmq_runtime_metrics(o->rt, &m);
  kmq_consumer_stats_t cs;
  kmq_consumer_stats(o->consumer, &cs);
  kmq__one(sb, "kmq_messages_dispatched_total", "counter",
           "Messages handed to their user's actor", m.dispatched);
  kmq__one(sb, "kmq_messages_processed_total", "counter",
           "Messages whose processor returned OK", m.processed);
  kmq__one(sb, "kmq_messages_failed_total", "counter",
           "Messages that ended in the DLQ (bad input or processor)",
           m.failed);
  kmq__one(sb, "kmq_processor_retries_total", "counter",
           "Processor attempts that returned RETRY", m.retried);
  kmq__one(sb, "kmq_messages_cancelled_total", "counter",
           "Queued messages dropped on revoke or shutdown (redelivered)",
           m.cancelled);
  kmq__expo_family(sb, "kmq_dlq_messages_total", "counter",
                   "Records the runtime sent to the DLQ, by reason");
  for (int i = 0; i < KMQ_DLQ_REASONS; i++) {
    kmq__label_t l[] = {{"reason", kmq_runtime_dlq_reason(i)}, {NULL, NULL}};
    kmq__expo_int(sb, "kmq_dlq_messages_total", l, m.dlq_by_reason[i]);
  }
  kmq__one(sb, "kmq_dlq_written_total", "counter",
           "Dead letters written to the DLQ topic or the fallback hook", m.dlq);
  kmq__one(sb, "kmq_dlq_lost_total", "counter",
           "Dead letters neither the DLQ nor the fallback took (offset left "
           "unfinished)",
           m.dlq_lost);
  kmq__one(sb, "kmq_dlq_retries_total", "counter",
           "Dead letters sent again after neither the DLQ nor the fallback "
           "took them (kmq.dlq.retry.backoff.ms)",
           m.dlq_retries);
  kmq__one(sb, "kmq_dlq_retrying", "gauge",
           "Records whose dead letter waits for its retry (partition paused)",
           m.dlq_retrying);
  kmq__one(sb, "kmq_actors_live", "gauge", "Actors (users) with state",
           m.actors_live);
  kmq__one(sb, "kmq_mailbox_depth_max", "gauge",
           "Most messages ever queued in one mailbox", m.mailbox_depth_max);
  kmq__one(sb, "kmq_in_flight", "gauge",
           "Messages dispatched and not yet acknowledged", m.in_flight);
  kmq__one(sb, "kmq_gate_backlog", "gauge",
           "Finished offsets waiting for a lower one, all partitions",
           m.gate_backlog);
  kmq__one(sb, "kmq_rebalances_total", "counter",
           "Rebalance callbacks (assign and revoke)", m.rebalances);
  kmq__one(sb, "kmq_committed_offsets_total", "counter",
           "Offsets advanced by commits", m.committed_offsets);
  kmq__one(sb, "kmq_commits_total", "counter", "Commit requests",
           cs.commits);
  kmq__one(sb, "kmq_commit_errors_total", "counter", "Failed commits",
           cs.commit_errors);
  kmq__one(sb, "kmq_commits_held_total", "counter",
           "Commit intervals held while the member rejoined the group",
           cs.commits_held);
  kmq__one(sb, "kmq_partitions_paused", "gauge",
           "Partitions paused for backpressure", cs.paused);
  kmq__one(sb, "kmq_revokes_slow_total", "counter",
           "Revokes that waited past kmq.revoke.timeout.ms", cs.slow_revokes);
  kmq__one(sb, "kmq_messages_abandoned_total", "counter",
           "Messages still running when their partition was released",
           cs.abandoned);
  kmq__expo_family(sb, "kmq_errors_total", "counter",
                   "Errors librdkafka reported, by type");
  for (int i = 0; i < KMQ_ERROR_TYPES; i++) {
    kmq__label_t l[] = {{"type", kmq_runtime_error_type(i)}, {NULL, NULL}};
    kmq__expo_int(sb, "kmq_errors_total", l, m.errors[i]);
  }
  kmq__hist(sb, "kmq_processing_duration_seconds",
            "From its poll call's first dispatch to its outcome "
            "(processed, dead-lettered), per message",
            o->lat, kmq__proc_le, 1e6);
}

/* Per-partition gauges from the last sample. */
static void kmq__partitions(kmq__sb_t *sb, kmq__obs_t *o) {
  kmq_runtime_partition_t *ps = NULL;
  size_t n = kmq_runtime_partitions(o->rt, NULL, 0);
  if (n && !(ps = malloc(n * sizeof(*ps))))
    return;
  if (ps) {
    size_t got = kmq_runtime_partitions(o->rt, ps, n);
    n = got < n ? got : n; /* the assignment may have grown meanwhile */
  }
  static const struct {
    const char *name, *help;
    size_t off;
    int only_known; /* skip values < 0 (unknown) */
  } g[] = {
#define KMQ__F(f) offsetof(kmq_runtime_partition_t, f)
      {"kmq_partition_gate_backlog", "Finished offsets waiting for a lower "
       "one", KMQ__F(backlog), 0},
      {"kmq_partition_in_flight", "Offsets handed out and not finished",
       KMQ__F(in_flight), 0},
      {"kmq_partition_committed_offset", "Last committed offset",
       KMQ__F(committed), 1},
      {"kmq_partition_high_watermark", "High watermark (librdkafka's cached "
       "one)", KMQ__F(high_watermark), 1},
      {"kmq_partition_lag", "High watermark minus committed offset",
       KMQ__F(lag), 1},
      {"kmq_partition_blocking_offset", "Offset the commit waits for (only "
       "while one blocks)", KMQ__F(blocking_offset), 1},
#undef KMQ__F
  };
  for (size_t k = 0; k < sizeof(g) / sizeof(g[0]); k++) {
    kmq__expo_family(sb, g[k].name, "gauge", g[k].help);
    for (size_t i = 0; i < n; i++) {
      int64_t v;
      memcpy(&v, (const char *)&ps[i] + g[k].off, sizeof(v));
      if (g[k].only_known && v < 0)
        continue;
      char part[16];
      snprintf(part, sizeof(part), "%d", ps[i].partition);
      /* The blocking record's user rides on its offset: one series per
       * blocked partition at a time. */
      kmq__label_t l[] = {{"topic", ps[i].topic}, {"partition", part},
                          {ps[i].blocking_offset >= 0 &&
                                   g[k].off == offsetof(kmq_runtime_partition_t,
                                                        blocking_offset)
                               ? "user"
                               : NULL,
                           ps[i].user},
                          {NULL, NULL}};
      kmq__expo_int(sb, g[k].name, l, v);
    }
  }
  const char *gn[] = {"kmq_partition_paused", "kmq_partition_blocked_seconds"};
  const char *gh[] = {"1 while the partition is paused for backpressure",
                      "How long the commit has waited for the same record "
                      "(0: not blocked)"};
  for (int k = 0; k < 2; k++) {
    kmq__expo_family(sb, gn[k], "gauge", gh[k]);
    for (size_t i = 0; i < n; i++) {
      char part[16];
      snprintf(part, sizeof(part), "%d", ps[i].partition);
      kmq__label_t l[] = {{"topic", ps[i].topic}, {"partition", part},
                          {NULL, NULL}};
      if (k == 0)
        kmq__expo_int(sb, gn[k], l, ps[i].paused);
      else
        kmq__expo_double(sb, gn[k], l, ps[i].blocked_seconds);
    }
  }
  free(ps);
}

/* librdkafka's statistics of the consumer (statistics.interval.ms). */
static void kmq__rdkafka(kmq__sb_t *sb, kmq__obs_t *o) {
  kmq__rdstats_snap_t *st = malloc(sizeof(*st));
  if (!st)
    return;
  kmq__rdstats_read(kmq__consumer_rdstats(o->consumer), st);
  const kmq__label_t client[] = {{"client", "consumer"}, {NULL, NULL}};
  kmq__expo_family(sb, "kmq_rdkafka_rxmsgs_total", "counter",
                   "Messages librdkafka received (its statistics)");
  kmq__expo_int(sb, "kmq_rdkafka_rxmsgs_total", client, st->rxmsgs);
  kmq__expo_family(sb, "kmq_rdkafka_txmsgs_total", "counter",
                   "Messages librdkafka sent (its statistics)");
  kmq__expo_int(sb, "kmq_rdkafka_txmsgs_total", client, st->txmsgs);
  static const char *const names[] = {
      "kmq_rdkafka_broker_rtt_seconds",
      "kmq_rdkafka_broker_int_latency_seconds",
      "kmq_rdkafka_broker_outbuf_latency_seconds"};
  static const char *const helps[] = {
      "Average broker round-trip time over the last statistics window",
      "Average time in librdkafka's internal queue before the output buffer",
      "Average time in the output buffer before sending"};
  for (int k = 0; k < 3; k++) {
    kmq__expo_family(sb, names[k], "gauge", helps[k]);
    for (int i = 0; i < st->nbrokers; i++) {
      const kmq__rdstats_broker_t *b = &st->brokers[i];
      kmq__label_t l[] = {{"client", "consumer"}, {"broker", b->name},
                          {NULL, NULL}};
      double v = k == 0 ? b->rtt_avg_s
                 : k == 1 ? b->int_latency_avg_s
                          : b->outbuf_latency_avg_s;
      kmq__expo_double(sb, names[k], l, v);
    }
  }
  kmq__expo_family(sb, "kmq_rdkafka_consumer_lag", "gauge",
                   "Consumer lag as librdkafka sees it (high watermark minus "
                   "fetch position)");
  for (int i = 0; i < st->nparts; i++) {
    char part[16];
    snprintf(part, sizeof(part), "%d", st->parts[i].partition);
    kmq__label_t l[] = {{"topic", st->parts[i].topic}, {"partition", part},
                        {NULL, NULL}};
    kmq__expo_int(sb, "kmq_rdkafka_consumer_lag", l, st->parts[i].consumer_lag);
  }
  free(st);
}

static void kmq__producer(kmq__sb_t *sb, kmq__obs_t *o) {
  pthread_mutex_lock(&o->prod_lock);
  kmq_producer_t *p = o->producer;
  if (p) {
    kmq_producer_stats_t ps;
    kmq_producer_stats(p, &ps);
    kmq__one(sb, "kmq_producer_produced_total", "counter",
             "Messages accepted by kmq_producer_send", ps.produced);
    kmq__one(sb, "kmq_producer_delivered_total", "counter",
             "Messages written to their topic", ps.delivered);
    kmq__one(sb, "kmq_producer_delivery_failures_total", "counter",
             "Delivery reports with an error (the message went on to the "
             "DLQ)", ps.failed);
    kmq__one(sb, "kmq_producer_dlq_total", "counter",
             "Failed deliveries written to the DLQ", ps.dlq);
    kmq__one(sb, "kmq_producer_fallback_total", "counter",
             "Failed deliveries the fallback hook stored", ps.fallback);
    kmq__one(sb, "kmq_producer_lost_total", "counter",
             "Failed deliveries neither the DLQ nor the fallback took",
             ps.lost);
    kmq__one(sb, "kmq_producer_queue_full_total", "counter",
             "Sends refused after the bounded queue-full wait", ps.queue_full);
    kmq__one(sb, "kmq_producer_queue_depth", "gauge",
             "Messages sent and awaiting their delivery report",
             ps.outstanding);
    kmq__hist(sb, "kmq_producer_delivery_duration_seconds",
              "Send to delivery report of delivered messages",
              kmq_producer_latency(p), kmq__dr_le, 1e3);
  }
  pthread_mutex_unlock(&o->prod_lock);
}

/* The fallback stores (fallback.h), labelled store="runtime" (the DLQ's
 * third level) and store="producer" (kmq_runtime_set_producer's). Counters
 * are the handle's own; pending and the oldest age are read from the table
 * (both handles usually share it: alert on max, not sum). Queried at most
 * every kmq.metrics.interval.ms (metrics_int.h); a failed table read drops
 * those two series until the next query. No series without a store. */
static void kmq__stores(kmq__sb_t *sb, kmq__obs_t *o) {
  static const char *const who[2] = {"runtime", "producer"};
  pthread_mutex_lock(&o->store_lock);
  int64_t now = kmq__mono_ms();
  if (!o->store_at_ms || now - o->store_at_ms >= o->interval_ms) {
    kmq_fallback_t *rs = kmq__runtime_store(o->rt);
    if ((o->store_has[0] = rs != NULL))
      kmq_fallback_stats(rs, &o->store_stats[0]);
    pthread_mutex_lock(&o->prod_lock);
    kmq_fallback_t *ps =
        o->producer ? kmq_producer_fallback(o->producer) : NULL;
    if ((o->store_has[1] = ps != NULL))
      kmq_fallback_stats(ps, &o->store_stats[1]);
    pthread_mutex_unlock(&o->prod_lock);
    o->store_at_ms = now ? now : 1;
  }
  int has[2] = {o->store_has[0], o->store_has[1]};
  kmq_fallback_stats_t st[2] = {o->store_stats[0], o->store_stats[1]};
  pthread_mutex_unlock(&o->store_lock);
  if (!has[0] && !has[1])
    return;
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } f[] = {
#define KMQ__F(x) offsetof(kmq_fallback_stats_t, x)
      {"kmq_fallback_stored_total", "counter",
       "Rows this process stored in the fallback store", KMQ__F(stored)},
      {"kmq_fallback_compensated_total", "counter",
       "Stored rows this process replayed to Kafka", KMQ__F(compensated)},
      {"kmq_fallback_failed_total", "counter",
       "Stored rows this process gave up on after max_retries (status "
       "failed: for a person)", KMQ__F(failed)},
      {"kmq_fallback_pending", "gauge",
       "Rows pending or retrying in the store's table", KMQ__F(pending)},
      {"kmq_fallback_oldest_pending_age_seconds", "gauge",
       "Age of the oldest pending or retrying row (0: none)",
       KMQ__F(oldest_pending_age_seconds)},
#undef KMQ__F
  };
  for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
    kmq__expo_family(sb, f[k].name, f[k].type, f[k].help);
    for (int i = 0; i < 2; i++) {
      int64_t v;
      memcpy(&v, (const char *)&st[i] + f[k].off, sizeof(v));
      if (!has[i] || v < 0)
        continue;
      kmq__label_t l[] = {{"store", who[i]}, {NULL, NULL}};
      kmq__expo_int(sb, f[k].name, l, v);
    }
  }
}

void kmq__render_metrics(kmq__sb_t *sb, void *opaque) {
  kmq__obs_t *o = opaque;
  kmq__runtime(sb, o);
  kmq__partitions(sb, o);
  kmq__rdkafka(sb, o);
  kmq__producer(sb, o);
  kmq__stores(sb, o);
}

const char *kmq__stall_name(kmq_stall_state_t st) {
  switch (st) {
  case KMQ_STALL_RUNNING:
    return "running";
  case KMQ_STALL_RETRYING:
    return "retrying";
  case KMQ_STALL_DLQ:
    return "dlq";
  default:
    return "queued";
  }
}

void kmq__render_stuck(kmq__sb_t *sb, void *opaque) {
  kmq__obs_t *o = opaque;
  kmq_runtime_partition_t *ps = NULL;
  size_t n = kmq_runtime_partitions(o->rt, NULL, 0);
  if (n && !(ps = malloc(n * sizeof(*ps)))) {
    sb->oom = 1;
    return;
  }
  if (ps) {
    size_t got = kmq_runtime_partitions(o->rt, ps, n);
    n = got < n ? got : n;
  }
  kmq__sb_printf(sb, "{\"partitions\":[");
  int first = 1;
  for (size_t i = 0; i < n; i++) {
    const kmq_runtime_partition_t *p = &ps[i];
    if (p->blocking_offset < 0)
      continue;
    kmq__sb_printf(sb, "%s{\"topic\":", first ? "" : ",");
    kmq__json_str(sb, p->topic, strlen(p->topic));
    kmq__sb_printf(sb, ",\"partition\":%d,\"committed\":%lld,"
                   "\"blocking_offset\":%lld,\"user\":",
                   p->partition, (long long)p->committed,
                   (long long)p->blocking_offset);
    kmq__json_str(sb, p->user, strlen(p->user));
    kmq__sb_printf(sb, ",\"blocked_seconds\":%.3f,\"attempts\":%d,"
                   "\"state\":\"%s\"}",
                   p->blocked_seconds, p->attempts,
                   kmq__stall_name(p->state));
    first = 0;
  }
  free(ps);
  kmq_runtime_mailbox_t top[KMQ_TOP_MAILBOXES];
  size_t nt = kmq_runtime_top_mailboxes(o->rt, top, KMQ_TOP_MAILBOXES);
  kmq__sb_printf(sb, "],\"top_mailboxes\":[");
  for (size_t i = 0; i < nt; i++) {
    kmq__sb_printf(sb, "%s{\"user\":", i ? "," : "");
    kmq__json_str(sb, top[i].user, strlen(top[i].user));
    kmq__sb_printf(sb, ",\"depth\":%lld}", (long long)top[i].depth);
  }
  kmq__sb_printf(sb, "]}\n");
}
