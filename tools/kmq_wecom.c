/* kmq-wecom: WeCom callback crypto from the command line, and the callback
 * endpoint (the library does the work: include/kmq/wecom.h and
 * include/kmq/wecom_callback.h; this file is flags and exit codes).
 *
 *   kmq-wecom verify-url --receive-id R --timestamp TS --nonce N \
 *       --echostr E --signature S           (token, key: flags or env)
 *   kmq-wecom decrypt --receive-id R --timestamp TS --nonce N \
 *       --signature S < body.xml
 *   kmq-wecom serve --receive-id R --sync-topic T [--listen A:P] \
 *       [-X bootstrap.servers=...]
 *   kmq-wecom gateway ... (serve and the puller in one process:
 *       tools/kmq_wecom_gateway.c)
 *
 * Exit codes: 0 success, 1 refused by the crypto (code and name on
 * stderr), 2 bad or missing arguments, 3 serve could not start. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/conf.h"
#include "kmq/wecom.h"
#include "kmq/wecom_callback.h"
#include "kmq_wecom_cli.h"

const char kmq__wecom_env_help[] =
    "Environment:\n"
    "  KMQ_WECOM_TOKEN    the callback Token, when --token is not given\n"
    "  KMQ_WECOM_AES_KEY  the EncodingAESKey, when --aes-key is not given\n"
    "  (prefer these: flags show in ps)\n";

static const char exit_help[] =
    "Exit codes: 0 success; 1 refused (the WeCom error code and name are "
    "printed\non stderr); 2 bad or missing arguments";


static void usage_verify(FILE *f) {
  fprintf(f,
          "Usage: kmq-wecom verify-url [flags]\n"
          "Checks a URL verification request and prints the decrypted "
          "echostr (what the\nendpoint must answer) followed by a newline.\n"
          "  --token T          callback Token (or KMQ_WECOM_TOKEN)\n"
          "  --aes-key K        43-char EncodingAESKey (or KMQ_WECOM_AES_KEY)\n"
          "  --receive-id R     corp id (required)\n"
          "  --timestamp TS     query parameter timestamp (required)\n"
          "  --nonce N          query parameter nonce (required)\n"
          "  --echostr E        query parameter echostr, URL-decoded "
          "(required)\n"
          "  --signature S      query parameter msg_signature (required)\n"
          "  --max-skew SEC     refuse timestamps further than SEC from now "
          "(default %d;\n                     0: off, for recorded "
          "requests)\n"
          "  --now SEC          Unix time to measure the skew against "
          "(default: the clock)\n"
          "%s%s\n",
          KMQ_WECOM_DEFAULT_MAX_SKEW_S, kmq__wecom_env_help, exit_help);
}

static void usage_decrypt(FILE *f) {
  fprintf(f,
          "Usage: kmq-wecom decrypt [flags] < body.xml\n"
          "Checks a message callback (the POST body on stdin, at most %d "
          "bytes) and prints\nits inner XML followed by a newline.\n"
          "  --token T, --aes-key K, --receive-id R, --timestamp TS, "
          "--nonce N,\n  --signature S, --max-skew SEC, --now SEC: as for "
          "verify-url\n%s%s\n",
          KMQ_WECOM_MAX_BODY, kmq__wecom_env_help, exit_help);
}

static void usage_serve(FILE *f) {
  fprintf(f,
          "Usage: kmq-wecom serve [flags]\n"
          "WeCom callback endpoint: GET answers URL verification, POST turns "
          "a\nkf_msg_or_event callback into a sync request on --sync-topic "
          "(keyed by open_kfid)\nand answers \"success\" once Kafka has it. "
          "Runs until SIGINT or SIGTERM.\n"
          "  --token T, --aes-key K, --receive-id R   as for verify-url\n"
          "  --sync-topic T     topic of the sync requests (required)\n"
          "  --listen A:P       IPv4 address and port (default "
          "127.0.0.1:8080)\n"
          "  --path P           callback path (default /wecom/callback)\n"
          "  --max-skew SEC     timestamp skew and replay window (default "
          "%d, > 0)\n"
          "  --max-body BYTES   largest POST body (default 16384, at most "
          "%d)\n"
          "  --conn-timeout SEC idle connections closed after (default 10)\n"
          "  -X key=value       Kafka / kmq.* configuration (e.g. "
          "bootstrap.servers)\n"
          "%sExit codes: 0 stopped by a signal; 2 bad arguments; 3 could not "
          "start\n",
          KMQ_WECOM_DEFAULT_MAX_SKEW_S, KMQ_WECOM_MAX_BODY,
          kmq__wecom_env_help);
}

int kmq__wecom_usage_error(const char *fmt, const char *what) {
  fprintf(stderr, "kmq-wecom: ");
  fprintf(stderr, fmt, what);
  fprintf(stderr, "\n");
  return EXIT_USAGE;
}

bool kmq__wecom_parse_long(const char *s, long min, long max, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < min || v > max)
    return false;
  *out = v;
  return true;
}

int kmq__wecom_parse(int argc, char **argv, args_t *a, const char *allowed,
                 void (*usage)(FILE *)) {
  static const struct option opts[] = {
      {"token", required_argument, NULL, 't'},
      {"aes-key", required_argument, NULL, 'k'},
      {"receive-id", required_argument, NULL, 'r'},
      {"timestamp", required_argument, NULL, 's'},
      {"nonce", required_argument, NULL, 'n'},
      {"echostr", required_argument, NULL, 'e'},
      {"signature", required_argument, NULL, 'g'},
      {"max-skew", required_argument, NULL, 'm'},
      {"now", required_argument, NULL, 'w'},
      {"sync-topic", required_argument, NULL, 'T'},
      {"listen", required_argument, NULL, 'l'},
      {"path", required_argument, NULL, 'p'},
      {"max-body", required_argument, NULL, 'b'},
      {"conn-timeout", required_argument, NULL, 'c'},
      {"base-url", required_argument, NULL, 'U'},
      {"group", required_argument, NULL, 'G'},
      {"out-topic", required_argument, NULL, 'O'},
      {"config", required_argument, NULL, 'F'},
      {"profile", required_argument, NULL, 'P'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  char errstr[512];
  int c, idx;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":hX:F:", opts, &idx)) != -1) {
    if (c == 'h') {
      usage(stdout);
      exit(0);
    }
    const char *flag = argv[optind - 1];
    if (c == ':')
      return kmq__wecom_usage_error("%s needs a value (see --help)", flag);
    if (c == '?')
      return kmq__wecom_usage_error("unknown flag %s (see --help)", flag);
    if (!strchr(allowed, c)) {
      char name[32];
      if (c == 'X' || c == 'F')
        snprintf(name, sizeof(name), "-%c", c);
      else
        snprintf(name, sizeof(name), "--%s", opts[idx].name);
      return kmq__wecom_usage_error("%s does not apply here (see --help)",
                                    name);
    }
    switch (c) {
    case 't': a->token = optarg; break;
    case 'k': a->aes_key = optarg; break;
    case 'r': a->receive_id = optarg; break;
    case 's': a->timestamp = optarg; break;
    case 'n': a->nonce = optarg; break;
    case 'e': a->echostr = optarg; break;
    case 'g': a->signature = optarg; break;
    case 'T': a->sync_topic = optarg; break;
    case 'l': a->listen = optarg; break;
    case 'p': a->path = optarg; break;
    case 'U': a->base_url = optarg; break;
    case 'G': a->group = optarg; break;
    case 'O': a->out_topic = optarg; break;
    case 'P': a->profile = optarg; break;
    case 'F':
      /* Read where it stands: a later -X overrides a key of the file. */
      if (kmq_conf_load_file(a->conf, optarg, a->profile, errstr,
                             sizeof(errstr))) {
        fprintf(stderr, "kmq-wecom: -F %s: %s\n", optarg, errstr);
        return EXIT_USAGE;
      }
      break;
    case 'm':
      if (!kmq__wecom_parse_long(optarg, 0, 86400 * 365, &a->max_skew))
        return kmq__wecom_usage_error("--max-skew: \"%s\" is not 0..31536000",
                           optarg);
      break;
    case 'w':
      if (!kmq__wecom_parse_long(optarg, 0, 1L << 40, &a->now))
        return kmq__wecom_usage_error("--now: \"%s\" is not Unix seconds",
                           optarg);
      break;
    case 'b':
      if (!kmq__wecom_parse_long(optarg, 1, KMQ_WECOM_MAX_BODY, &a->max_body))
        return kmq__wecom_usage_error("--max-body: \"%s\" is out of range",
                           optarg);
      break;
    case 'c':
      if (!kmq__wecom_parse_long(optarg, 1, 3600, &a->conn_timeout))
        return kmq__wecom_usage_error("--conn-timeout: \"%s\" is not 1..3600",
                           optarg);
      break;
    case 'X': {
      char *eq = strchr(optarg, '=');
      if (!eq || eq == optarg)
        return kmq__wecom_usage_error("-X %s: expected key=value", optarg);
      *eq = '\0';
      if (kmq_conf_set(a->conf, optarg, eq + 1, errstr, sizeof(errstr))) {
        fprintf(stderr, "kmq-wecom: -X %s: %s\n", optarg, errstr);
        return EXIT_USAGE;
      }
      break;
    }
    }
  }
  if (optind < argc)
    return kmq__wecom_usage_error("unexpected argument \"%s\"", argv[optind]);
  if (!a->token)
    a->token = getenv("KMQ_WECOM_TOKEN");
  if (!a->aes_key)
    a->aes_key = getenv("KMQ_WECOM_AES_KEY");
  if (!a->token || !*a->token)
    return kmq__wecom_usage_error("%s", "no token: --token or KMQ_WECOM_TOKEN");
  if (!a->aes_key || !*a->aes_key)
    return kmq__wecom_usage_error("%s",
                       "no AES key: --aes-key or KMQ_WECOM_AES_KEY");
  static const struct {
    char flag;
    const char *name;
    size_t off;
  } required[] = {
      {'r', "--receive-id", offsetof(args_t, receive_id)},
      {'s', "--timestamp", offsetof(args_t, timestamp)},
      {'n', "--nonce", offsetof(args_t, nonce)},
      {'e', "--echostr", offsetof(args_t, echostr)},
      {'g', "--signature", offsetof(args_t, signature)},
      {'T', "--sync-topic", offsetof(args_t, sync_topic)},
  };
  for (size_t i = 0; i < sizeof(required) / sizeof(*required); i++)
    if (strchr(allowed, required[i].flag) &&
        !*(const char **)((char *)a + required[i].off))
      return kmq__wecom_usage_error("missing %s", required[i].name);
  return 0;
}

kmq_wecom_callback_opts_t kmq__wecom_endpoint_opts(const args_t *a,
                                                   const char *addr,
                                                   long port) {
  return (kmq_wecom_callback_opts_t){
      .token = a->token,
      .aes_key = a->aes_key,
      .receive_id = a->receive_id,
      .sync_topic = a->sync_topic,
      .listen_addr = addr,
      .port = (uint16_t)port,
      .path = a->path,
      .max_skew_s = (int)a->max_skew,
      .max_body = (size_t)a->max_body,
      .conn_timeout_s = (unsigned)a->conn_timeout,
  };
}

void kmq__wecom_block_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, set, NULL);
  signal(SIGPIPE, SIG_IGN);
}

int kmq__wecom_listen(const char *listen, char addr[64], long *port) {
  snprintf(addr, 64, "127.0.0.1");
  *port = 8080;
  if (!listen)
    return 0;
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen || colon - listen >= 64 ||
      !kmq__wecom_parse_long(colon + 1, 0, 65535, port))
    return kmq__wecom_usage_error("--listen \"%s\": expected A.B.C.D:PORT",
                                  listen);
  snprintf(addr, 64, "%.*s", (int)(colon - listen), listen);
  return 0;
}

static kmq_wecom_crypt_t *crypt_from(const args_t *a, int *rc) {
  char errstr[256];
  kmq_wecom_err_t err;
  kmq_wecom_crypt_t *c = kmq_wecom_crypt_new(a->token, a->aes_key,
                                             a->receive_id, (int)a->max_skew,
                                             &err, errstr, sizeof(errstr));
  if (!c) {
    fprintf(stderr, "kmq-wecom: %d %s: %s\n", (int)err,
            kmq_wecom_err_name(err), errstr);
    *rc = EXIT_USAGE;
  }
  return c;
}

static int refused(kmq_wecom_err_t err, const char *errstr) {
  fprintf(stderr, "kmq-wecom: %d %s: %s\n", (int)err, kmq_wecom_err_name(err),
          errstr);
  return EXIT_REFUSED;
}

static int cmd_verify(int argc, char **argv, args_t *a) {
  int rc = kmq__wecom_parse(argc, argv, a, "tkrsnegmw", usage_verify);
  if (rc)
    return rc;
  kmq_wecom_crypt_t *c = crypt_from(a, &rc);
  if (!c)
    return rc;
  char errstr[256], *plain = NULL;
  size_t len = 0;
  kmq_wecom_err_t err = kmq_wecom_verify_url(
      c, a->signature, a->timestamp, a->nonce, a->echostr,
      a->now ? a->now : (int64_t)time(NULL), &plain, &len, errstr,
      sizeof(errstr));
  kmq_wecom_crypt_destroy(c);
  if (err)
    return refused(err, errstr);
  fwrite(plain, 1, len, stdout);
  fputc('\n', stdout);
  free(plain);
  return 0;
}

static int cmd_decrypt(int argc, char **argv, args_t *a) {
  int rc = kmq__wecom_parse(argc, argv, a, "tkrsngmw", usage_decrypt);
  if (rc)
    return rc;
  /* One byte more than the bound tells "too long" from "exactly full". */
  char *body = malloc(KMQ_WECOM_MAX_BODY + 1);
  size_t n = body ? fread(body, 1, KMQ_WECOM_MAX_BODY + 1, stdin) : 0;
  if (!body || ferror(stdin)) {
    fprintf(stderr, "kmq-wecom: cannot read the body from stdin\n");
    free(body);
    return EXIT_USAGE;
  }
  kmq_wecom_crypt_t *c = crypt_from(a, &rc);
  if (!c) {
    free(body);
    return rc;
  }
  char errstr[256], *xml = NULL;
  size_t len = 0;
  kmq_wecom_err_t err = kmq_wecom_decrypt_msg(
      c, a->signature, a->timestamp, a->nonce, body, n,
      a->now ? a->now : (int64_t)time(NULL), NULL, &xml, &len, errstr,
      sizeof(errstr));
  kmq_wecom_crypt_destroy(c);
  free(body);
  if (err)
    return refused(err, errstr);
  fwrite(xml, 1, len, stdout);
  fputc('\n', stdout);
  free(xml);
  return 0;
}

static int cmd_serve(int argc, char **argv, args_t *a) {
  a->max_skew = KMQ_WECOM_DEFAULT_MAX_SKEW_S;
  int rc = kmq__wecom_parse(argc, argv, a, "tkrTlpmbcX", usage_serve);
  if (rc)
    return rc;
  if (a->max_skew == 0)
    return kmq__wecom_usage_error("%s",
                       "--max-skew must be > 0 (it is the replay window)");
  char addr[64];
  long port;
  if ((rc = kmq__wecom_listen(a->listen, addr, &port)))
    return rc;
  kmq_wecom_callback_opts_t o = kmq__wecom_endpoint_opts(a, addr, port);
  sigset_t set;
  kmq__wecom_block_signals(&set);
  char errstr[512];
  kmq_wecom_callback_t *cb =
      kmq_wecom_callback_new(&o, a->conf, errstr, sizeof(errstr));
  if (!cb) {
    fprintf(stderr, "kmq-wecom: serve: %s\n", errstr);
    return EXIT_START;
  }
  fprintf(stderr, "kmq-wecom: listening on %s:%u%s, sync requests to %s\n",
          addr, (unsigned)kmq_wecom_callback_port(cb),
          a->path ? a->path : "/wecom/callback", a->sync_topic);
  int sig = 0;
  sigwait(&set, &sig);
  kmq_wecom_callback_stats_t st;
  kmq_wecom_callback_stats(cb, &st);
  kmq_wecom_callback_destroy(cb);
  fprintf(stderr,
          "kmq-wecom: stopped by signal %d: verified %lld, produced %lld, "
          "ignored %lld, refused: signature %lld, stale %lld, replayed "
          "%lld, malformed %lld, too large %lld, 404 %lld, 405 %lld, "
          "503 %lld\n",
          sig, (long long)st.verified, (long long)st.produced,
          (long long)st.ignored, (long long)st.bad_signature,
          (long long)st.stale, (long long)st.replayed, (long long)st.malformed,
          (long long)st.too_large, (long long)st.not_found,
          (long long)st.bad_method, (long long)st.unavailable);
  return 0;
}

static void usage_main(FILE *f) {
  fprintf(f, "Usage: kmq-wecom verify-url|decrypt|serve|gateway [flags]\n"
             "       kmq-wecom <command> --help\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage_main(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage_main(stdout);
    return 0;
  }
  args_t a = {.max_skew = KMQ_WECOM_DEFAULT_MAX_SKEW_S, .conf = kmq_conf_new()};
  int rc;
  if (!a.conf)
    return EXIT_START;
  if (!strcmp(argv[1], "verify-url"))
    rc = cmd_verify(argc - 1, argv + 1, &a);
  else if (!strcmp(argv[1], "decrypt"))
    rc = cmd_decrypt(argc - 1, argv + 1, &a);
  else if (!strcmp(argv[1], "serve"))
    rc = cmd_serve(argc - 1, argv + 1, &a);
  else if (!strcmp(argv[1], "gateway"))
    rc = kmq__wecom_gateway(argc - 1, argv + 1, &a);
  else {
    fprintf(stderr, "kmq-wecom: unknown command \"%s\"\n", argv[1]);
    usage_main(stderr);
    rc = EXIT_USAGE;
  }
  kmq_conf_destroy(a.conf);
  return rc;
}
