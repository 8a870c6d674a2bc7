/*
 * The key figures of librdkafka's statistics JSON (statistics.interval.ms):
 * per broker the average round-trip time and the internal producer queue and
 * output buffer latencies, per partition the consumer lag, and the client's
 * message totals. The stats_cb parses the JSON (jansson) on the thread
 * librdkafka calls it on and publishes a fixed-size snapshot under a mutex;
 * readers (the metrics endpoint, any thread) copy it out under the same
 * mutex. Nothing here runs per message.
 */
#ifndef KMQ_LIB_RDSTATS_H
#define KMQ_LIB_RDSTATS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define KMQ__RDSTATS_BROKERS 16
#define KMQ__RDSTATS_PARTS 256

typedef struct {
  char name[128]; /* librdkafka's broker name: "host:port/nodeid" */
  int32_t nodeid;
  double rtt_avg_s, int_latency_avg_s, outbuf_latency_avg_s;
} kmq__rdstats_broker_t;

typedef struct {
  char topic[128];
  int32_t partition;
  int64_t consumer_lag; /* librdkafka's view (high watermark - position) */
} kmq__rdstats_part_t;

typedef struct {
  int64_t updates; /* statistics parsed so far; 0: none yet */
  int64_t txmsgs, rxmsgs;
  int nbrokers, nparts; /* beyond the array sizes: left out */
  kmq__rdstats_broker_t brokers[KMQ__RDSTATS_BROKERS];
  kmq__rdstats_part_t parts[KMQ__RDSTATS_PARTS];
} kmq__rdstats_snap_t;

typedef struct {
  pthread_mutex_t lock;
  kmq__rdstats_snap_t pub;  /* @locks_required lock */
  kmq__rdstats_snap_t work; /* the stats thread's scratch (one at a time) */
} kmq__rdstats_t;

void kmq__rdstats_init(kmq__rdstats_t *st);
void kmq__rdstats_free(kmq__rdstats_t *st);

/* Parses librdkafka's statistics JSON and publishes its figures. Returns -1
 * (nothing published) when the JSON does not parse. @locality the thread
 * running the client's stats_cb (one at a time) */
int kmq__rdstats_update(kmq__rdstats_t *st, const char *json, size_t len);

/* Copies the latest figures. Any thread. */
void kmq__rdstats_read(kmq__rdstats_t *st, kmq__rdstats_snap_t *out);

/* The consumer's statistics (lib/consumer.c); valid as long as c. */
struct kmq_consumer_s;
kmq__rdstats_t *kmq__consumer_rdstats(struct kmq_consumer_s *c);

#endif
