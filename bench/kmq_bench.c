/*
 * kmq-bench: kmq against raw librdkafka (and Kafka's Java tools) on a real
 * broker, and the scheduler and the envelope decoder alone.
 *
 *   kmq-bench produce|consume|e2e|sched|decode [options]
 *   kmq-bench check-json FILE
 *
 * Each mode runs --reps times; the table (Markdown, stdout), the JSON file
 * and the PNG (<out>/<mode>-<stamp>.{json,png}) show the median of every
 * field over the runs and each run's throughput. Exit status: 0 when every
 * run was valid (nothing lost, no order violation, no harness error),
 * whatever the speed; 1 otherwise; 2 for usage or set-up errors.
 * bench/RESULTS.md explains what each number is; bench/run.sh runs it all.
 */
#include <errno.h>
#include <getopt.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static void usage(void) {
  fprintf(stderr,
"usage: kmq-bench produce|consume|e2e|sched|decode [options]\n"
"       kmq-bench check-json FILE\n"
"common:  --bootstrap H:P (default $KMQ_BOOTSTRAP)  --reps N (1)\n"
"         --only IMPL (kmq, kmq-raw, raw, raw-thread, raw+decode, java)\n"
"         --set KEY=VALUE (kmq_conf_set for every client, repeatable)\n"
"         --out DIR (bench/out)  --no-plot  --no-java | --java  --smoke\n"
"produce: --messages N (500000) --size B (512) --users U (1000)\n"
"         --rate R (5000) --rate-secs S (5) --partitions P (6)\n"
"consume: --messages N (1000000) --size B --users U --partitions P\n"
"         --workers W (0: kmq default, one per CPU) --no-decode-row\n"
"e2e:     --rate R (5000) --rate-secs S (10) --users-list 100,500\n"
"         --work-us US (1000) --work sleep|spin --workers W (8) --size B\n"
"sched:   --messages N (1000000) --workers-list 1,2,4\n"
"         --users-list 1,100,10000,100000 --rss-users U (100000)\n"
"decode:  --messages N per thread (200000) --workers-list 1,2,4 --size B\n"
"         --users U (no broker: kmq_msg_decode alone on N threads at once)\n");
  exit(2);
}

static int parse_list(const char *s, int *out) {
  int n = 0;
  while (*s && n < BENCH_MAX_LIST) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v <= 0)
      usage();
    out[n++] = (int)v;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',')
      usage();
  }
  return n;
}

static void mkdirs(const char *path) {
  char tmp[1024];
  snprintf(tmp, sizeof(tmp), "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      mkdir(tmp, 0755);
      *p = '/';
    }
  if (mkdir(tmp, 0755) && errno != EEXIST)
    bench_die("cannot create %s", path);
}

/* The Kafka jar folder when the kafka-tools jar and java are there. */
static const char *find_java_lib(void) {
  static char dir[1024];
  const char *env = getenv("KMQ_KAFKA_LIB");
  snprintf(dir, sizeof(dir), "%s", env ? env : KMQ_BENCH_JAVA_LIB);
  char pat[1100];
  snprintf(pat, sizeof(pat), "%s/kafka-tools-*.jar", dir);
  glob_t g;
  int found = glob(pat, 0, NULL, &g) == 0;
  globfree(&g);
  if (!found || system("command -v java >/dev/null 2>&1") != 0)
    return NULL;
  return dir;
}

enum { O_BOOT = 1000, O_REPS, O_OUT, O_NOPLOT, O_NOJAVA, O_JAVA, O_SMOKE,
       O_MSGS, O_SIZE, O_USERS, O_RATE, O_RSECS, O_PARTS, O_WORKERS,
       O_NODEC, O_ULIST, O_WORKUS, O_WORK, O_WLIST, O_RSS, O_ONLY, O_SET };

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "check-json")) {
    if (argc != 3)
      usage();
    return bench_check_json(argv[2]);
  }
  if (argc < 2 || argv[1][0] == '-')
    usage();
  bench_opts_t o = {.mode = argv[1], .bootstrap = getenv("KMQ_BOOTSTRAP"),
                    .out_dir = KMQ_BENCH_OUT_DIR, .reps = 1, .plot = 1,
                    .decode_row = 1};
  int (*fn)(const bench_opts_t *, int, bench_run_t *) =
      !strcmp(o.mode, "produce")   ? bench_produce
      : !strcmp(o.mode, "consume") ? bench_consume
      : !strcmp(o.mode, "e2e")     ? bench_e2e
      : !strcmp(o.mode, "sched")   ? bench_sched
      : !strcmp(o.mode, "decode")  ? bench_decode
                                   : NULL;
  if (!fn)
    usage();
  int java = -1; /* -1: when available */
  int64_t messages = -1;
  int size = -1, users = -1, rate = -1, workers = -1, work_us = -1, rss = -1;
  double rate_secs = -1;
  static struct option opts[] = {
      {"bootstrap", 1, 0, O_BOOT},    {"reps", 1, 0, O_REPS},
      {"out", 1, 0, O_OUT},           {"no-plot", 0, 0, O_NOPLOT},
      {"no-java", 0, 0, O_NOJAVA},    {"java", 0, 0, O_JAVA},
      {"smoke", 0, 0, O_SMOKE},       {"messages", 1, 0, O_MSGS},
      {"size", 1, 0, O_SIZE},         {"users", 1, 0, O_USERS},
      {"rate", 1, 0, O_RATE},         {"rate-secs", 1, 0, O_RSECS},
      {"partitions", 1, 0, O_PARTS},  {"workers", 1, 0, O_WORKERS},
      {"no-decode-row", 0, 0, O_NODEC}, {"users-list", 1, 0, O_ULIST},
      {"work-us", 1, 0, O_WORKUS},    {"work", 1, 0, O_WORK},
      {"workers-list", 1, 0, O_WLIST}, {"rss-users", 1, 0, O_RSS},
      {"only", 1, 0, O_ONLY},         {"set", 1, 0, O_SET},
      {0, 0, 0, 0}};
  optind = 2;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case O_BOOT: o.bootstrap = optarg; break;
    case O_REPS: o.reps = atoi(optarg); break;
    case O_OUT: o.out_dir = optarg; break;
    case O_NOPLOT: o.plot = 0; break;
    case O_NOJAVA: java = 0; break;
    case O_JAVA: java = 1; break;
    case O_SMOKE: o.smoke = 1; break;
    case O_MSGS: messages = atoll(optarg); break;
    case O_SIZE: size = atoi(optarg); break;
    case O_USERS: users = atoi(optarg); break;
    case O_RATE: rate = atoi(optarg); break;
    case O_RSECS: rate_secs = atof(optarg); break;
    case O_PARTS: o.partitions = atoi(optarg); break;
    case O_WORKERS: workers = atoi(optarg); break;
    case O_NODEC: o.decode_row = 0; break;
    case O_ULIST: o.n_users_list = parse_list(optarg, o.users_list); break;
    case O_WORKUS: work_us = atoi(optarg); break;
    case O_WORK:
      if (strcmp(optarg, "sleep") && strcmp(optarg, "spin"))
        usage();
      o.work_spin = !strcmp(optarg, "spin");
      break;
    case O_WLIST: o.n_workers_list = parse_list(optarg, o.workers_list); break;
    case O_RSS: rss = atoi(optarg); break;
    case O_ONLY: o.only = optarg; break;
    case O_SET:
      if (o.nset == 8)
        usage();
      o.set[o.nset++] = optarg;
      break;
    default: usage();
    }
  }
  if (optind != argc || o.reps < 1 || o.reps > BENCH_MAX_REPS)
    usage();

  /* Defaults, smaller with --smoke (the ctest smoke runs). */
  int sched = !strcmp(o.mode, "sched"), e2e = !strcmp(o.mode, "e2e");
  int decode = !strcmp(o.mode, "decode");
  o.messages = messages > 0 ? messages
               : sched      ? (o.smoke ? 20000 : 1000000)
               : decode     ? (o.smoke ? 2000 : 200000)
               : !strcmp(o.mode, "produce") ? (o.smoke ? 3000 : 500000)
                            : (o.smoke ? 3000 : 1000000);
  o.size = size > 0 ? size : 512;
  o.users = users > 0 ? users : o.smoke ? 100 : 1000;
  o.rate = rate > 0 ? rate : o.smoke ? (e2e ? 1000 : 2000) : 5000;
  o.rate_secs = rate_secs > 0 ? rate_secs : o.smoke ? 1 : e2e ? 10 : 5;
  o.partitions = o.partitions > 0 ? o.partitions : 6;
  /* e2e: 8 sleeping workers carry 5000 msg/s x 1 ms; 16 on 2 CPUs collapse
   * (bench/RESULTS.md, Finding 1: reproduce with --workers 16). */
  o.workers = workers >= 0 ? workers : e2e ? 8 : 0;
  o.work_us = work_us >= 0 ? work_us : 1000;
  o.rss_users = rss > 0 ? rss : o.smoke ? 2000 : 100000;
  if (!o.n_users_list) {
    static const int e2e_users[] = {100, 500}, sm[] = {1, 100, 1000},
                     full[] = {1, 100, 10000, 100000};
    const int *l = e2e ? e2e_users : o.smoke ? sm : full;
    o.n_users_list = e2e ? 2 : o.smoke ? 3 : 4;
    memcpy(o.users_list, l, sizeof(int) * (size_t)o.n_users_list);
  }
  if (!o.n_workers_list) {
    o.workers_list[0] = 1;
    o.workers_list[1] = 2;
    o.workers_list[2] = 4;
    o.n_workers_list = o.smoke ? 2 : 3;
  }
  if (!sched && !decode && (!o.bootstrap || !*o.bootstrap))
    bench_die("no broker: set KMQ_BOOTSTRAP or pass --bootstrap");
  if (!o.bootstrap)
    o.bootstrap = "";
  int want_java = (java == 1 || (java == -1 && !o.smoke)) &&
                  (!o.only || !strcmp(o.only, "java"));
  if (want_java && (!strcmp(o.mode, "produce") || !strcmp(o.mode, "consume"))) {
    o.java_lib = find_java_lib();
    if (!o.java_lib)
      bench_log("no java or no kafka-tools jar: Java reference rows skipped");
  }
  mkdirs(o.out_dir);

  char stamp[64], json_path[1200] = "", png_path[1200] = "";
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
  for (int i = 2;; i++) { /* never overwrite an earlier run's file */
    snprintf(json_path, sizeof(json_path), "%s/%s-%s.json", o.out_dir, o.mode,
             stamp);
    if (access(json_path, F_OK))
      break;
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    size_t l = strlen(stamp);
    snprintf(stamp + l, sizeof(stamp) - l, "-%d", i);
  }

  bench_run_t *runs = calloc((size_t)o.reps, sizeof(*runs));
  bench_run_t *med = calloc(1, sizeof(*med));
  if (!runs || !med)
    bench_die("out of memory");
  for (int r = 0; r < o.reps; r++) {
    runs[r].loadavg = bench_loadavg();
    bench_log("%s: run %d of %d (load average %.2f)", o.mode, r + 1, o.reps,
              runs[r].loadavg);
    if (fn(&o, r, &runs[r])) {
      runs[r].failed = 1;
      snprintf(runs[r].note, sizeof(runs[r].note), "harness error");
    }
  }
  bench_median(runs, o.reps, med);
  bench_target_t targets[32];
  int nt = bench_targets(&o, med, targets, 32);
  bench_print_table(&o, runs, o.reps, med, targets, nt);
  int rc = bench_write_json(&o, argc, argv, stamp, runs, o.reps, med, targets,
                            nt, json_path, sizeof(json_path));
  if (o.plot)
    bench_plot(&o, stamp, med, png_path, sizeof(png_path));
  printf("\njson: %s\n", json_path[0] ? json_path : "(not written)");
  if (o.plot)
    printf("png:  %s\n", png_path[0] ? png_path : "(not written)");
  int failed = rc != 0 || med->failed;
  free(runs);
  free(med);
  return failed ? 1 : 0;
}
