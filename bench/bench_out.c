/*
 * kmq-bench output: design targets, the Markdown table on stdout, the JSON
 * file and the gnuplot PNG. Everything reads the median run (every field of
 * every row is the median over the repetitions; a ratio is the median of the
 * per-repetition ratios, not the ratio of medians).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"

/* ---- targets ---- */

static double bench__ratio(const bench_run_t *r, const char *key) {
  for (int i = 0; i < r->nratios; i++)
    if (!strcmp(r->ratios[i].key, key))
      return r->ratios[i].v;
  return -1;
}

static void bench__t(bench_target_t *t, int *n, int max, const char *name,
                     const char *goal, int pass, const char *fmt, double v) {
  if (*n == max)
    return;
  bench_target_t *x = &t[(*n)++];
  snprintf(x->name, sizeof(x->name), "%s", name);
  snprintf(x->goal, sizeof(x->goal), "%s", goal);
  if (v == -1)
    snprintf(x->value, sizeof(x->value), "n/a");
  else
    snprintf(x->value, sizeof(x->value), fmt, v);
  x->pass = v != -1 && pass;
}

int bench_targets(const bench_opts_t *o, const bench_run_t *med,
                  bench_target_t *t, int max) {
  int n = 0;
  bench_run_t *m = (bench_run_t *)med;
  char phase[40], name[64];
  if (!strcmp(o->mode, "produce")) {
    bench_row_t *mx = bench_row_find(m, "kmq", "max");
    snprintf(phase, sizeof(phase), "rate=%d", o->rate);
    bench_row_t *rt = bench_row_find(m, "kmq", phase);
    double v = mx ? mx->msg_s : -1;
    bench__t(t, &n, max, "producer throughput (flat out)", ">= 5000 msg/s",
             v >= 5000, "%.0f msg/s", v);
    if (o->rate >= 5000) {
      v = rt ? rt->p99_us / 1000 : -1;
      snprintf(name, sizeof(name), "producer P99 at %d msg/s", o->rate);
      bench__t(t, &n, max, name, "< 50 ms", v < 50, "%.1f ms", v);
      v = rt ? bench_row_get_extra(rt, "send_msg_s") : -1;
      bench__t(t, &n, max, "producer keeps the rate", ">= 99% of --rate",
               v >= 0.99 * o->rate, "%.0f msg/s", v);
    }
    v = bench__ratio(med, "produce_kmq_over_best_raw");
    bench__t(t, &n, max, "producer kmq / raw librdkafka (faster variant)",
             ">= 95%", v >= 0.95, "%.3f", v);
  } else if (!strcmp(o->mode, "consume")) {
    bench_row_t *k = bench_row_find(m, "kmq", "no-op");
    double v = k ? k->msg_s : -1;
    bench__t(t, &n, max, "consumer throughput (full pipeline)",
             ">= 8000 msg/s", v >= 8000, "%.0f msg/s", v);
    v = k ? bench_row_get_extra(k, "gate_backlog_max") : -1;
    bench__t(t, &n, max, "commit-gate backlog (max, flat out)", "< 100",
             v < 100, "%.0f", v);
    v = k ? bench_row_get_extra(k, "commit_lag_closed") : -1;
    bench__t(t, &n, max, "commit lag after close", "= 0", v == 0, "%.0f", v);
    v = bench__ratio(med, "consume_kmqraw_over_raw");
    bench__t(t, &n, max,
             "pipeline (raw processor, no decode) / raw librdkafka consume",
             ">= 90%", v >= 0.90, "%.3f", v);
    v = bench__ratio(med, "consume_kmq_over_raw");
    bench__t(t, &n, max, "pipeline (decoding) / raw librdkafka consume",
             ">= 90%", v >= 0.90, "%.3f", v);
  } else if (!strcmp(o->mode, "e2e")) {
    int all = 1;
    for (int i = 0; i < med->nrows; i++) {
      const bench_row_t *r = &med->rows[i];
      double p99 = r->p99_us / 1000, bl = bench_row_get_extra(r, "gate_backlog_max");
      double want = bench_row_get_extra(r, "target_msg_s");
      int ok_rate = r->msg_s >= 0.95 * want;
      snprintf(name, sizeof(name), "processing P99, %s", r->phase);
      bench__t(t, &n, max, name, "< 100 ms", p99 < 100, "%.1f ms", p99);
      snprintf(name, sizeof(name), "commit-gate backlog, %s", r->phase);
      bench__t(t, &n, max, name, "< 100", bl < 100, "%.0f", bl);
      snprintf(name, sizeof(name), "throughput, %s", r->phase);
      bench__t(t, &n, max, name, ">= 95% of --rate", ok_rate, "%.0f msg/s",
               r->msg_s);
      double bad = bench_row_get_extra(r, "order_violations") +
                   bench_row_get_extra(r, "missing");
      snprintf(name, sizeof(name), "order violations + missing, %s",
               r->phase);
      bench__t(t, &n, max, name, "= 0", bad == 0, "%.0f", bad);
      all &= p99 < 100 && bl < 100 && ok_rate && bad == 0;
    }
    all = all && med->nrows > 0;
    bench__t(t, &n, max, "every users count held (100 -> 500)",
             "all of the above", all, "%.0f", all);
    snprintf(t[n - 1].value, sizeof(t[n - 1].value), "%s",
             all ? "yes" : "no");
  }
  return n;
}

/* ---- table ---- */

static void bench__ms(double us, char *buf, size_t size) {
  if (us < 0)
    snprintf(buf, size, "-");
  else
    snprintf(buf, size, "%.2f", us / 1000.0);
}

static void bench__print_sched(const bench_opts_t *o, const bench_run_t *med) {
  for (int i = 0; i < med->nrows; i++) {
    const bench_row_t *r = &med->rows[i];
    if (strncmp(r->phase, "rss", 3))
      continue;
    printf("\nVmRSS with %.0f idle users (MiB): before the scheduler %.1f, "
           "created %.1f, %.0f users idle %.1f, after kmq_sched_reclaim %.1f "
           "(%.0f recycled in %.1f ms), %.0f new users %.1f, destroyed %.1f; "
           "%.0f bytes per idle actor, %.0f actor slots\n",
           r->n, bench_row_get_extra(r, "rss_before_kb") / 1024,
           bench_row_get_extra(r, "rss_new_kb") / 1024, r->n,
           bench_row_get_extra(r, "rss_idle_kb") / 1024,
           bench_row_get_extra(r, "rss_reclaimed_kb") / 1024,
           bench_row_get_extra(r, "actors_reclaimed"),
           bench_row_get_extra(r, "reclaim_ms"), r->n,
           bench_row_get_extra(r, "rss_new_users_kb") / 1024,
           bench_row_get_extra(r, "rss_destroyed_kb") / 1024,
           bench_row_get_extra(r, "bytes_per_idle_actor"),
           bench_row_get_extra(r, "actor_slots_new_users"));
  }
  printf("\n| ns/msg (msg/s) | ");
  for (int u = 0; u < o->n_users_list; u++)
    printf("%d users | ", o->users_list[u]);
  printf("\n|---|");
  for (int u = 0; u < o->n_users_list; u++)
    printf("---|");
  printf("\n");
  for (int w = 0; w < o->n_workers_list; w++) {
    printf("| %d worker%s | ", o->workers_list[w],
           o->workers_list[w] > 1 ? "s" : "");
    for (int u = 0; u < o->n_users_list; u++) {
      char phase[40];
      snprintf(phase, sizeof(phase), "w=%d u=%d", o->workers_list[w],
               o->users_list[u]);
      bench_row_t *r = bench_row_find((bench_run_t *)med, "sched", phase);
      if (r)
        printf("%.0f (%.2fM) | ", bench_row_get_extra(r, "ns_per_msg"),
               r->msg_s / 1e6);
      else
        printf("- | ");
    }
    printf("\n");
  }
}

void bench_print_table(const bench_opts_t *o, const bench_run_t *runs,
                       int nruns, const bench_run_t *med,
                       const bench_target_t *t, int nt) {
  printf("\n## kmq-bench %s: median of %d run%s\n", o->mode, nruns,
         nruns > 1 ? "s" : "");
  if (!strcmp(o->mode, "sched"))
    bench__print_sched(o, med);
  printf("\n| impl | phase | msgs | msg/s | MB/s | P50 ms | P99 ms | "
         "P99.9 ms | max ms | msg/s of each run |\n");
  printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (int i = 0; i < med->nrows; i++) {
    const bench_row_t *r = &med->rows[i];
    char p50[32], p99[32], p999[32], pmax[32], each[256] = "";
    bench__ms(r->p50_us, p50, sizeof(p50));
    bench__ms(r->p99_us, p99, sizeof(p99));
    bench__ms(r->p999_us, p999, sizeof(p999));
    bench__ms(r->max_us, pmax, sizeof(pmax));
    for (int q = 0; q < nruns; q++) {
      bench_row_t *x =
          bench_row_find((bench_run_t *)&runs[q], r->impl, r->phase);
      size_t l = strlen(each);
      snprintf(each + l, sizeof(each) - l, "%s%.0f", q ? " / " : "",
               x ? x->msg_s : -1);
    }
    char mb[32];
    if (r->mb_s < 0)
      snprintf(mb, sizeof(mb), "-");
    else
      snprintf(mb, sizeof(mb), "%.1f", r->mb_s);
    if (r->msg_s < 0)
      continue; /* no throughput (the RSS row): shown above */
    printf("| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s |\n",
           r->impl, r->phase, r->n, r->msg_s, mb, p50, p99, p999, pmax, each);
  }
  printf("\nDetails (medians):\n");
  for (int i = 0; i < med->nrows; i++) {
    const bench_row_t *r = &med->rows[i];
    if (!r->nextra)
      continue;
    printf("- %s %s:", r->impl, r->phase);
    for (int e = 0; e < r->nextra; e++)
      printf(" %s=%.6g", r->extra[e].key, r->extra[e].v);
    printf("\n");
  }
  for (int i = 0; i < med->nratios; i++) {
    printf("- ratio %s = %.3f (runs:", med->ratios[i].key, med->ratios[i].v);
    for (int q = 0; q < nruns; q++)
      for (int j = 0; j < runs[q].nratios; j++)
        if (!strcmp(runs[q].ratios[j].key, med->ratios[i].key))
          printf(" %.3f", runs[q].ratios[j].v);
    printf(")\n");
  }
  if (nt) {
    printf("\n| target | goal | measured | |\n|---|---|---|---|\n");
    for (int i = 0; i < nt; i++)
      printf("| %s | %s | %s | %s |\n", t[i].name, t[i].goal, t[i].value,
             t[i].pass ? "PASS" : "FAIL");
  }
  printf("\n1-minute load average at the start of each run:");
  for (int q = 0; q < nruns; q++)
    printf(" %.2f", runs[q].loadavg);
  printf(" (%ld CPUs)\n", sysconf(_SC_NPROCESSORS_ONLN));
  for (int q = 0; q < nruns; q++)
    if (runs[q].failed)
      printf("\nrun %d NOT VALID: %s\n", q + 1, runs[q].note);
  fflush(stdout);
}

/* ---- JSON ---- */

static json_t *bench__row_json(const bench_row_t *r) {
  json_t *j = json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                        "impl", r->impl, "phase", r->phase, "n", r->n, "secs",
                        r->secs, "msg_s", r->msg_s, "mb_s", r->mb_s, "p50_us",
                        r->p50_us, "p99_us", r->p99_us, "p999_us", r->p999_us,
                        "max_us", r->max_us);
  json_t *ex = json_object();
  for (int e = 0; e < r->nextra; e++)
    json_object_set_new(ex, r->extra[e].key, json_real(r->extra[e].v));
  json_object_set_new(j, "extra", ex);
  return j;
}

static json_t *bench__run_json(const bench_run_t *run) {
  json_t *rows = json_array(), *ratios = json_object();
  for (int i = 0; i < run->nrows; i++)
    json_array_append_new(rows, bench__row_json(&run->rows[i]));
  for (int i = 0; i < run->nratios; i++)
    json_object_set_new(ratios, run->ratios[i].key,
                        json_real(run->ratios[i].v));
  return json_pack("{s:o, s:o, s:b, s:s, s:f}", "rows", rows, "ratios",
                   ratios, "valid", !run->failed, "note", run->note,
                   "loadavg_start", run->loadavg);
}

static json_t *bench__machine(void) {
  struct utsname u;
  char cpu[256] = "", line[512];
  long mem_kb = -1;
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof(line), f))
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      snprintf(cpu, sizeof(cpu), "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = '\0';
      break;
    }
  if (f)
    fclose(f);
  f = fopen("/proc/meminfo", "r");
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "MemTotal: %ld kB", &mem_kb) == 1)
      break;
  if (f)
    fclose(f);
  uname(&u);
  return json_pack("{s:i, s:I, s:s, s:s}", "nproc",
                   (int)sysconf(_SC_NPROCESSORS_ONLN), "mem_total_kb",
                   (json_int_t)mem_kb, "cpu", cpu, "kernel", u.release);
}

static json_t *bench__params(const bench_opts_t *o) {
  json_t *ul = json_array(), *wl = json_array();
  for (int i = 0; i < o->n_users_list; i++)
    json_array_append_new(ul, json_integer(o->users_list[i]));
  for (int i = 0; i < o->n_workers_list; i++)
    json_array_append_new(wl, json_integer(o->workers_list[i]));
  json_t *set = json_array();
  for (int i = 0; i < o->nset; i++)
    json_array_append_new(set, json_string(o->set[i]));
  return json_pack("{s:i, s:I, s:i, s:i, s:i, s:i, s:f, s:i, s:i, s:s, s:o, "
                   "s:o, s:i, s:b, s:b, s:o}",
                   "reps", o->reps, "messages", (json_int_t)o->messages,
                   "size", o->size, "users", o->users, "partitions",
                   o->partitions, "rate", o->rate, "rate_secs", o->rate_secs,
                   "workers", o->workers, "work_us", o->work_us, "work",
                   o->work_spin ? "spin" : "sleep", "users_list", ul,
                   "workers_list", wl, "rss_users", o->rss_users, "java",
                   o->java_lib != NULL, "smoke", o->smoke, "set", set);
}

int bench_write_json(const bench_opts_t *o, int argc, char **argv,
                     const char *stamp, const bench_run_t *runs, int nruns,
                     const bench_run_t *med, const bench_target_t *t, int nt,
                     char *json_path, size_t jsize) {
  char cmd[2048] = "";
  for (int i = 0; i < argc; i++) {
    size_t l = strlen(cmd);
    snprintf(cmd + l, sizeof(cmd) - l, "%s%s", i ? " " : "", argv[i]);
  }
  json_t *jr = json_array(), *jt = json_array();
  for (int q = 0; q < nruns; q++)
    json_array_append_new(jr, bench__run_json(&runs[q]));
  for (int i = 0; i < nt; i++)
    json_array_append_new(jt, json_pack("{s:s, s:s, s:s, s:b}", "name",
                                        t[i].name, "goal", t[i].goal,
                                        "measured", t[i].value, "pass",
                                        t[i].pass));
  json_t *doc = json_pack(
      "{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "mode", o->mode,
      "timestamp", stamp, "command", cmd, "bootstrap", o->bootstrap,
      "machine", bench__machine(), "params", bench__params(o), "runs", jr,
      "median", bench__run_json(med), "targets", jt);
  snprintf(json_path, jsize, "%s/%s-%s.json", o->out_dir, o->mode, stamp);
  int rc = doc ? json_dump_file(doc, json_path, JSON_INDENT(2)) : -1;
  json_decref(doc);
  if (rc) {
    bench_log("cannot write %s", json_path);
    json_path[0] = '\0';
    return -1;
  }
  return 0;
}

int bench_check_json(const char *path) {
  json_error_t e;
  json_t *doc = json_load_file(path, 0, &e);
  if (!doc) {
    fprintf(stderr, "%s:%d: %s\n", path, e.line, e.text);
    return 1;
  }
  json_t *med = json_object_get(doc, "median");
  int ok = json_is_string(json_object_get(doc, "mode")) &&
           json_array_size(json_object_get(doc, "runs")) > 0 &&
           json_array_size(json_object_get(med, "rows")) > 0;
  json_decref(doc);
  if (!ok)
    fprintf(stderr, "%s: no mode, runs or median rows\n", path);
  return ok ? 0 : 1;
}

/* ---- plot ---- */

int bench_plot(const bench_opts_t *o, const char *stamp,
               const bench_run_t *med, char *png_path, size_t psize) {
  char dat[1024], gp[1024], cmd[2200];
  snprintf(dat, sizeof(dat), "%s/%s-%s.dat", o->out_dir, o->mode, stamp);
  snprintf(gp, sizeof(gp), "%s/%s-%s.gp", o->out_dir, o->mode, stamp);
  snprintf(png_path, psize, "%s/%s-%s.png", o->out_dir, o->mode, stamp);
  FILE *d = fopen(dat, "w"), *g = fopen(gp, "w");
  if (!d || !g) {
    if (d)
      fclose(d);
    if (g)
      fclose(g);
    png_path[0] = '\0';
    return -1;
  }
  int series = 0;
  fprintf(g, "set terminal pngcairo size 1000,560 noenhanced\n"
             "set output '%s'\nset key outside right\nset grid\n",
          png_path);
  if (!strcmp(o->mode, "sched")) {
    /* ns/msg against users, one line per worker count */
    fprintf(d, "users");
    for (int w = 0; w < o->n_workers_list; w++)
      fprintf(d, " \"%d workers\"", o->workers_list[w]);
    fprintf(d, "\n");
    for (int u = 0; u < o->n_users_list; u++) {
      fprintf(d, "%d", o->users_list[u]);
      for (int w = 0; w < o->n_workers_list; w++) {
        char phase[40];
        snprintf(phase, sizeof(phase), "w=%d u=%d", o->workers_list[w],
                 o->users_list[u]);
        bench_row_t *r = bench_row_find((bench_run_t *)med, "sched", phase);
        fprintf(d, " %g", r ? bench_row_get_extra(r, "ns_per_msg") : 0.0);
      }
      fprintf(d, "\n");
    }
    series = o->n_workers_list;
    fprintf(g, "set title 'kmq scheduler: ns per message (median)'\n"
               "set logscale x\nset xlabel 'users'\nset ylabel 'ns/msg'\n"
               "plot for [c=2:%d] '%s' using 1:c with linespoints lw 2 "
               "title columnheader(c)\n",
            series + 1, dat);
  } else {
    /* latency percentiles, one line per row */
    const char *pct[] = {"P50", "P99", "P99.9", "max"};
    const bench_row_t *rows[BENCH_MAX_ROWS];
    for (int i = 0; i < med->nrows; i++)
      if (med->rows[i].p99_us > 0)
        rows[series++] = &med->rows[i];
    fprintf(d, "pct");
    for (int s = 0; s < series; s++)
      fprintf(d, " \"%s %s\"", rows[s]->impl, rows[s]->phase);
    fprintf(d, "\n");
    for (int p = 0; p < 4; p++) {
      fprintf(d, "%s", pct[p]);
      for (int s = 0; s < series; s++) {
        double v = p == 0   ? rows[s]->p50_us
                   : p == 1 ? rows[s]->p99_us
                   : p == 2 ? rows[s]->p999_us
                            : rows[s]->max_us;
        fprintf(d, " %g", v > 1 ? v / 1000.0 : 0.001);
      }
      fprintf(d, "\n");
    }
    fprintf(g, "set title 'kmq-bench %s: latency percentiles (median of %d "
               "run%s)'\nset logscale y\nset ylabel 'ms'\n"
               "plot for [c=2:%d] '%s' using c:xtic(1) with linespoints lw 2 "
               "title columnheader(c)\n",
            o->mode, o->reps, o->reps > 1 ? "s" : "", series + 1, dat);
  }
  fclose(d);
  fclose(g);
  if (!series) {
    png_path[0] = '\0';
    return 0;
  }
  snprintf(cmd, sizeof(cmd), "gnuplot '%s' 2>&1", gp);
  int rc = system(cmd);
  if (rc) {
    /* pngcairo missing: fall back to the plain png terminal */
    snprintf(cmd, sizeof(cmd),
             "sed -i 's/^set terminal pngcairo/set terminal png/' '%s' && "
             "gnuplot '%s' 2>&1",
             gp, gp);
    rc = system(cmd);
  }
  if (rc) {
    bench_log("gnuplot failed (exit %d): no plot", rc);
    png_path[0] = '\0';
    return -1;
  }
  return 0;
}
