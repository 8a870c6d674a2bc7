/* Shared by the kmq-wecom subcommands (tools/kmq_wecom.c: verify-url,
 * decrypt, serve and the flag parser; tools/kmq_wecom_gateway.c: gateway).
 * Private to the program; main's thread only. */
#ifndef KMQ_TOOLS_KMQ_WECOM_CLI_H
#define KMQ_TOOLS_KMQ_WECOM_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <signal.h>

#include "kmq/conf.h"
#include "kmq/wecom_callback.h"

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_START = 3 };

/* The flags of every subcommand; strings point into argv or the
 * environment. conf (owned by main) collects -F and -X. */
typedef struct {
  const char *token, *aes_key, *receive_id, *timestamp, *nonce, *echostr,
      *signature, *sync_topic, *listen, *path;
  const char *base_url, *group, *out_topic, *profile; /* gateway */
  long max_skew, now, max_body, conn_timeout;
  kmq_conf_t *conf;
} args_t;

/* "Environment:" lines for KMQ_WECOM_TOKEN and KMQ_WECOM_AES_KEY. */
extern const char kmq__wecom_env_help[];

/* Parses argv into a, accepting only the flags whose short letter is in
 * `allowed` (t token, k aes-key, r receive-id, s timestamp, n nonce,
 * e echostr, g signature, m max-skew, w now, T sync-topic, l listen, p path,
 * b max-body, c conn-timeout, X -X, U base-url, G group, O out-topic,
 * F -F config file, P profile; --help prints usage and exits 0). Takes the
 * token and key from the environment when not given. Returns 0, or an exit
 * code after printing why. */
int kmq__wecom_parse(int argc, char **argv, args_t *a, const char *allowed,
                     void (*usage)(FILE *));
/* Prints "kmq-wecom: " fmt (one %s: what) and returns EXIT_USAGE. */
int kmq__wecom_usage_error(const char *fmt, const char *what);
/* A whole decimal number in [min, max]. */
bool kmq__wecom_parse_long(const char *s, long min, long max, long *out);
/* --listen A:P (NULL: 127.0.0.1:8080) into addr and port; 0 or EXIT_USAGE. */
int kmq__wecom_listen(const char *listen, char addr[64], long *port);

/* The callback endpoint's options from the flags (serve and gateway);
 * strings point into a, addr must outlive the options. */
kmq_wecom_callback_opts_t kmq__wecom_endpoint_opts(const args_t *a,
                                                   const char *addr,
                                                   long port);
/* Blocks SIGINT and SIGTERM in this thread and the ones it starts (they are
 * taken by sigwait(set)) and ignores SIGPIPE. */
void kmq__wecom_block_signals(sigset_t *set);

/* kmq-wecom gateway (argv[0] is "gateway"); returns the exit code. */
int kmq__wecom_gateway(int argc, char **argv, args_t *a);

#endif
