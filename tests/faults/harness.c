/* Fault-test harness: see harness.h (the private cluster is in cluster.c). */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kmq/admin.h"
#include "testutil.h"
#include "traffic.h"

#ifndef KF_CONSUMER
#error "KF_CONSUMER must be defined (tests/faults.cmake)"
#endif

int kf_env_int(const char *name, int def) {
  const char *s = getenv(name);
  return s && *s ? atoi(s) : def;
}

int kf_soak(void) { return kf_env_int("KMQ_SOAK", 0) != 0; }

int kf_stall_ms(void) { return kf_env_int("KF_STALL_MS", 30000); }

bool kf_want(const char *name) {
  const char *only = getenv("KF_ONLY");
  return !only || !*only || strstr(only, name) || strstr(name, only);
}

static void kf_nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static rd_kafka_t *kf_reader(const char *bootstrap, const char *group);

/* ---- configuration ---------------------------------------------------------- */

void kf_set(kmq_conf_t *c, const char *k, const char *v) {
  char errstr[512];
  ck_assert_msg(kmq_conf_set(c, k, v, errstr, sizeof(errstr)) == KMQ_OK,
                "%s=%s: %s", k, v, errstr);
}

kmq_conf_t *kf_conf(const char *bootstrap, const char *topic,
                    const char *group) {
  kmq_conf_t *c = kmq_conf_new();
  ck_assert_ptr_nonnull(c);
  kf_set(c, "bootstrap.servers", bootstrap);
  kf_set(c, "kmq.topic", topic);
  if (group)
    kf_set(c, "group.id", group);
  kf_set(c, "consumer.session.timeout.ms", "10000");
  kf_set(c, "consumer.heartbeat.interval.ms", "500");
  kf_set(c, "kmq.commit.interval.ms", "200");
  kf_set(c, "kmq.sched.workers", "4");
  return c;
}

void kf_topics(const char *bootstrap, const char *topic, int partitions,
               int rf, int min_isr) {
  char errstr[512], dlq[256], isr[16];
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  snprintf(isr, sizeof(isr), "%d", min_isr);
  const char *cfg[] = {"min.insync.replicas", isr, NULL};
  kmq_conf_t *c = kf_conf(bootstrap, topic, NULL);
  ck_assert_msg(kmq_admin_create_topic(c, topic, partitions, rf,
                                       min_isr > 0 ? cfg : NULL, 0, 60000,
                                       errstr, sizeof(errstr)) == KMQ_OK,
                "%s: %s", topic, errstr);
  ck_assert_msg(kmq_admin_create_topic(c, dlq, partitions, rf,
                                       min_isr > 0 ? cfg : NULL, 0, 60000,
                                       errstr, sizeof(errstr)) == KMQ_OK,
                "%s: %s", dlq, errstr);
  kmq_conf_destroy(c);
}

/* ---- traffic ---------------------------------------------------------------- */

static void kf_dr(const kmq_delivery_t *d, void *opaque) {
  kf_traffic_t *t = opaque;
  intptr_t k = (intptr_t)d->opaque - 1;
  int u = (int)(k / t->per_user), s = (int)(k % t->per_user);
  kf_prod_status_t st = KF_PROD_LOST;
  switch (d->status) {
  case KMQ_DELIVERY_DELIVERED:
    st = KF_PROD_DELIVERED;
    atomic_store(&t->delivered_mask[k], 1);
    atomic_fetch_add(&t->delivered, 1);
    break;
  case KMQ_DELIVERY_DLQ:
    st = KF_PROD_DLQ;
    atomic_fetch_add(&t->dlq, 1);
    break;
  case KMQ_DELIVERY_FALLBACK:
    st = KF_PROD_FALLBACK;
    atomic_fetch_add(&t->fallback, 1);
    break;
  case KMQ_DELIVERY_LOST:
    atomic_fetch_add(&t->lost, 1);
    break;
  }
  kf_verify_produced(t->v, u, s, st);
  if (t->log_fd >= 0) {
    static const char *names[] = {"delivered", "dlq", "fallback", "lost",
                                  "none"};
    kf_log_line(t->log_fd, "S %d %d %s %d %lld\n", u, s, names[st],
                (int)d->partition, (long long)d->offset);
  }
  atomic_fetch_add(&t->reports, 1);
}

/* The test's "durable store": counts what it was given. */
static kmq_err_t kf_fallback(const kmq_fallback_record_t *r, void *opaque) {
  kf_traffic_t *t = opaque;
  (void)r;
  atomic_fetch_add(&t->fallback_stored, 1);
  return KMQ_OK;
}

static void *kf_traffic_run(void *arg) {
  kf_traffic_t *t = arg;
  int64_t t0 = kt_now_ms();
  char buf[1024], user[16], id[48];
  for (int s = 0; s < t->per_user && !atomic_load(&t->stop); s++)
    for (int u = 0; u < t->users && !atomic_load(&t->stop); u++) {
      int n = kmq_traffic_envelope(u, s, buf, sizeof(buf));
      kmq_traffic_user(u, user, sizeof(user));
      snprintf(id, sizeof(id), "m-%d-%d", u, s);
      kmq_produce_msg_t m = {
          .key = user,
          .key_len = strlen(user),
          .value = buf,
          .value_len = (size_t)n,
          .msg_id = id,
          .opaque = (void *)(intptr_t)((intptr_t)u * t->per_user + s + 1)};
      /* Refused sends (queue full while a broker is down) are retried: the
       * user's next message must not overtake this one. */
      kmq_err_t err;
      while ((err = kmq_producer_send(t->p, &m, NULL)) != KMQ_OK &&
             !atomic_load(&t->stop)) {
        atomic_fetch_add(&t->send_errors, 1);
        kf_nap_ms(50);
      }
      if (err != KMQ_OK)
        return NULL;
      int64_t sent = atomic_fetch_add(&t->sent, 1) + 1;
      if (t->rate > 0) {
        /* Pacing, not synchronisation: keep the offered load steady. */
        int64_t due = t0 + sent * 1000 / t->rate;
        int64_t now = kt_now_ms();
        if (due > now)
          kf_nap_ms((int)(due - now));
      }
    }
  return NULL;
}

void kf_traffic_start(kf_traffic_t *t, const kmq_conf_t *conf, kf_verify_t *v,
                      int users, int per_user, int rate) {
  kf_traffic_start_log(t, conf, v, users, per_user, rate, NULL);
}

void kf_traffic_start_log(kf_traffic_t *t, const kmq_conf_t *conf,
                          kf_verify_t *v, int users, int per_user, int rate,
                          const char *log) {
  memset(t, 0, sizeof(*t));
  t->log_fd = -1;
  if (log) {
    t->log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_msg(t->log_fd >= 0, "cannot open %s", log);
  }
  t->v = v;
  t->users = users;
  t->per_user = per_user;
  t->rate = rate;
  for (int u = 0; u < users; u++)
    for (int s = 0; s < per_user; s++)
      kf_verify_produced(v, u, s, KF_PROD_NONE);
  t->delivered_mask = calloc((size_t)users * per_user, 1);
  ck_assert_ptr_nonnull(t->delivered_mask);
  char errstr[512];
  t->p = kmq_producer_new(conf, kf_dr, t, kf_fallback, t, errstr,
                          sizeof(errstr));
  ck_assert_msg(t->p, "%s", errstr);
  ck_assert_int_eq(pthread_create(&t->thread, NULL, kf_traffic_run, t), 0);
  t->started = 1;
}

void kf_traffic_release(kf_traffic_t *t) {
  free((void *)t->delivered_mask);
  t->delivered_mask = NULL;
}

int64_t kf_traffic_reports(kf_traffic_t *t) { return atomic_load(&t->reports); }

bool kf_traffic_finish(kf_traffic_t *t, int timeout_ms) {
  if (!t->started)
    return true;
  pthread_join(t->thread, NULL);
  kmq_err_t err = kmq_producer_flush(t->p, timeout_ms);
  kmq_producer_destroy(t->p);
  t->p = NULL;
  t->started = 0;
  if (t->log_fd >= 0)
    close(t->log_fd);
  t->log_fd = -1;
  return err == KMQ_OK && atomic_load(&t->reports) == atomic_load(&t->sent);
}

/* ---- reading back ----------------------------------------------------------- */

static rd_kafka_t *kf_reader(const char *bootstrap, const char *group) {
  char errstr[512], g[128];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  if (!group) {
    kt_unique_name(g, sizeof(g), "kf-reader");
    group = g;
  }
  rd_kafka_conf_set(rc, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "group.id", group, errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "enable.auto.commit", "false", errstr, sizeof(errstr));
  rd_kafka_conf_set(rc, "enable.partition.eof", "false", errstr,
                    sizeof(errstr));
  rd_kafka_conf_set(rc, "log_level", "3", errstr, sizeof(errstr));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

static int kf_partitions(rd_kafka_t *rk, const char *topic, int64_t deadline) {
  for (;;) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    rd_kafka_topic_destroy(rkt);
    int n = -1;
    if (!err && md->topic_cnt == 1 && !md->topics[0].err)
      n = md->topics[0].partition_cnt;
    if (md)
      rd_kafka_metadata_destroy(md);
    if (n > 0)
      return n;
    ck_assert_msg(kt_now_ms() < deadline, "no metadata for %s", topic);
    kf_nap_ms(200);
  }
}

int kf_read_all(const char *bootstrap, const char *topic,
                void (*cb)(const rd_kafka_message_t *m, void *opaque),
                void *opaque, int timeout_ms) {
  int64_t deadline = kt_now_ms() + timeout_ms;
  rd_kafka_t *rk = kf_reader(bootstrap, NULL);
  int np = kf_partitions(rk, topic, deadline);
  int64_t *high = calloc((size_t)np, sizeof(int64_t));
  int64_t *next = calloc((size_t)np, sizeof(int64_t));
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
  int open = 0;
  for (int p = 0; p < np; p++) {
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi,
                                                   5000)))
      ck_assert_msg(kt_now_ms() < deadline, "watermarks %s [%d]: %s", topic,
                    p, rd_kafka_err2str(err));
    high[p] = hi;
    next[p] = lo;
    if (lo < hi)
      open++;
    rd_kafka_topic_partition_list_add(l, topic, p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  ck_assert_int_eq(rd_kafka_assign(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  int seen = 0;
  while (open > 0 && kt_now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m)
      continue;
    if (!m->err && m->partition >= 0 && m->partition < np) {
      seen++;
      if (cb)
        cb(m, opaque);
      int p = m->partition;
      if (next[p] < high[p] && m->offset + 1 >= high[p])
        open--;
      next[p] = m->offset + 1;
    }
    rd_kafka_message_destroy(m);
  }
  ck_assert_msg(open == 0, "%s: %d partition(s) not read to their end", topic,
                open);
  free(high);
  free(next);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return seen;
}

typedef struct {
  kf_verify_t *v;
  void (*cb)(const rd_kafka_message_t *m, void *opaque);
  void *opaque;
} kf_dlq_ctx_t;

static void kf_on_dlq(const rd_kafka_message_t *m, void *opaque) {
  kf_dlq_ctx_t *d = opaque;
  json_t *j = json_loadb(m->payload, m->len, 0, NULL);
  ck_assert_msg(j, "a DLQ record is not JSON");
  const char *reason = json_string_value(json_object_get(j, "reason"));
  int u = -1, s = -1;
  const char *payload = json_string_value(json_object_get(j, "payload"));
  if (payload) {
    json_t *pj = json_loads(payload, 0, NULL);
    const char *id =
        pj ? json_string_value(json_object_get(pj, "message_id")) : NULL;
    if (!id || kmq_traffic_parse_id(id, strlen(id), &u, &s))
      u = s = -1;
    json_decref(pj);
  }
  if (d->v)
    kf_verify_dlq(d->v, u, s, reason ? reason : "(none)");
  json_decref(j);
  if (d->cb)
    d->cb(m, d->opaque);
}

int kf_read_dlq(const char *bootstrap, const char *dlq_topic, kf_verify_t *v,
                void (*cb)(const rd_kafka_message_t *m, void *opaque),
                void *opaque, int timeout_ms) {
  kf_dlq_ctx_t d = {v, cb, opaque};
  return kf_read_all(bootstrap, dlq_topic, kf_on_dlq, &d, timeout_ms);
}

static int kf_committed_rk(rd_kafka_t *rk, const char *topic, int64_t *out,
                           int n, int timeout_ms) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
  for (int p = 0; p < n; p++)
    rd_kafka_topic_partition_list_add(l, topic, p);
  rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, timeout_ms);
  for (int i = 0; !err && i < l->cnt; i++) {
    const rd_kafka_topic_partition_t *e = &l->elems[i];
    if (e->err)
      err = e->err;
    else
      out[e->partition] = e->offset >= 0 ? e->offset : -1;
  }
  rd_kafka_topic_partition_list_destroy(l);
  return err ? -1 : 0;
}

int kf_committed(const char *bootstrap, const char *group, const char *topic,
                 int64_t *out, int64_t *high, int n, int timeout_ms) {
  rd_kafka_t *rk = kf_reader(bootstrap, group);
  int rc = kf_committed_rk(rk, topic, out, n, timeout_ms);
  for (int p = 0; high && !rc && p < n; p++) {
    int64_t lo;
    if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &high[p],
                                         timeout_ms))
      rc = -1;
  }
  rd_kafka_destroy(rk);
  return rc;
}

static void *kf_observer_run(void *arg) {
  kf_observer_t *o = arg;
  rd_kafka_t *rk = kf_reader(o->bootstrap, o->group);
  int64_t *last = malloc(sizeof(int64_t) * (size_t)o->partitions);
  int64_t *cur = malloc(sizeof(int64_t) * (size_t)o->partitions);
  for (int p = 0; p < o->partitions; p++)
    last[p] = -1;
  while (!atomic_load(&o->stop)) {
    if (kf_committed_rk(rk, o->topic, cur, o->partitions, 2000) == 0) {
      /* The response arrived after the commits it reports: stamping it
       * with the time after the call can only make a redelivery look
       * legitimate, never the reverse. */
      int64_t t = kf_now_ns();
      for (int p = 0; p < o->partitions; p++)
        if (cur[p] > last[p]) {
          last[p] = cur[p];
          kf_verify_committed(o->v, p, cur[p], t);
          atomic_store(&o->seen[p], cur[p]);
        }
    }
    atomic_fetch_add(&o->polls, 1);
    kf_nap_ms(o->period_ms); /* sampling period */
  }
  free(last);
  free(cur);
  rd_kafka_destroy(rk);
  return NULL;
}

void kf_observer_start(kf_observer_t *o, const char *bootstrap,
                       const char *group, const char *topic, int partitions,
                       kf_verify_t *v) {
  memset(o, 0, sizeof(*o));
  snprintf(o->bootstrap, sizeof(o->bootstrap), "%s", bootstrap);
  snprintf(o->group, sizeof(o->group), "%s", group);
  snprintf(o->topic, sizeof(o->topic), "%s", topic);
  ck_assert_int_le(partitions, KF_MAX_PARTITIONS);
  o->partitions = partitions;
  o->period_ms = 100;
  o->v = v;
  for (int p = 0; p < KF_MAX_PARTITIONS; p++)
    atomic_init(&o->seen[p], -1);
  ck_assert_int_eq(pthread_create(&o->thread, NULL, kf_observer_run, o), 0);
}

void kf_observer_stop(kf_observer_t *o) {
  atomic_store(&o->stop, 1);
  pthread_join(o->thread, NULL);
}

/* ---- processes -------------------------------------------------------------- */

const char *kf_consumer_path(void) { return KF_CONSUMER; }

pid_t kf_spawn(const char *const *argv) {
  pid_t parent = getpid();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    /* Only async-signal-safe calls between fork and exec (threads). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* SIGTERM and SIGINT blocked across exec: the consumer unblocks them
     * once its handler is installed (fault_consumer.c), so a member told
     * to leave while it is still starting (a busy machine: a storm step
     * can end before a new member's exec does) leaves cleanly, not by
     * the signal's default action. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    if (getppid() != parent)
      _exit(126);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

int kf_stop_process(pid_t pid, int sig, int timeout_ms) {
  int st = 0;
  kill(pid, sig);
  int64_t deadline = kt_now_ms() + timeout_ms;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      return st;
    if (r < 0 && errno != EINTR)
      return -1;
    if (kt_now_ms() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    kf_nap_ms(10);
  }
}

int64_t kf_count_processed(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char line[512];
  int64_t n = 0;
  while (fgets(line, sizeof(line), f))
    n += line[0] == 'P';
  fclose(f);
  return n;
}

int64_t kf_count_processed_all(char logs[][512], int n) {
  int64_t t = 0;
  for (int i = 0; i < n; i++)
    t += kf_count_processed(logs[i]);
  return t;
}

int64_t kf_distinct_processed(char logs[][512], int n, int users, int per) {
  return kf_distinct_processed_of(logs, n, users, per, NULL);
}

int64_t kf_distinct_processed_of(char logs[][512], int n, int users, int per,
                                 _Atomic unsigned char *mask) {
  uint8_t *seen = calloc((size_t)users * (size_t)per, 1);
  ck_assert_ptr_nonnull(seen);
  int64_t d = 0;
  char line[512];
  for (int i = 0; i < n; i++) {
    FILE *f = fopen(logs[i], "r");
    if (!f)
      continue;
    while (fgets(line, sizeof(line), f)) {
      int u, s;
      if (line[0] != 'P' || sscanf(line + 1, "%d %d", &u, &s) != 2 || u < 0 ||
          u >= users || s < 0 || s >= per)
        continue;
      if (mask && !atomic_load(&mask[(size_t)u * per + s]))
        continue;
      if (!seen[(size_t)u * per + s]++)
        d++;
    }
    fclose(f);
  }
  free(seen);
  return d;
}

void kf_load_logs(kf_verify_t *v, char logs[][512], int n) {
  for (int i = 0; i < n; i++)
    kf_verify_load(v, logs[i], i + 1);
}

void kf_report_emit(const kf_report_t *r, const char *scenario,
                    int64_t elapsed_ms) {
  char title[256];
  snprintf(title, sizeof(title), "%s %.1fs", scenario, elapsed_ms / 1000.0);
  kf_report_print(r, title, stderr);
  const char *path = getenv("KMQ_FAULTS_REPORT");
  if (path && *path) {
    FILE *f = fopen(path, "a");
    if (f) {
      kf_report_print(r, title, f);
      fclose(f);
    }
  }
}

void kf_assert_clean(const kf_report_t *r) {
  ck_assert_msg(r->lost == 0, "lost %lld: %s", (long long)r->lost,
                r->first_problem);
  ck_assert_msg(r->reordered == 0, "reordered %lld: %s",
                (long long)r->reordered, r->first_problem);
  ck_assert_msg(r->dup_committed == 0, "processed again after commit %lld: %s",
                (long long)r->dup_committed, r->first_problem);
  ck_assert_msg(r->dup_in_topic == 0, "written twice %lld: %s",
                (long long)r->dup_in_topic, r->first_problem);
  kf_assert_no_overlap_no_stall(r);
}

void kf_assert_no_overlap_no_stall(const kf_report_t *r) {
  /* Both are measured, not merely absent: every processing has its
   * interval and every partition its end. */
  ck_assert_msg(r->spans == r->events,
                "%lld of %lld processing events have no end time",
                (long long)(r->events - r->spans), (long long)r->events);
  ck_assert_msg(r->ended_partitions > 0,
                "no partition end given to the checker (kf_verify_end)");
  ck_assert_msg(r->overlaps == 0,
                "%lld overlaps (one user on two members or workers at once, "
                "up to %.1f ms): %s",
                (long long)r->overlaps, r->max_overlap_ms, r->first_overlap);
  ck_assert_msg(r->stalled_partitions == 0,
                "%lld of %lld partitions not committed at their end within "
                "KF_STALL_MS=%d after the traffic stopped: %s",
                (long long)r->stalled_partitions,
                (long long)r->ended_partitions, kf_stall_ms(),
                r->first_stalled);
}
