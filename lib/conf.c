/* kmq configuration: kmq.* table, librdkafka pass-through and baselines. */
#include "kmq/conf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/redact.h"

typedef enum { KMQ__T_INT, KMQ__T_STR } kmq__prop_type_t;

typedef struct {
  const char *name;
  kmq__prop_type_t type;
  const char *def; /* NULL: no default (string unset) */
  int64_t min, max;
  const char *desc;
} kmq__prop_t;

/* "0" as default for kmq.sched.workers means "number of online CPUs". */
static const kmq__prop_t kmq__props[] = {
    {"kmq.topic", KMQ__T_STR, NULL, 0, 0, "Main topic (produce and consume)"},
    {"kmq.dlq.topic", KMQ__T_STR, NULL, 0, 0,
     "Dead-letter topic (default: <kmq.topic>.dlq)"},
    {"kmq.mode", KMQ__T_STR, "live", 0, 0,
     "Runtime mode: live (processors, DLQ, commits in group.id) or shadow "
     "(migration phase 1: its own group, no DLQ, nothing written; needs "
     "kmq.live.group.id)"},
    {"kmq.live.group.id", KMQ__T_STR, NULL, 0, 0,
     "kmq.mode=shadow: the live group, which the shadow's group.id must "
     "differ from"},
    {"kmq.queue.full.timeout.ms", KMQ__T_INT, "5000", 0, 3600000,
     "How long send waits on a full producer queue before KMQ_ERR_QUEUE_FULL"},
    {"kmq.flush.timeout.ms", KMQ__T_INT, "30000", 0, 3600000,
     "How long destroy waits for outstanding deliveries"},
    {"kmq.commit.interval.ms", KMQ__T_INT, "1000", 1, 3600000,
     "Asynchronous commit every this many ms when offsets advanced"},
    {"kmq.commit.batch", KMQ__T_INT, "1000", 1, 100000000,
     "...or as soon as this many offsets advanced since the last commit"},
    {"kmq.gate.window", KMQ__T_INT, "65536", 64, 1 << 24,
     "Commit gate window (offsets tracked past the committable one)"},
    {"kmq.max.inflight", KMQ__T_INT, "10000", 1, 1 << 22,
     "Messages taken by a handler and not yet acknowledged, over all "
     "partitions: the size of the consumer's record slab, the one in-flight "
     "budget (the runtime's scheduler has the same bound and never reaches "
     "it first)"},
    {"kmq.revoke.timeout.ms", KMQ__T_INT, "10000", 0, 600000,
     "A revoke still waiting for running messages after this many ms is "
     "logged and counted as slow (the partition is still not released "
     "while one of its messages runs, up to 90% of max.poll.interval.ms)"},
    {"kmq.close.timeout.ms", KMQ__T_INT, "30000", 0, 3600000,
     "Close waits this long for running messages before it leaves the "
     "group anyway (what still runs is abandoned: not committed); "
     "kmq_runtime_destroy returns within this + kmq.flush.timeout.ms "
     "(+ librdkafka's purge and close, runtime.h)"},
    {"kmq.commit.metadata.max.bytes", KMQ__T_INT, "4000", 0, 1048576,
     "Finished offsets beyond the committed one, sent as the commit's "
     "metadata so the next owner skips them (0: off; keep it below the "
     "broker's offset.metadata.max.bytes, 4096 by default)"},
    {"kmq.commit.timeout.ms", KMQ__T_INT, "10000", 100, 600000,
     "Timeout of synchronous commits and committed-offset queries"},
    {"kmq.fetch.queue", KMQ__T_STR, "shared", 0, 0,
     "shared: the assigned partitions' prefetched messages wait in one "
     "queue, which librdkafka's queued.min.messages and "
     "queued.max.messages.kbytes bound as a whole (as for a plain "
     "consumer); partition: each partition's in its own, which they bound "
     "each (memory grows with the partitions; fewer fetch stalls of "
     "librdkafka 2.0.2 for a consumer that reads faster than its prefetch "
     "per second: README, Known limits)"},
    {"kmq.poll.batch", KMQ__T_INT, "500", 1, 100000,
     "Messages handled per poll_and_dispatch call at most"},
    {"kmq.sched.workers", KMQ__T_INT, "0", 0, 1024,
     "Worker threads running actors (0: number of CPUs)"},
    {"kmq.sched.mailbox.size", KMQ__T_INT, "64", 2, 1 << 20,
     "Per-user mailbox capacity (rounded up to a power of two; a live "
     "actor holds 16 bytes per slot)"},
    {"kmq.sched.idle.ms", KMQ__T_INT, "30000", 0, 86400000,
     "Idle actors are reclaimed after this many ms"},
    {"kmq.sched.max.actors", KMQ__T_INT, "1048576", 16, 1 << 26,
     "Maximum live actors"},
    {"kmq.proc.retries", KMQ__T_INT, "3", 0, 1000,
     "Processor retries before a message goes to the DLQ"},
    {"kmq.proc.backoff.ms", KMQ__T_INT, "100", 0, 600000,
     "Backoff before the first retry (doubles each retry)"},
    {"kmq.proc.backoff.max.ms", KMQ__T_INT, "10000", 0, 3600000,
     "Longest backoff between two retries (the doubling stops here)"},
    {"kmq.msg.max.bytes", KMQ__T_INT, "983040", 64, 1 << 30,
     "Largest accepted message value (960 KiB); larger ones go to the DLQ. "
     "With 16384 bytes for key and headers it must fit the producers' "
     "message.max.bytes (librdkafka's 1000000 by default), checked at "
     "start"},
    /* Topic settings: read by `kmqctl topics bootstrap` (create and drift
     * check), set by a profile (kmq_conf_set_profile, config/kafka.yaml).
     * The defaults are the development profile's. */
    {"kmq.topic.partitions", KMQ__T_INT, "4", 1, 100000,
     "Partitions of the main topic and of the DLQ (the same count: a "
     "user's dead letters stay in one partition)"},
    {"kmq.topic.replication.factor", KMQ__T_INT, "1", 1, 32,
     "Replication factor of the main topic and the DLQ"},
    {"kmq.topic.min.insync.replicas", KMQ__T_INT, "1", 1, 32,
     "Topic config min.insync.replicas (acks=all needs this many in sync)"},
    {"kmq.topic.retention.ms", KMQ__T_INT, "86400000", -1, INT64_MAX,
     "Topic config retention.ms of the main topic (-1: forever)"},
    {"kmq.topic.compression.type", KMQ__T_STR, "producer", 0, 0,
     "Topic config compression.type (producer keeps the producer's lz4)"},
    {"kmq.topic.max.message.bytes", KMQ__T_INT, "1048588", 1024, 1 << 30,
     "Topic config max.message.bytes of both topics (keep it at or above "
     "the producers' message.max.bytes: a dead letter must fit)"},
    {"kmq.dlq.retry.backoff.ms", KMQ__T_INT, "1000", 1, 600000,
     "When neither the DLQ nor the fallback store takes a dead letter: wait "
     "before sending it again (doubles each attempt; its partition stays "
     "paused meanwhile)"},
    {"kmq.dlq.retry.backoff.max.ms", KMQ__T_INT, "60000", 1, 3600000,
     "Longest wait between two such attempts"},
    {"kmq.dlq.check.timeout.ms", KMQ__T_INT, "5000", 0, 600000,
     "kmq_runtime_new asks the broker for the DLQ topic's "
     "max.message.bytes and refuses to start when the largest dead letter "
     "would not fit; waits at most this long for the answer (no answer or "
     "no topic yet: a WARN line, and the runtime starts); 0: no check"},
    {"kmq.dlq.retention.ms", KMQ__T_INT, "604800000", -1, INT64_MAX,
     "Topic config retention.ms of the DLQ (longer: letters wait for a "
     "replay)"},
    {"kmq.metrics.listen", KMQ__T_STR, "", 0, 0,
     "host:port of the Prometheus endpoint (GET /metrics, /stuck), e.g. "
     "127.0.0.1:9464 or [::1]:9464; port 0 picks a free one; empty: off"},
    {"kmq.metrics.interval.ms", KMQ__T_INT, "1000", 10, 60000,
     "The poll thread samples partitions, stalls and mailboxes for the "
     "metrics at most this often"},
    /* Fallback store and compensator (include/kmq/fallback.h). */
    {"kmq.fallback.backend", KMQ__T_STR, "none", 0, 0,
     "Fallback store behind the DLQ: sqlite, mysql or none"},
    {"kmq.fallback.path", KMQ__T_STR, "kmq-fallback.db", 0, 0,
     "SQLite database file of the fallback store (WAL, synchronous=FULL)"},
    {"kmq.fallback.url", KMQ__T_STR, NULL, 0, 0,
     "MariaDB/MySQL fallback store: mysql://user:pass@host:port/db (the "
     "password is never logged)"},
    {"kmq.fallback.max.retries", KMQ__T_INT, "10", 1, 1000000,
     "Replays of a stored message before it is marked failed (for a person)"},
    {"kmq.fallback.backoff.ms", KMQ__T_INT, "1000", 0, 3600000,
     "Compensator backoff after a row's first failed replay (doubles, with "
     "jitter)"},
    {"kmq.fallback.backoff.max.ms", KMQ__T_INT, "300000", 0, 86400000,
     "Longest compensator backoff"},
    {"kmq.fallback.claim.ms", KMQ__T_INT, "60000", 1000, 86400000,
     "Lease of a claimed row: after it, a crashed compensator's rows are "
     "claimable again"},
    {"kmq.fallback.batch", KMQ__T_INT, "256", 1, 100000,
     "Users replayed in parallel per compensator round (one row each)"},
    {"kmq.fallback.interval.ms", KMQ__T_INT, "1000", 1, 3600000,
     "Compensator pause when nothing is due"},
    {"kmq.fallback.compensator", KMQ__T_STR, "off", 0, 0,
     "on: the producer runs a compensator thread on its store"},
};
#define KMQ__NPROPS (sizeof(kmq__props) / sizeof(kmq__props[0]))

typedef struct {
  char *name;
  char *value;
} kmq__kv_t;

struct kmq_conf_s {
  kmq__kv_t *kv;
  size_t cnt, size;
  kmq__conf_hooks_t hooks; /* log and error hooks (lib/log.h) */
};

static const kmq__prop_t *kmq__prop_find(const char *name) {
  for (size_t i = 0; i < KMQ__NPROPS; i++)
    if (!strcmp(kmq__props[i].name, name))
      return &kmq__props[i];
  return NULL;
}

kmq_conf_t *kmq_conf_new(void) { return calloc(1, sizeof(kmq_conf_t)); }

void kmq_conf_destroy(kmq_conf_t *conf) {
  if (!conf)
    return;
  for (size_t i = 0; i < conf->cnt; i++) {
    free(conf->kv[i].name);
    free(conf->kv[i].value);
  }
  free(conf->kv);
  free(conf);
}

static kmq__kv_t *kmq__kv_find(const kmq_conf_t *conf, const char *name) {
  for (size_t i = 0; i < conf->cnt; i++)
    if (!strcmp(conf->kv[i].name, name))
      return &conf->kv[i];
  return NULL;
}

static kmq_err_t kmq__kv_put(kmq_conf_t *conf, const char *name,
                             const char *value) {
  kmq__kv_t *kv = kmq__kv_find(conf, name);
  char *v = strdup(value);
  if (!v)
    return KMQ_ERR_NOMEM;
  if (kv) {
    free(kv->value);
    kv->value = v;
    return KMQ_OK;
  }
  if (conf->cnt == conf->size) {
    size_t ns = conf->size ? conf->size * 2 : 16;
    kmq__kv_t *nkv = realloc(conf->kv, ns * sizeof(*nkv));
    if (!nkv) {
      free(v);
      return KMQ_ERR_NOMEM;
    }
    conf->kv = nkv;
    conf->size = ns;
  }
  conf->kv[conf->cnt].name = strdup(name);
  if (!conf->kv[conf->cnt].name) {
    free(v);
    return KMQ_ERR_NOMEM;
  }
  conf->kv[conf->cnt++].value = v;
  return KMQ_OK;
}

kmq_conf_t *kmq_conf_dup(const kmq_conf_t *conf) {
  kmq_conf_t *n = kmq_conf_new();
  if (!n)
    return NULL;
  n->hooks = conf->hooks;
  for (size_t i = 0; i < conf->cnt; i++)
    if (kmq__kv_put(n, conf->kv[i].name, conf->kv[i].value)) {
      kmq_conf_destroy(n);
      return NULL;
    }
  return n;
}

static int kmq__parse_int(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end)
    return -1;
  *out = v;
  return 0;
}

/* Validates a librdkafka key by setting it on a scratch configuration:
 * librdkafka is the authority on its own keys and value syntax. */
static kmq_err_t kmq__rdk_validate(const char *name, const char *value,
                                   char *errstr, size_t errstr_size) {
  rd_kafka_conf_t *scratch = rd_kafka_conf_new();
  char rderr[256];
  rd_kafka_conf_res_t r =
      rd_kafka_conf_set(scratch, name, value, rderr, sizeof(rderr));
  rd_kafka_conf_destroy(scratch);
  if (r == RD_KAFKA_CONF_OK)
    return KMQ_OK;
  /* librdkafka may quote the value back. */
  if (kmq__conf_is_secret(name))
    kmq__redact(rderr, sizeof(rderr), value);
  snprintf(errstr, errstr_size, "%s", rderr);
  return r == RD_KAFKA_CONF_UNKNOWN ? KMQ_ERR_CONF_UNKNOWN
                                    : KMQ_ERR_CONF_INVALID;
}

/* The broker's topic-level compression.type values: a typo would otherwise
 * surface only when the broker refuses CreateTopics. */
static int kmq__compression_ok(const char *v) {
  static const char *const ok[] = {"uncompressed", "zstd",  "lz4",
                                   "snappy",       "gzip", "producer"};
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
    if (!strcmp(v, ok[i]))
      return 1;
  return 0;
}

/* One classifier for every redaction (lib/redact.c): by name, so that a
 * new kmq.wecom.token or kmq.wecom.aes_key is covered the day it is added. */
int kmq_conf_is_secret(const char *name) { return kmq__conf_is_secret(name); }

/* Built-in topic profiles (kmq_conf_set_profile). config/kafka.yaml states
 * the same values; a file's profile section is applied over these. */
#define KMQ__PROFILE_KEYS 7
static const struct {
  const char *name, *alias;
  const char *kv[KMQ__PROFILE_KEYS][2];
} kmq__profiles[] = {
    {"development",
     "dev",
     {{"kmq.topic.partitions", "4"},
      {"kmq.topic.replication.factor", "1"},
      {"kmq.topic.min.insync.replicas", "1"},
      {"kmq.topic.retention.ms", "86400000"},
      {"kmq.topic.compression.type", "producer"},
      {"kmq.topic.max.message.bytes", "1048588"},
      {"kmq.dlq.retention.ms", "604800000"}}},
    {"production",
     "prod",
     {{"kmq.topic.partitions", "12"},
      {"kmq.topic.replication.factor", "3"},
      {"kmq.topic.min.insync.replicas", "2"},
      {"kmq.topic.retention.ms", "604800000"},
      {"kmq.topic.compression.type", "producer"},
      {"kmq.topic.max.message.bytes", "1048588"},
      {"kmq.dlq.retention.ms", "2592000000"}}},
};
#define KMQ__NPROFILES (sizeof(kmq__profiles) / sizeof(kmq__profiles[0]))

const char *kmq_conf_profile_name(const char *profile) {
  for (size_t i = 0; profile && i < KMQ__NPROFILES; i++)
    if (!strcmp(profile, kmq__profiles[i].name) ||
        !strcmp(profile, kmq__profiles[i].alias))
      return kmq__profiles[i].name;
  return NULL;
}

kmq_err_t kmq_conf_set_profile(kmq_conf_t *conf, const char *profile,
                               char *errstr, size_t errstr_size) {
  const char *name = kmq_conf_profile_name(profile);
  if (!name) {
    snprintf(errstr, errstr_size,
             "No such profile: \"%s\" (development|dev, production|prod)",
             profile ? profile : "(null)");
    return KMQ_ERR_NOT_FOUND;
  }
  for (size_t i = 0; i < KMQ__NPROFILES; i++) {
    if (strcmp(name, kmq__profiles[i].name))
      continue;
    for (size_t k = 0; k < KMQ__PROFILE_KEYS; k++) {
      kmq_err_t err = kmq_conf_set(conf, kmq__profiles[i].kv[k][0],
                                   kmq__profiles[i].kv[k][1], errstr,
                                   errstr_size);
      if (err)
        return err;
    }
  }
  return KMQ_OK;
}

kmq_err_t kmq_conf_set(kmq_conf_t *conf, const char *name, const char *value,
                       char *errstr, size_t errstr_size) {
  if (!conf || !name || !value) {
    snprintf(errstr, errstr_size, "conf, name and value are required");
    return KMQ_ERR_INVALID_ARG;
  }
  if (!strncmp(name, "kmq.", 4)) {
    const kmq__prop_t *p = kmq__prop_find(name);
    if (!p) {
      snprintf(errstr, errstr_size, "No such configuration property: \"%s\"",
               name);
      return KMQ_ERR_CONF_UNKNOWN;
    }
    if (p->type == KMQ__T_INT) {
      int64_t v;
      if (kmq__parse_int(value, &v)) {
        snprintf(errstr, errstr_size,
                 "Invalid value \"%s\" for \"%s\": expected an integer",
                 kmq__conf_is_secret(name) ? KMQ__REDACTED : value, name);
        return KMQ_ERR_CONF_INVALID;
      }
      if (v < p->min || v > p->max) {
        if (kmq__conf_is_secret(name))
          snprintf(errstr, errstr_size,
                   "Invalid value " KMQ__REDACTED " for \"%s\": must be in "
                   "%lld..%lld",
                   name, (long long)p->min, (long long)p->max);
        else
          snprintf(errstr, errstr_size,
                   "Invalid value %lld for \"%s\": must be in %lld..%lld",
                   (long long)v, name, (long long)p->min, (long long)p->max);
        return KMQ_ERR_CONF_INVALID;
      }
    } else if (!*value && !(p->def && !*p->def)) {
      /* Only a string key whose default is empty (off) may be set empty. */
      snprintf(errstr, errstr_size, "\"%s\" must not be empty", name);
      return KMQ_ERR_CONF_INVALID;
    } else if (!strcmp(name, "kmq.topic.compression.type") &&
               !kmq__compression_ok(value)) {
      snprintf(errstr, errstr_size,
               "Invalid value \"%s\" for \"%s\": expected one of "
               "uncompressed, zstd, lz4, snappy, gzip, producer",
               value, name);
      return KMQ_ERR_CONF_INVALID;
    }
  } else {
    const char *rdkey = name;
    if (!strncmp(name, "producer.", 9))
      rdkey = name + 9;
    else if (!strncmp(name, "consumer.", 9))
      rdkey = name + 9;
    kmq_err_t err = kmq__rdk_validate(rdkey, value, errstr, errstr_size);
    if (err)
      return err;
  }
  kmq_err_t err = kmq__kv_put(conf, name, value);
  if (err)
    snprintf(errstr, errstr_size, "Out of memory");
  return err;
}

const char *kmq_conf_get(const kmq_conf_t *conf, const char *name) {
  const kmq__kv_t *kv = kmq__kv_find(conf, name);
  if (kv)
    return kv->value;
  const kmq__prop_t *p = kmq__prop_find(name);
  return p ? p->def : NULL;
}

int64_t kmq_conf_get_int(const kmq_conf_t *conf, const char *name) {
  const char *v = kmq_conf_get(conf, name);
  int64_t out = 0;
  if (!v || kmq__parse_int(v, &out))
    return 0;
  return out;
}

/* A URL's password (scheme://user:PASSWORD@host...) as "***" in buf: dumps
 * end up in startup logs. Returns v itself when there is no password. */
static const char *kmq__mask_password(const char *v, char *buf, size_t size) {
  const char *s = v ? strstr(v, "://") : NULL;
  const char *at = s ? strrchr(s, '@') : NULL;
  const char *colon = s ? memchr(s + 3, ':', (size_t)(at ? at - s - 3 : 0))
                        : NULL;
  if (!at || !colon)
    return v;
  snprintf(buf, size, "%.*s:***%s", (int)(colon - v), v, at);
  return buf;
}

void kmq_conf_dump(const kmq_conf_t *conf,
                   void (*cb)(const char *, const char *, const char *, void *),
                   void *opaque) {
  char masked[512];
  for (size_t i = 0; i < KMQ__NPROPS; i++) {
    const char *v = kmq_conf_get(conf, kmq__props[i].name);
    if (!strcmp(kmq__props[i].name, "kmq.fallback.url"))
      v = kmq__mask_password(v, masked, sizeof(masked));
    else if (v && *v && kmq__conf_is_secret(kmq__props[i].name))
      v = KMQ__REDACTED;
    cb(kmq__props[i].name, v ? v : "", kmq__props[i].desc, opaque);
  }
  for (size_t i = 0; conf && i < conf->cnt; i++) {
    const char *k = conf->kv[i].name;
    if (!strncmp(k, "kmq.", 4))
      continue;
    cb(k, kmq__conf_is_secret(k) ? KMQ__REDACTED : conf->kv[i].value,
       "librdkafka property (set by the application)", opaque);
  }
}

void kmq_conf_redact(const kmq_conf_t *conf, char *buf, size_t buf_size) {
  for (size_t i = 0; conf && i < conf->cnt; i++)
    if (kmq__conf_is_secret(conf->kv[i].name))
      kmq__redact(buf, buf_size, conf->kv[i].value);
}

/* The design's baselines, with librdkafka's own key names. The partitioner is
 * set at top level (not through the deprecated default.topic.config) and is
 * murmur2_random so that a key maps to the partition the Java client picks. */
static const char *kmq__producer_baseline[][2] = {
    {"acks", "all"},
    {"enable.idempotence", "true"},
    {"message.send.max.retries", "2147483647"},
    {"retry.backoff.ms", "100"},
    {"message.timeout.ms", "30000"},
    {"linger.ms", "10"},
    {"batch.num.messages", "1000"},
    {"queue.buffering.max.messages", "100000"},
    {"queue.buffering.max.kbytes", "1048576"},
    {"compression.type", "lz4"},
    {"partitioner", "murmur2_random"},
    {"statistics.interval.ms", "60000"},
};

static const char *kmq__consumer_baseline[][2] = {
    {"partition.assignment.strategy", "cooperative-sticky"},
    {"enable.auto.commit", "false"},
    {"enable.auto.offset.store", "false"},
    {"auto.offset.reset", "earliest"},
    {"session.timeout.ms", "45000"},
    {"heartbeat.interval.ms", "3000"},
    {"max.poll.interval.ms", "300000"},
    {"enable.partition.eof", "false"},
    {"statistics.interval.ms", "60000"},
};

static int kmq__rdk_set(rd_kafka_conf_t *rc, const char *k, const char *v,
                        char *errstr, size_t errstr_size) {
  char rderr[256];
  if (rd_kafka_conf_set(rc, k, v, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK) {
    int secret = kmq__conf_is_secret(k);
    if (secret)
      kmq__redact(rderr, sizeof(rderr), v);
    snprintf(errstr, errstr_size, "%s=%s: %s", k, secret ? KMQ__REDACTED : v,
             rderr);
    return -1;
  }
  return 0;
}

rd_kafka_conf_t *kmq_conf_build_rdkafka(const kmq_conf_t *conf,
                                        kmq_client_type_t type, char *errstr,
                                        size_t errstr_size) {
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  const char *(*base)[2] = type == KMQ_CLIENT_PRODUCER ? kmq__producer_baseline
                                                       : kmq__consumer_baseline;
  size_t nbase = type == KMQ_CLIENT_PRODUCER
                     ? sizeof(kmq__producer_baseline) / sizeof(base[0])
                     : sizeof(kmq__consumer_baseline) / sizeof(base[0]);
  const char *own = type == KMQ_CLIENT_PRODUCER ? "producer." : "consumer.";
  const char *other = type == KMQ_CLIENT_PRODUCER ? "consumer." : "producer.";

  /* librdkafka's default logger would print its texts unredacted. */
  rd_kafka_conf_set_log_cb(rc, kmq__rdk_log);

  for (size_t i = 0; i < nbase; i++)
    if (kmq__rdk_set(rc, base[i][0], base[i][1], errstr, errstr_size))
      goto fail;
  if (conf) {
    /* Two passes so that client-specific keys win over bare keys whatever
     * order the application set them in. */
    for (size_t i = 0; i < conf->cnt; i++) {
      const char *k = conf->kv[i].name;
      if (!strncmp(k, "kmq.", 4) || !strncmp(k, own, 9) ||
          !strncmp(k, other, 9))
        continue;
      if (kmq__rdk_set(rc, k, conf->kv[i].value, errstr, errstr_size))
        goto fail;
    }
    for (size_t i = 0; i < conf->cnt; i++) {
      const char *k = conf->kv[i].name;
      if (strncmp(k, own, 9))
        continue;
      if (kmq__rdk_set(rc, k + 9, conf->kv[i].value, errstr, errstr_size))
        goto fail;
    }
  }
  return rc;
fail:
  rd_kafka_conf_destroy(rc);
  return NULL;
}

void kmq_conf_set_log_cb(kmq_conf_t *conf, kmq_log_cb *cb, void *opaque) {
  conf->hooks.log.cb = cb;
  conf->hooks.log.opaque = cb ? opaque : NULL;
}

void kmq_conf_set_error_cb(kmq_conf_t *conf, kmq_error_cb *cb, void *opaque) {
  conf->hooks.err_cb = cb;
  conf->hooks.err_opaque = cb ? opaque : NULL;
}

const kmq__conf_hooks_t *kmq__conf_hooks(const kmq_conf_t *conf) {
  return &conf->hooks;
}
