/* kmqctl: operations on a kmq deployment; this file only dispatches.
 * `kmqctl --help` lists the subcommands, `kmqctl <cmd> --help` explains one
 * (kmqctl.h: the exit codes shared by all). */
#include <stdlib.h>
#include <string.h>

#include "kmqctl.h"

static const struct {
  const char *name;
  int (*run)(kmqctl_t *, int, char **);
  const char *what;
} kmqctl_cmds[] = {
    {"topics", kmqctl_topics,
     "topics bootstrap: create the main topic and its DLQ from a profile, "
     "report drift"},
    {"health", kmqctl_health,
     "brokers, ISR vs min.insync, group members, lag (a probe)"},
    {"stuck", kmqctl_stuck,
     "where a group's commit is stuck: the record blocking it, its user "
     "and age"},
    {"skip", kmqctl_skip,
     "emergency: dead-letter the record at the committed offset and commit "
     "past it"},
    {"dlq", kmqctl_dlq, "dlq inspect: counts by reason and user, --json"},
    {"replay", kmqctl_replay,
     "re-produce dead letters (filters: user, time, reason)"},
    {"fallback", kmqctl_fallback,
     "fallback store: stats, list rows, replay them to Kafka"},
};
#define KMQCTL_NCMDS (sizeof(kmqctl_cmds) / sizeof(kmqctl_cmds[0]))

static void usage(FILE *out) {
  fprintf(out, "usage: kmqctl [global options] <command> [options]\n\n"
               "Commands (kmqctl <command> --help for each):\n");
  for (size_t i = 0; i < KMQCTL_NCMDS; i++)
    fprintf(out, "  %-8s %s\n", kmqctl_cmds[i].name, kmqctl_cmds[i].what);
  fprintf(out, "\n%s\n  -V, --version                   print the version\n",
          kmqctl_global_help);
  fprintf(out, "Environment: KMQ_BOOTSTRAP (brokers), KMQ_CONFIG (-F), and "
               "any ${VAR} the file uses.\n");
}

int main(int argc, char **argv) {
  kmqctl_t ctl = {.prog = "kmqctl", .timeout_ms = 10000};
  /* Reports and errors interleave in the order they happen, also in a
   * pipe (a probe's log). */
  setvbuf(stdout, NULL, _IOLBF, 0);
  static const struct option opts[] = {
      KMQCTL_GLOBAL_LONGOPTS, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
  int c;
  /* Global options before the command; "+" stops at the command name. */
  while ((c = getopt_long(argc, argv, KMQCTL_GLOBAL_SHORT "V", opts, NULL)) !=
         -1) {
    if (c == 'V') {
      printf("kmqctl %s (librdkafka %s)\n", KMQCTL_VERSION,
             rd_kafka_version_str());
      return KMQCTL_OK;
    }
    int r = kmqctl_global_opt(&ctl, c, optarg);
    if (r == 'h') {
      usage(stdout);
      return KMQCTL_OK;
    }
    if (r < 0) {
      fprintf(stderr, "kmqctl --help lists the options\n");
      return KMQCTL_USAGE;
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return KMQCTL_USAGE;
  }
  const char *cmd = argv[optind];
  for (size_t i = 0; i < KMQCTL_NCMDS; i++) {
    if (strcmp(cmd, kmqctl_cmds[i].name))
      continue;
    char prog[64];
    snprintf(prog, sizeof(prog), "kmqctl %s", cmd);
    ctl.prog = prog;
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    optind = 1; /* the subcommand parses from its own name on */
    int rc = kmqctl_cmds[i].run(&ctl, sub_argc, sub_argv);
    kmq_conf_destroy(ctl.conf);
    return rc;
  }
  fprintf(stderr, "kmqctl: unknown command \"%s\" (kmqctl --help)\n", cmd);
  return KMQCTL_USAGE;
}
