/* kmqctl: the operations tool. One file per subcommand (topics.c, health.c,
 * stuck.c, skip.c, dlq.c, replay.c) behind the dispatcher in main.c; what
 * they share (options, configuration, short-lived clients, Kafka queries)
 * is here and in common.c / kafka.c.
 *
 * Exit codes, the same for every subcommand:
 *   0 done / healthy;
 *   1 done, but the answer is "no": unhealthy, drifted, records that failed
 *     or were skipped as unreplayable, a refused skip;
 *   2 bad arguments or configuration (the message says which);
 *   3 Kafka could not be asked: broker unreachable within --timeout, topic
 *     or group missing, a request refused.
 * Single-threaded: every call runs on main's thread. */
#ifndef KMQCTL_H
#define KMQCTL_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"

enum { KMQCTL_OK = 0, KMQCTL_NO = 1, KMQCTL_USAGE = 2, KMQCTL_KAFKA = 3 };

/* Everything the global options decided. Owned by main. */
typedef struct {
  const char *prog;     /* "kmqctl <cmd>" for messages */
  const char *file;     /* -F */
  const char *profile;  /* --profile */
  const char *bootstrap; /* -b, else $KMQ_BOOTSTRAP */
  const char *xs[64];   /* -X key=value, in order */
  int nx;
  int timeout_ms;       /* --timeout: every broker request's bound */
  kmq_conf_t *conf;     /* built by kmqctl_conf_build */
} kmqctl_t;

/* Options every subcommand accepts (after its name too): a subcommand's
 * getopt_long table ends with KMQCTL_GLOBAL_LONGOPTS before the zero entry
 * and numbers its own options from KMQCTL_OPT_FIRST_LOCAL (kmqctl_parse). */
enum {
  KMQCTL_OPT_PROFILE = 1000,
  KMQCTL_OPT_TIMEOUT,
  KMQCTL_OPT_FIRST_LOCAL = 1100, /* subcommands number theirs from here */
};
#define KMQCTL_GLOBAL_SHORT "+b:F:X:h"
#define KMQCTL_GLOBAL_LONGOPTS                                                 \
  {"bootstrap", required_argument, 0, 'b'},                                    \
      {"config", required_argument, 0, 'F'},                                   \
      {"profile", required_argument, 0, KMQCTL_OPT_PROFILE},                   \
      {"timeout", required_argument, 0, KMQCTL_OPT_TIMEOUT},                   \
      {"help", no_argument, 0, 'h'}

/* Parses a subcommand's argv with getopt_long: its own options (codes from
 * KMQCTL_OPT_FIRST_LOCAL up, in opts with KMQCTL_GLOBAL_LONGOPTS) go to
 * on_opt, which returns 0 or, after printing why, -1; the global ones to
 * kmqctl_global_opt; --help prints help and the global help. Returns -1 to
 * go on, else the exit code (0 after --help, 2 for a bad option or a stray
 * argument). */
int kmqctl_parse(kmqctl_t *ctl, int argc, char **argv,
                 const struct option *opts, const char *help,
                 int (*on_opt)(kmqctl_t *ctl, int c, const char *arg,
                               void *opaque),
                 void *opaque);

/* For "topics bootstrap" / "dlq inspect": -1 when argv[1] is sub (go on
 * with argv + 1), else the exit code after printing help (0 for --help). */
int kmqctl_subcommand(kmqctl_t *ctl, int argc, char **argv, const char *sub,
                      const char *help);

/* Help text of the global options, for every --help. */
extern const char kmqctl_global_help[];

/* Handles a global option code. Returns 0 when handled, 'h' for --help,
 * -1 (message printed) for a bad value or an unknown option. */
int kmqctl_global_opt(kmqctl_t *ctl, int c, const char *arg);

/* Builds ctl->conf: the file (-F, with --profile) first, then -b (else
 * $KMQ_BOOTSTRAP when no bootstrap.servers is set), then every -X in order.
 * need_broker: a missing bootstrap.servers is a usage error (a command
 * that only reads the fallback store needs none). Returns KMQCTL_OK or
 * KMQCTL_USAGE with the message printed. */
int kmqctl_conf_build(kmqctl_t *ctl, int need_broker);

/* Parses a whole decimal integer in [min, max] for option `opt`; prints
 * "<prog>: --opt: ..." and returns -1 when it is not one. */
int kmqctl_parse_int(const kmqctl_t *ctl, const char *opt, const char *arg,
                     int64_t min, int64_t max, int64_t *out);

/* Prints "<prog>: <message>\n" to stderr and returns code. */
int kmqctl_fail(const kmqctl_t *ctl, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The main topic: `topic` when given, else kmq.topic; NULL when neither. */
const char *kmqctl_topic(const kmqctl_t *ctl, const char *topic);
/* kmqctl_topic, printing what to give when there is none (exit 2). */
const char *kmqctl_need_topic(const kmqctl_t *ctl, const char *topic);
/* The DLQ topic into buf: `dlq` when given, else the runtime's choice:
 * kmq.dlq.topic, else <main topic>.dlq (kmqctl_topic(topic)). NULL, with
 * what to give printed, when there is neither. */
const char *kmqctl_dlq_topic(const kmqctl_t *ctl, const char *dlq,
                             const char *topic, char *buf, size_t size);
/* The consumer group: `group` when given, else consumer.group.id or
 * group.id; NULL when none. */
const char *kmqctl_group(const kmqctl_t *ctl, const char *group);

/* A librdkafka client from ctl->conf (TLS/SASL and every -X included), with
 * group.id set when group is not NULL, and librdkafka's own logging kept to
 * errors. NULL with the message printed. Destroy with rd_kafka_destroy. */
rd_kafka_t *kmqctl_client(const kmqctl_t *ctl, rd_kafka_type_t type,
                          const char *group);

/* kmqctl_client with a delivery report callback (a producer) and the
 * client's opaque. */
rd_kafka_t *kmqctl_client_dr(const kmqctl_t *ctl, rd_kafka_type_t type,
                             const char *group,
                             void (*dr)(rd_kafka_t *,
                                        const rd_kafka_message_t *, void *),
                             void *opaque);

/* Metadata of one topic (rk's brokers and that topic) within the timeout.
 * NULL with the message printed (unreachable broker, missing topic). Free
 * with rd_kafka_metadata_destroy. */
const rd_kafka_metadata_t *kmqctl_topic_metadata(const kmqctl_t *ctl,
                                                 rd_kafka_t *rk,
                                                 const char *topic);

/* DescribeConfigs of a topic: calls cb for every config entry. Returns 0,
 * or -1 with the message printed. */
int kmqctl_topic_configs(const kmqctl_t *ctl, rd_kafka_t *rk,
                         const char *topic,
                         void (*cb)(const char *name, const char *value,
                                    void *opaque),
                         void *opaque);

/* State and member count of a consumer group (DescribeConsumerGroups),
 * and one line per member (id, client id, host, partitions) to list when
 * not NULL. Returns 0, or -1 with the message printed. state: librdkafka's
 * name ("Empty", "Stable", "Dead", ...), a static string. */
int kmqctl_group_members(const kmqctl_t *ctl, rd_kafka_t *rk,
                         const char *group, int *members, const char **state,
                         FILE *list);

/* Committed offset and metadata of group on topic/partitions [0, n): a list
 * the caller destroys, or NULL with the message printed. */
rd_kafka_topic_partition_list_t *kmqctl_committed(const kmqctl_t *ctl,
                                                  rd_kafka_t *consumer,
                                                  const char *topic, int n);

/* Reads the first record at or after `offset` of topic/partition with rk
 * (a consumer; assigns, then unassigns). NULL when there is none within the
 * timeout (message printed when not quiet). */
rd_kafka_message_t *kmqctl_read_at(const kmqctl_t *ctl, rd_kafka_t *rk,
                                   const char *topic, int32_t partition,
                                   int64_t offset);

/* Reads topic from `from` (per partition offsets; the oldest record where
 * absent or older) up to the end offsets it has when the call starts,
 * calling cb for every record in partition order; cb takes the message
 * (destroys it) and returns 0 to go on, anything else to stop (returned).
 * rk must be a consumer with enable.partition.eof=true. Returns 0 at the
 * end, -1 with the message printed when Kafka failed or was silent for
 * --timeout. */
int kmqctl_read_to_end(const kmqctl_t *ctl, rd_kafka_t *rk, const char *topic,
                       const rd_kafka_topic_partition_list_t *from,
                       int (*cb)(rd_kafka_message_t *m, void *opaque),
                       void *opaque);

/* Subcommands: argc/argv start at the subcommand's name. */
int kmqctl_topics(kmqctl_t *ctl, int argc, char **argv);
int kmqctl_health(kmqctl_t *ctl, int argc, char **argv);
int kmqctl_stuck(kmqctl_t *ctl, int argc, char **argv);
int kmqctl_skip(kmqctl_t *ctl, int argc, char **argv);
int kmqctl_dlq(kmqctl_t *ctl, int argc, char **argv);
int kmqctl_replay(kmqctl_t *ctl, int argc, char **argv);
int kmqctl_fallback(kmqctl_t *ctl, int argc, char **argv);

/* The runtime's /stuck JSON (the --endpoint of `stuck`) printed as a table
 * to out. Returns the number of blocked partitions, or -1 with why filled
 * (not JSON, wrong shape). Exposed for the fixture test. */
int kmqctl_stuck_print_endpoint(const char *json, size_t len, FILE *out,
                                char *why, size_t why_size);

/* GET <url>/stuck (file:// URLs too: the fixture test) and print it.
 * Returns the number of blocked partitions, or -1 with the message
 * printed. */
int kmqctl_stuck_endpoint(const kmqctl_t *ctl, const char *url);

/* Sets o[field] to s[0..n) as a JSON string, or to null plus
 * o[<field>_base64] when it is not UTF-8 (dlq inspect --json, fallback
 * list). */
void kmqctl_put_bytes(json_t *o, const char *field, const void *s, size_t n);

#endif
