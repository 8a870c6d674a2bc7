/* Consumer: the handle, the poll loop, close and stats (consumer_int.h). */
#include "kmq/consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/consumer_int.h"
#include "lib/rk_destroy.h"
#include "lib/redact.h"
#include "lib/util.h"

static void kmq__commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *offsets,
                           void *opaque) {
  (void)rk;
  kmq_consumer_t *c = opaque;
  kmq__committer_on_commit(&c->cm, c->parts, err, offsets);
}

static void kmq__error_cb(rd_kafka_t *rk, int err, const char *reason,
                          void *opaque) {
  kmq_consumer_t *c = opaque;
  KMQ__INC(c, consume_errors, 1);
  /* librdkafka may quote a secret back in its reasons: redacted first. */
  char r[512];
  snprintf(r, sizeof(r), "%s", reason ? reason : "");
  kmq__rdk_conf_redact(rd_kafka_conf(rk), r, sizeof(r));
  kmq__log_to(&c->log, err == RD_KAFKA_RESP_ERR__FATAL ? "ERROR" : "WARN",
              "consumer", "%s: %s",
              rd_kafka_err2name((rd_kafka_resp_err_t)err), r);
  if (c->hooks.on_error)
    c->hooks.on_error((rd_kafka_resp_err_t)err, r, c->hooks.opaque);
}

/* "Group \"g\" changed join state A -> B (state up)": is B a state in
 * which a commit would be queued behind a JoinGroup or sent with a stale
 * generation? librdkafka 2.0.2 logs it on its main thread at the
 * transition itself, before it sends the JoinGroup that follows. Only the
 * known rejoin states hold commits: an unknown one (a librdkafka that
 * words it differently) never does, so commits can never be held for
 * good by a parse. */
static void kmq__note_join_state(kmq_consumer_t *c, const char *buf) {
  /* The last arrow: the group id, quoted before it, may hold anything. */
  const char *arrow = NULL;
  for (const char *a = strstr(buf, " -> "); a; a = strstr(a + 1, " -> "))
    arrow = a;
  if (!arrow)
    return;
  static const char *const rejoining[] = {"init ", "wait-join ",
                                          "wait-metadata ", "wait-sync "};
  int steady = 1;
  for (size_t i = 0; i < sizeof(rejoining) / sizeof(rejoining[0]); i++)
    if (!strncmp(arrow + 4, rejoining[i], strlen(rejoining[i])))
      steady = 0;
  int call = !strncmp(arrow + 4, "wait-assign-call ", 17)     ? KMQ__CALL_ASSIGN
             : !strncmp(arrow + 4, "wait-unassign-call ", 19) ? KMQ__CALL_UNASSIGN
                                                               : 0;
  atomic_store_explicit(&c->join_call, call, memory_order_release);
  atomic_store_explicit(&c->join_steady, steady, memory_order_release);
}

/* librdkafka's log lines, from any of its threads, to the conf's hook,
 * redacted; the debug lines kmq asked for only itself are dropped. */
static void kmq__rdk_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                            const char *buf) {
  kmq_consumer_t *c = rd_kafka_opaque(rk);
  if (level == 7 && !strcmp(fac, "CGRPJOINSTATE"))
    kmq__note_join_state(c, buf);
  if (!c->user_debug && level > c->user_log_level)
    return;
  /* Entered before muted is read, both seq_cst: destroy, which mutes
   * first and then waits for log_entered to drop, sees this call or this
   * call sees the mute. */
  atomic_fetch_add(&c->log_entered, 1);
  if (!atomic_load(&c->log_muted)) {
    if (c->log.cb)
      kmq__log_rdk_rk(&c->log, rk, level, fac, buf);
    else
      kmq__rdk_log(rk, level, fac, buf); /* librdkafka's stderr format */
  }
  atomic_fetch_sub(&c->log_entered, 1);
}

/* Turns on librdkafka's cgrp debug context (for kmq__note_join_state),
 * keeping what the application asked for: its own debug contexts, then
 * all debug lines reach its log hook; none, then only lines up to its
 * log_level (librdkafka raises log_level to 7 whenever debug is set). */
static int kmq__debug_cgrp(kmq_consumer_t *c, rd_kafka_conf_t *rc,
                           char *errstr, size_t errstr_size) {
  char v[512];
  size_t vs = sizeof(v);
  c->user_log_level = 6;
  if (rd_kafka_conf_get(rc, "log_level", v, &vs) == RD_KAFKA_CONF_OK)
    c->user_log_level = atoi(v);
  vs = sizeof(v);
  if (rd_kafka_conf_get(rc, "debug", v, &vs) != RD_KAFKA_CONF_OK)
    v[0] = '\0';
  c->user_debug = v[0] != '\0';
  if (strstr(v, "cgrp") || strstr(v, "all"))
    return 0;
  char d[600];
  snprintf(d, sizeof(d), "%s%scgrp", v, v[0] ? "," : "");
  if (rd_kafka_conf_set(rc, "debug", d, errstr, errstr_size) !=
      RD_KAFKA_CONF_OK)
    return -1;
  return 0;
}

/* Served by rd_kafka_consumer_poll on the poll thread; returning 0 lets
 * librdkafka free the JSON. */
static int kmq__stats_cb(rd_kafka_t *rk, char *json, size_t len,
                         void *opaque) {
  (void)rk;
  kmq_consumer_t *c = opaque;
  kmq__rdstats_update(&c->rdstats, json, len);
  return 0;
}

kmq__rdstats_t *kmq__consumer_rdstats(kmq_consumer_t *c) {
  return &c->rdstats;
}

kmq_consumer_t *kmq_consumer_new(const kmq_conf_t *conf,
                                 const kmq_consumer_hooks_t *hooks,
                                 char *errstr, size_t errstr_size) {
  /* Its groups written by different threads start cache lines of their
   * own (consumer_int.h). */
  kmq_consumer_t *c = kmq__zalloc_lines(sizeof(*c));
  if (!c) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  const char *fetch_queue = kmq_conf_get(conf, "kmq.fetch.queue");
  if (!strcmp(fetch_queue, "partition")) {
    c->per_part = 1;
  } else if (strcmp(fetch_queue, "shared")) {
    snprintf(errstr, errstr_size,
             "kmq.fetch.queue: \"%s\" is neither shared nor partition",
             fetch_queue);
    free(c);
    return NULL;
  }
  c->wake[0] = c->wake[1] = -1;
  if (hooks)
    c->hooks = *hooks;
  c->log = kmq__conf_hooks(conf)->log;
  kmq__rdstats_init(&c->rdstats);
  c->window = (size_t)kmq_conf_get_int(conf, "kmq.gate.window");
  c->revoke_ms = kmq_conf_get_int(conf, "kmq.revoke.timeout.ms");
  c->close_ms = kmq_conf_get_int(conf, "kmq.close.timeout.ms");
  c->commit_timeout_ms = kmq_conf_get_int(conf, "kmq.commit.timeout.ms");
  c->poll_batch = (int)kmq_conf_get_int(conf, "kmq.poll.batch");
  c->nslots = (uint32_t)kmq_conf_get_int(conf, "kmq.max.inflight");

  if (kmq__slab_init(c, c->hooks.record_size, errstr, errstr_size))
    goto fail_slots;
  if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC)) {
    snprintf(errstr, errstr_size, "wake-up pipe: %s", strerror(errno));
    goto fail_slots;
  }

  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(conf, KMQ_CLIENT_CONSUMER, errstr, errstr_size);
  if (!rc)
    goto fail_slots;
  char v[64];
  size_t vs = sizeof(v);
  if (rd_kafka_conf_get(rc, "group.id", v, &vs) != RD_KAFKA_CONF_OK || !*v) {
    snprintf(errstr, errstr_size, "group.id is required");
    rd_kafka_conf_destroy(rc);
    goto fail_slots;
  }
  vs = sizeof(v);
  c->static_member = rd_kafka_conf_get(rc, "group.instance.id", v, &vs) ==
                         RD_KAFKA_CONF_OK && v[0];
  vs = sizeof(v);
  rd_kafka_conf_get(rc, "partition.assignment.strategy", v, &vs);
  c->cooperative = strstr(v, "cooperative") != NULL;
  vs = sizeof(v);
  c->revoke_max_ms = 270000; /* 90% of librdkafka's default 300000 */
  if (rd_kafka_conf_get(rc, "max.poll.interval.ms", v, &vs) ==
      RD_KAFKA_CONF_OK)
    c->revoke_max_ms = strtoll(v, NULL, 10) / 10 * 9;
  rd_kafka_conf_set_opaque(rc, c);
  rd_kafka_conf_set_rebalance_cb(rc, kmq__rebalance_cb);
  rd_kafka_conf_set_offset_commit_cb(rc, kmq__commit_cb);
  rd_kafka_conf_set_error_cb(rc, kmq__error_cb);
  rd_kafka_conf_set_stats_cb(rc, kmq__stats_cb);
  atomic_init(&c->join_steady, 1);
  atomic_init(&c->join_call, 0);
  atomic_init(&c->log_muted, 0);
  atomic_init(&c->log_entered, 0);
  if (kmq__debug_cgrp(c, rc, errstr, errstr_size)) {
    rd_kafka_conf_destroy(rc);
    goto fail_slots;
  }
  rd_kafka_conf_set_log_cb(rc, kmq__rdk_log_cb);
  /* The join state must be seen when librdkafka changes it, not when the
   * application serves a log queue (kmq never does). */
  if (rd_kafka_conf_set(rc, "log.queue", "false", errstr, errstr_size) !=
      RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(rc);
    goto fail_slots;
  }
  c->rk = kmq__rdk_new(RD_KAFKA_CONSUMER, rc, errstr, errstr_size);
  if (!c->rk) {
    rd_kafka_conf_destroy(rc);
    goto fail_slots;
  }
  rd_kafka_poll_set_consumer(c->rk);
  c->cq = rd_kafka_queue_get_consumer(c->rk);
  rd_kafka_queue_io_event_enable(c->cq, c->wake[1], "1", 1);
  c->fq = rd_kafka_queue_new(c->rk);
  rd_kafka_queue_io_event_enable(c->fq, c->wake[1], "1", 1);
  if (kmq__committer_init(
          &c->cm, c->rk, kmq_conf_get_int(conf, "kmq.commit.interval.ms"),
          kmq_conf_get_int(conf, "kmq.commit.batch"), c->commit_timeout_ms,
          (size_t)kmq_conf_get_int(conf, "kmq.commit.metadata.max.bytes"))) {
    snprintf(errstr, errstr_size, "out of memory for commit metadata");
    rd_kafka_queue_io_event_enable(c->fq, -1, NULL, 0);
    rd_kafka_queue_destroy(c->fq);
    rd_kafka_queue_io_event_enable(c->cq, -1, NULL, 0);
    rd_kafka_queue_destroy(c->cq);
    rd_kafka_destroy(c->rk);
    goto fail_slots;
  }
  c->cm.log = &c->log;
  c->cm.steady = &c->join_steady;
  return c;

fail_slots:
  for (int i = 0; i < 2; i++)
    if (c->wake[i] >= 0)
      close(c->wake[i]);
  kmq__rdstats_free(&c->rdstats);
  kmq__slab_free(c);
  free(c);
  return NULL;
}

kmq_err_t kmq_consumer_subscribe(kmq_consumer_t *c, const char *const *topics,
                                 int n) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
  for (int i = 0; i < n; i++)
    rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (err) {
    kmq__log_to(&c->log, "ERROR", "consumer", "subscribe: %s", rd_kafka_err2str(err));
    return KMQ_ERR_KAFKA;
  }
  c->subscribed = 1;
  return KMQ_OK;
}

/* Serves the consumer queue without waiting: rebalance callbacks, errors,
 * statistics. A message there belongs to a partition whose queue could not
 * be split off (kmq__part_split): dispatched from here. @locality poll
 * thread */
static int kmq__serve_events(kmq_consumer_t *c) {
  int taken = 0;
  rd_kafka_message_t *m;
  while (taken < c->poll_batch && (m = rd_kafka_consumer_poll(c->rk, 0))) {
    if (m->err) {
      kmq__consume_error(c, m);
      continue;
    }
    const char *topic = rd_kafka_topic_name(m->rkt);
    kmq__part_t *p = kmq__part_find(c, topic, m->partition);
    if (!p && !(p = kmq__part_add(c, topic, m->partition))) {
      rd_kafka_message_destroy(m);
      continue;
    }
    if (p->revoking) {
      /* The next owner's, as in kmq__read_parts: nothing is offered once
       * kmq__revoke_slots has flagged the partition. */
      rd_kafka_message_destroy(m);
      continue;
    }
    kmq__dispatch(c, p, m);
    taken++;
  }
  return taken;
}

/* Sleeps until one of librdkafka's queues turns non-empty (their io
 * events write to c->wake) or ms pass. @locality poll thread */
static void kmq__wait(kmq_consumer_t *c, int ms) {
  struct pollfd pfd = {c->wake[0], POLLIN, 0};
  if (poll(&pfd, 1, ms) > 0) {
    char b[64];
    while (read(c->wake[0], b, sizeof(b)) > 0)
      ;
  }
}

static int kmq__poll(kmq_consumer_t *c, int timeout_ms) {
  if (c->closed)
    return KMQ_ERR_STATE;
  int64_t before = atomic_load_explicit(&c->st.dispatched,
                                        memory_order_relaxed);
  for (int round = 0; round < 2; round++) {
    kmq__drain(c);
    kmq__apply_stuck(c);
    int taken = kmq__retry_held(c);
    taken += kmq__serve_events(c) + kmq__read_parts(c);
    if (taken || round || timeout_ms == 0)
      break;
    /* Nothing to take: wait for librdkafka, or at most 1 ms when acks
     * (which do not wake this thread) are what messages wait for, so that
     * the workers do not sit idle for the caller's whole timeout. The
     * queues were all served just now, so their next message wakes us. */
    kmq__wait(c, c->starved ? 1 : timeout_ms);
  }
  kmq__drain(c);
  kmq__committer_maybe_commit(&c->cm, c->parts, kmq__mono_ms());
  return (int)(atomic_load_explicit(&c->st.dispatched, memory_order_relaxed) -
               before);
}

/* The plain style over the ack path: the record is taken like any other
 * and acked as soon as the handler returns, so both styles share one
 * budget and one completion path (kmq_ack, then kmq__drain on this
 * thread). @locality poll thread */
static kmq_err_t kmq__plain_handler(const rd_kafka_message_t *m,
                                    kmq_ack_t ack, void *opaque) {
  kmq_err_t err = ack.c->h(m, opaque);
  if (err == KMQ_ERR_BACKPRESSURE)
    return err; /* not taken: kmq__offer voids the ack */
  kmq_ack(ack, err == KMQ_OK);
  return KMQ_OK;
}

int kmq_consumer_poll_and_dispatch(kmq_consumer_t *c, kmq_handler_cb *handler,
                                   void *opaque, int timeout_ms) {
  if (!c || !handler)
    return KMQ_ERR_INVALID_ARG;
  c->h = handler;
  c->ah = kmq__plain_handler;
  c->hopaque = opaque;
  return kmq__poll(c, timeout_ms);
}

int kmq_consumer_poll_and_dispatch_with_ack(kmq_consumer_t *c,
                                            kmq_ack_handler_cb *handler,
                                            void *opaque, int timeout_ms) {
  if (!c || !handler)
    return KMQ_ERR_INVALID_ARG;
  c->h = NULL;
  c->ah = handler;
  c->hopaque = opaque;
  return kmq__poll(c, timeout_ms);
}

kmq_err_t kmq_consumer_commit_sync(kmq_consumer_t *c) {
  kmq__drain(c);
  return kmq__committer_commit_sync(&c->cm, c->parts, 0);
}

/* One short poll while closing: keeps serving the group (heartbeats are
 * librdkafka's, but rebalance callbacks need this thread); a message it
 * returns is held, not dispatched, and stays uncommitted (redelivered to
 * the next owner). @locality poll thread */
static void kmq__close_serve(kmq_consumer_t *c) {
  rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 1);
  if (!m)
    return;
  if (!m->err) {
    kmq__part_t *p =
        kmq__part_find(c, rd_kafka_topic_name(m->rkt), m->partition);
    if (p) {
      kmq__hold(c, p, m);
      return;
    }
  }
  rd_kafka_message_destroy(m);
}

kmq_err_t kmq_consumer_close(kmq_consumer_t *c, int timeout_ms) {
  if (c->closed)
    return KMQ_OK;
  c->closed = 1;
  kmq_err_t ret = KMQ_OK;
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  c->close_deadline = deadline;
  /* librdkafka < 2.3 aborts in rd_kafka_sticky_assignor_state_destroy() when
   * a cooperative member that has joined the group is closed before its
   * first assignment (#4312, fixed by #4381): let that assignment arrive
   * first, within the same deadline. No partitions yet, so nothing to
   * dispatch. */
  while (c->cooperative && c->subscribed &&
         atomic_load_explicit(&c->st.rebalances, memory_order_relaxed) == 0 &&
         kmq__mono_ms() < deadline) {
    char *id = rd_kafka_memberid(c->rk);
    int joined = id && *id;
    if (id)
      rd_kafka_mem_free(c->rk, id);
    if (!joined)
      break; /* not in the group: no assignor state to destroy */
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 10);
    if (m)
      rd_kafka_message_destroy(m);
  }
  /* Messages not started yet will not start (they are redelivered to the
   * next owner); the group is left only once those running have finished,
   * or at the deadline. */
  for (kmq__part_t *p = c->parts; p; p = p->next)
    kmq__revoke_slots(c, p);
  for (;;) {
    kmq__drain(c);
    int64_t busy = kmq__revoking_busy(c);
    if (!busy)
      break;
    if (kmq__mono_ms() >= deadline) {
      kmq__log_to(&c->log, "ERROR", "consumer", "close: %lld messages still running "
               "after %d ms: leaving the group anyway; their outcome is "
               "ignored and they are redelivered to the next owner, which "
               "may start the same users while these still run",
               (long long)busy, timeout_ms);
      ret = KMQ_ERR_TIMED_OUT;
      break;
    }
    kmq__close_serve(c);
  }
  /* After a fatal error (a fenced static member, for one) nothing can be
   * committed (what finished since the last commit is redelivered to the
   * next owner) and the group is not left cleanly. kmq_consumer_destroy
   * then has librdkafka terminate the group without a consumer close,
   * which does not end while the group waits for an assign call of ours
   * (lib/rk_destroy.h). So the group is served until it waits for nothing
   * of ours: nothing in the consumer queue, no assign call pending and,
   * for a dynamic member, no rejoin under way (its assignment would come
   * after; librdkafka keeps the fatal error to the application then). A
   * static member's fatal error is librdkafka's own: no assignment can
   * follow it, and a fenced member stays in `init` for good, so its
   * rejoin is not waited for. Within the close deadline and at most
   * kmq.commit.timeout.ms, like the rejoin wait below (an assign
   * callback served here can take up to kmq.commit.timeout.ms more: its
   * committed-offset fetch). For a static cooperative member librdkafka
   * turns the assign call itself into an unassign that leaves the wait as
   * it is (call_ignored): serving longer cannot help, and destroy's bound
   * takes over. */
  char fatal[256];
  if (rd_kafka_fatal_error(c->rk, fatal, sizeof(fatal))) {
    kmq__log_to(&c->log, "WARN", "consumer",
                "close: after the fatal error \"%s\" the group cannot be "
                "left cleanly: no final commit, no leave", fatal);
    int64_t until = kmq__mono_ms() + c->commit_timeout_ms;
    if (until > deadline)
      until = deadline;
    for (;;) {
      int queued = rd_kafka_queue_length(c->cq) > 0;
      int rejoining =
          !c->static_member &&
          !atomic_load_explicit(&c->join_steady, memory_order_acquire);
      int call = atomic_load_explicit(&c->join_call, memory_order_acquire);
      if (!queued && !rejoining && !call)
        break;
      if (!queued && call && c->call_ignored)
        break; /* our call was made and did not end the wait */
      if (kmq__mono_ms() >= until)
        break;
      kmq__close_serve(c);
    }
    return ret ? ret : KMQ_ERR_FATAL;
  }
  /* A commit sent while the member rejoins is answered ILLEGAL_GENERATION
   * (committer.h): the finished work would be done again by the next
   * owner. Let the rejoin finish first, within the same deadline and at
   * most kmq.commit.timeout.ms (a member that cannot reach its coordinator
   * does not rejoin at all). */
  int64_t rejoin_deadline = kmq__mono_ms() + c->commit_timeout_ms;
  if (rejoin_deadline > deadline)
    rejoin_deadline = deadline;
  while (!atomic_load_explicit(&c->join_steady, memory_order_acquire) &&
         kmq__mono_ms() < rejoin_deadline) {
    kmq__drain(c);
    kmq__close_serve(c);
  }
  /* Still rejoining: the commit would wait behind the JoinGroup (up to the
   * group's rebalance timeout) and then be refused; what it carried is
   * done again by the next owner either way, so close does not wait. */
  if (atomic_load_explicit(&c->join_steady, memory_order_acquire))
    kmq__committer_commit_sync(&c->cm, c->parts, 0);
  else
    kmq__log_to(&c->log, "WARN", "consumer",
                "close: the member was still rejoining the group: final "
                "commit skipped (it would be refused); finished work since "
                "the last commit is redelivered to the next owner");
  /* Serves the final revoke through the rebalance callback (#4528: keep
   * serving it during close). */
  rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
  if (err) {
    kmq__log_to(&c->log, "WARN", "consumer", "close: %s", rd_kafka_err2str(err));
    if (!ret)
      ret = KMQ_ERR_KAFKA;
  }
  return ret;
}

/* What librdkafka's threads may use until its handle is gone: the
 * consumer itself (the log callback's opaque) and the pipe its queues'
 * io events write to. */
static void kmq__consumer_release(void *arg) {
  kmq_consumer_t *c = arg;
  close(c->wake[0]);
  close(c->wake[1]);
  free(c);
}

/* The teardown did not end within its bound (kmq__rk_destroy_within, on
 * destroy's thread, c still its own): say so, then mute librdkafka's log
 * lines and wait out those already inside the hook (the log callback says
 * why this order), so that none reaches it after destroy returns. Short:
 * a log hook returns, and one that does not keeps this thread no longer
 * than it would have kept librdkafka's. */
static void kmq__consumer_abandon(void *arg) {
  kmq_consumer_t *c = arg;
  kmq__log_to(&c->log, "ERROR", "consumer",
              "destroy: %s: the librdkafka handle is abandoned (its threads, "
              "memory and two file descriptors stay until it ends, if ever), "
              "no more of its log lines are passed on%s",
              c->teardown_stuck
                  ? "after the fatal error librdkafka turned the assign call "
                    "into an unassign and cannot terminate the group "
                    "(librdkafka 2.0.2; fixed in 2.4.0)"
                  : "librdkafka's teardown did not end within its bound",
              c->teardown_stuck ? "; its main thread now spins on one CPU "
                                  "for good: restart the process"
                                : "");
  atomic_store(&c->log_muted, 1);
  while (atomic_load(&c->log_entered) != 0) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

void kmq_consumer_destroy(kmq_consumer_t *c) {
  if (!c)
    return;
  kmq_consumer_close(c, (int)c->close_ms);
  kmq__drain(c);
  while (c->parts)
    kmq__part_drop(c, c->parts);
  kmq__retire_queues(c, 0);
  free(c->retired);
  /* Acks that never came: their messages are still ours to free. */
  for (uint32_t i = 0; i < c->nslots; i++)
    if (c->slots[i].m)
      rd_kafka_message_destroy(c->slots[i].m);
  /* What it still holds is freed with it. */
  rd_kafka_queue_io_event_enable(c->fq, -1, NULL, 0);
  rd_kafka_queue_destroy(c->fq);
  rd_kafka_queue_io_event_enable(c->cq, -1, NULL, 0);
  rd_kafka_queue_destroy(c->cq);
  /* librdkafka's threads use none of these. */
  kmq__committer_free(&c->cm);
  kmq__rdstats_free(&c->rdstats);
  kmq__slab_free(c);
  /* After a fatal error librdkafka's own consumer close returns the error
   * without terminating the group, and its main thread would then wait
   * for the group forever: NO_CONSUMER_CLOSE terminates it without a
   * leave (close could not leave it cleanly either). */
  int fatal = rd_kafka_fatal_error(c->rk, NULL, 0) != 0;
  /* The teardown gets what is left of close's deadline, at least
   * KMQ__TEARDOWN_MIN_MS (joining librdkafka's threads after a close that
   * used its whole deadline). When it is known never to end (rk_destroy.h:
   * a static cooperative member whose assign call librdkafka ignored after
   * its fatal error), no wait. */
  int64_t left = c->close_deadline - kmq__mono_ms();
  if (left < KMQ__TEARDOWN_MIN_MS)
    left = KMQ__TEARDOWN_MIN_MS;
  c->teardown_stuck =
      fatal && c->static_member && c->cooperative && c->call_ignored &&
      atomic_load_explicit(&c->join_call, memory_order_acquire) ==
          KMQ__CALL_ASSIGN;
  if (c->teardown_stuck)
    left = 0;
  if (!kmq__rk_destroy_within(c->rk,
                              fatal ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0,
                              (int)left, kmq__consumer_abandon,
                              kmq__consumer_release, c))
    kmq__consumer_release(c);
}

void kmq_consumer_stats(const kmq_consumer_t *c, kmq_consumer_stats_t *out) {
#define KMQ__LD(f) atomic_load_explicit(&c->st.f, memory_order_relaxed)
  out->consumed = KMQ__LD(consumed);
  out->dispatched = KMQ__LD(dispatched);
  out->finished = KMQ__LD(finished);
  out->unfinished = KMQ__LD(unfinished);
  out->backpressured = KMQ__LD(backpressured);
  out->assigned = KMQ__LD(assigned);
  out->revoked = KMQ__LD(revoked);
  out->lost = KMQ__LD(lost);
  out->rebalances = KMQ__LD(rebalances);
  out->in_flight = KMQ__LD(in_flight);
  out->paused = KMQ__LD(paused);
  out->consume_errors = KMQ__LD(consume_errors);
  out->refetched = KMQ__LD(refetched);
  out->slow_revokes = KMQ__LD(slow_revokes);
  out->abandoned = KMQ__LD(abandoned);
  out->restored = KMQ__LD(restored);
  out->skipped_done = KMQ__LD(skipped_done);
#undef KMQ__LD
#define KMQ__LD(f) atomic_load_explicit(&c->cm.f, memory_order_relaxed)
  out->commits = KMQ__LD(commits);
  out->commit_errors = KMQ__LD(commit_errors);
  out->offsets_committed = KMQ__LD(offsets_committed);
  out->meta_truncated = KMQ__LD(meta_truncated);
  out->commits_held = KMQ__LD(commits_held);
#undef KMQ__LD
}

void kmq_consumer_partitions(kmq_consumer_t *c,
                             void (*cb)(const kmq_partition_info_t *, void *),
                             void *opaque) {
  for (kmq__part_t *p = c->parts; p; p = p->next) {
    kmq_partition_info_t i = {
        p->topic,
        p->partition,
        p->gate ? kmq_gate_committable(p->gate) : -1,
        p->committed,
        p->gate ? kmq_gate_backlog(p->gate) : 0,
        p->gate ? kmq_gate_in_flight(p->gate) : 0,
        p->paused,
        p->gate ? kmq_gate_high(p->gate) : -1};
    cb(&i, opaque);
  }
}

rd_kafka_t *kmq_consumer_rk(kmq_consumer_t *c) { return c->rk; }

