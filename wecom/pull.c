/* The sync_msg puller: sync requests from Kafka -> kf/sync_msg pages ->
 * kmq envelopes keyed by external_userid -> cursor -> commit. The contract
 * is in include/kmq/wecom_api.h above kmq_wecom_puller_new(). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/admin.h"
#include "kmq/message.h"
#include "lib/log.h"
#include "lib/util.h"
#include "wecom/pull_int.h"

#define KMQ__CURSOR_LOAD_MS 30000

struct kmq_wecom_puller_s {
  kmq_wecom_puller_conf_t conf; /* strings point to the copies below */
  char *sync_topic, *cursor_topic, *out_topic;
  rd_kafka_t *consumer, *producer, *reader;
  json_t *cursors;    /* open_kfid -> what the cursor topic says */
  int cursors_stale;  /* partitions were assigned since the last load */
  kmq__batch_t batch; /* what the current page waits for */
  /* The request that failed last and how often in a row. */
  int32_t fail_partition;
  int64_t fail_offset;
  int fails;
  /* Written by the puller's thread, read by kmq_wecom_puller_stats() on
   * any: relaxed, each counter stands alone. */
  atomic_llong requests, bad_requests, requests_dropped, followups, pages,
      empty_pages, pulled, produced, unroutable, cursor_writes, errors,
      sync_token_dropped, duplicates_suspected, cursor_loads;
  atomic_int assigned;
  kmq__log_sink_t log; /* the kafka conf's log hook */
};

#define KMQ__ADD(p, f, n)                                                      \
  atomic_fetch_add_explicit(&(p)->f, n, memory_order_relaxed)

void kmq_wecom_puller_stats(const kmq_wecom_puller_t *cp,
                            kmq_wecom_puller_stats_t *o) {
  kmq_wecom_puller_t *p = (kmq_wecom_puller_t *)cp; /* atomics not const */
#define KMQ__LD(f) o->f = atomic_load_explicit(&p->f, memory_order_relaxed)
  KMQ__LD(requests);
  KMQ__LD(bad_requests);
  KMQ__LD(requests_dropped);
  KMQ__LD(followups);
  KMQ__LD(pages);
  KMQ__LD(empty_pages);
  KMQ__LD(pulled);
  KMQ__LD(produced);
  KMQ__LD(unroutable);
  KMQ__LD(cursor_writes);
  KMQ__LD(errors);
  KMQ__LD(sync_token_dropped);
  KMQ__LD(duplicates_suspected);
  KMQ__LD(cursor_loads);
  KMQ__LD(assigned);
#undef KMQ__LD
}

/* ---- rebalance ---------------------------------------------------------- */

/* Runs inside rd_kafka_consumer_poll, i.e. between two requests: no page
 * is ever in flight here, so a revoke has nothing to finish. An assignment
 * marks the cursors stale: the previous owner may have moved them.
 * @locality puller's thread */
static void kmq__rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *parts,
                           void *opaque) {
  kmq_wecom_puller_t *p = opaque;
  int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    p->cursors_stale = 1;
    if (coop)
      rd_kafka_error_destroy(rd_kafka_incremental_assign(rk, parts));
    else
      rd_kafka_assign(rk, parts);
    KMQ__ADD(p, assigned, parts->cnt);
  } else {
    if (coop)
      rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
    else
      rd_kafka_assign(rk, NULL);
    if (coop)
      KMQ__ADD(p, assigned, -parts->cnt);
    else
      atomic_store_explicit(&p->assigned, 0, memory_order_relaxed);
  }
}

/* ---- one message of a page ---------------------------------------------- */

/* Produces one msg_list item as kmq's envelope into the current batch.
 * Returns 1 when produced, 0 when unroutable (counted and logged), -1 with
 * errstr when librdkafka refused it. */
static int kmq__produce_item(kmq_wecom_puller_t *p, json_t *item,
                             char *errstr, size_t errstr_size) {
  const char *id = json_string_value(json_object_get(item, "msgid"));
  const char *type = json_string_value(json_object_get(item, "msgtype"));
  const char *user =
      json_string_value(json_object_get(item, "external_userid"));
  if (!user || !*user) /* events carry it inside "event" */
    user = json_string_value(json_object_get(
        json_object_get(item, "event"), "external_userid"));
  json_int_t t = json_integer_value(json_object_get(item, "send_time"));
  char why[256] = "no external_userid";
  char *env = NULL;
  size_t len = 0;
  if (user && *user && id && *id && type && *type) {
    kmq_msg_type_t mt = kmq_msg_type_from_str(type, strlen(type));
    kmq_chat_msg_t m;
    kmq_chat_msg_init(&m, mt);
    m.msg_type = kmq_msg_str(type);
    m.message_id = kmq_msg_str(id);
    m.external_user_id = kmq_msg_str(user);
    m.open_kfid =
        kmq_msg_str(json_string_value(json_object_get(item, "open_kfid")));
    m.timestamp = (int64_t)t * 1000;
    m.content = item; /* written as WeCom sent it */
    if (kmq_msg_encode(&m, &env, &len, why, sizeof(why)))
      env = NULL;
  } else if (user && *user) {
    snprintf(why, sizeof(why), "no msgid or msgtype");
  }
  if (!env) {
    KMQ__ADD(p, unroutable, 1);
    kmq__log_to(&p->log, "WARN", "wecom-puller", "message %s not produced: %s",
             id ? id : "(no msgid)", why);
    return 0;
  }
  rd_kafka_headers_t *h = rd_kafka_headers_new(3);
  rd_kafka_header_add(h, "msg_type", -1, type, -1);
  rd_kafka_header_add(h, "msg_id", -1, id, -1);
  rd_kafka_header_add(h, "user_id", -1, user, -1);
  p->batch.pending++;
  rd_kafka_resp_err_t e = rd_kafka_producev(
      p->producer, RD_KAFKA_V_TOPIC(p->out_topic),
      RD_KAFKA_V_KEY(user, strlen(user)), RD_KAFKA_V_VALUE(env, len),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_HEADERS(h),
      RD_KAFKA_V_OPAQUE(&p->batch), RD_KAFKA_V_END);
  if (e) {
    p->batch.pending--;
    rd_kafka_headers_destroy(h);
    free(env);
    snprintf(errstr, errstr_size, "produce %s: %s", id, rd_kafka_err2str(e));
    return -1;
  }
  return 1;
}

/* ---- one request -------------------------------------------------------- */

/* Pulls open_kfid from its stored cursor to has_more = 0 (or max_pages),
 * storing the cursor after each delivered page. On error the cursor stays
 * at the last delivered page. */
static kmq_wecom_api_err_t kmq__pull(kmq_wecom_puller_t *p,
                                     const rd_kafka_message_t *rq,
                                     const char *kfid, const char *token,
                                     int *more, char *errstr,
                                     size_t errstr_size) {
  kmq_wecom_api_err_t err = KMQ_WECOM_API_OK;
  kmq__cursor_t st;
  kmq__cursor_get(p->cursors, kfid, &st);
  /* This very request was begun before and not finished: its first page
   * may repeat messages already delivered (a crash, or our own failure). */
  int suspect = st.req_partition == rq->partition &&
                st.req_offset == rq->offset && strcmp(st.state, "done");
  char cursor[1024];
  snprintf(cursor, sizeof(cursor), "%s", st.cursor);
  /* The begin mark travels with the first page's messages (one wait for
   * both): a crash after that page is then recognised as well. */
  if ((err = kmq__cursor_produce(p->producer, p->cursor_topic, kfid, cursor,
                                 rq->partition, rq->offset, KMQ__CURSOR_BEGIN,
                                 &p->batch, errstr, errstr_size)))
    return err;
  *more = 1;
  for (int page = 0; *more && page < p->conf.max_pages; page++) {
    kmq_wecom_sync_req_t req = {.open_kfid = kfid, .cursor = cursor,
                                .token = token, .limit = p->conf.limit,
                                .voice_format = p->conf.voice_format};
    kmq_wecom_sync_page_t pg;
    kmq_wecom_result_t res;
    err = kmq_wecom_sync_msg(p->conf.client, &req, &pg, &res, errstr,
                             errstr_size);
    if (res.sync_token_dropped) {
      KMQ__ADD(p, sync_token_dropped, 1);
      token = NULL; /* WeCom refused it once; the later pages do without */
    }
    if (err) {
      kmq__batch_wait(p->producer, &p->batch, errstr + strlen(errstr),
                      errstr_size - strlen(errstr));
      return err;
    }
    size_t i, n = json_array_size(pg.msg_list);
    json_t *it;
    int produced = 0;
    /* Storing an empty cursor would restart the open_kfid from WeCom's
     * oldest message (3 days of duplicates): refuse such a page before
     * producing it. A last empty page without one keeps the old cursor. */
    if (!*pg.next_cursor && (n || pg.has_more)) {
      snprintf(errstr, errstr_size,
               "kf/sync_msg: a page of %zu message(s) without next_cursor", n);
      kmq__batch_wait(p->producer, &p->batch, errstr + strlen(errstr),
                      errstr_size - strlen(errstr));
      kmq_wecom_sync_page_clear(&pg);
      return KMQ_WECOM_API_ERR_BAD_RESPONSE;
    }
    KMQ__ADD(p, pulled, (long long)n);
    json_array_foreach(pg.msg_list, i, it) {
      int r = kmq__produce_item(p, it, errstr, errstr_size);
      if (r < 0)
        break;
      produced += r;
    }
    if (i < n) { /* refused: wait for what went, then give up the page */
      char ignore[8];
      kmq__batch_wait(p->producer, &p->batch, ignore, sizeof(ignore));
      kmq_wecom_sync_page_clear(&pg);
      return KMQ_WECOM_API_ERR_KAFKA;
    }
    if ((err = kmq__batch_wait(p->producer, &p->batch, errstr, errstr_size))) {
      kmq_wecom_sync_page_clear(&pg);
      return err;
    }
    KMQ__ADD(p, produced, produced);
    if (suspect && page == 0)
      KMQ__ADD(p, duplicates_suspected, produced);
    if (p->conf.on_page)
      p->conf.on_page(kfid, produced, p->conf.on_page_opaque);
    *more = pg.has_more;
    const char *state = *more && page + 1 < p->conf.max_pages
                            ? KMQ__CURSOR_PAGE
                            : KMQ__CURSOR_DONE;
    if (*pg.next_cursor)
      snprintf(cursor, sizeof(cursor), "%s", pg.next_cursor);
    kmq_wecom_sync_page_clear(&pg);
    if ((err = kmq__cursor_produce(p->producer, p->cursor_topic, kfid, cursor,
                                   rq->partition, rq->offset, state, &p->batch,
                                   errstr, errstr_size)) ||
        (err = kmq__batch_wait(p->producer, &p->batch, errstr, errstr_size)))
      return err;
    if ((err = kmq__cursor_set(p->cursors, kfid, cursor, rq->partition,
                               rq->offset, state))) {
      snprintf(errstr, errstr_size, "out of memory");
      return err;
    }
    KMQ__ADD(p, cursor_writes, 1);
    KMQ__ADD(p, pages, 1);
    if (!n)
      KMQ__ADD(p, empty_pages, 1);
  }
  return KMQ_WECOM_API_OK;
}

/* The follow-up request for an open_kfid left with has_more at max_pages:
 * delivered before the current request is committed, to the request's own
 * partition (whatever partitioner the callback receiver used), so that the
 * open_kfid's owner stays the one member that pulls it. */
static kmq_wecom_api_err_t kmq__followup(kmq_wecom_puller_t *p,
                                         const rd_kafka_message_t *rq,
                                         const char *kfid, char *errstr,
                                         size_t errstr_size) {
  char v[512];
  int n = snprintf(v, sizeof(v), "{\"open_kfid\":\"%s\",\"create_time\":%lld}",
                   kfid, (long long)(kmq__wall_ms() / 1000));
  p->batch.pending++;
  rd_kafka_resp_err_t e = rd_kafka_producev(
      p->producer, RD_KAFKA_V_TOPIC(p->sync_topic),
      RD_KAFKA_V_PARTITION(rq->partition),
      RD_KAFKA_V_KEY(kfid, strlen(kfid)), RD_KAFKA_V_VALUE(v, (size_t)n),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&p->batch),
      RD_KAFKA_V_END);
  if (e) {
    p->batch.pending--;
    snprintf(errstr, errstr_size, "follow-up request: %s", rd_kafka_err2str(e));
    return KMQ_WECOM_API_ERR_KAFKA;
  }
  kmq_wecom_api_err_t err = kmq__batch_wait(p->producer, &p->batch, errstr,
                                        errstr_size);
  if (!err)
    KMQ__ADD(p, followups, 1);
  return err;
}

/* Commits rq's offset + 1 (synchronously: the request is done only then).
 * A failed commit is logged, not an error: the request comes again and
 * pulls from the cursor already stored, which repeats nothing. */
static void kmq__commit(kmq_wecom_puller_t *p, const rd_kafka_message_t *rq) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(rq->rkt),
                                    rq->partition)
      ->offset = rq->offset + 1;
  rd_kafka_resp_err_t e = rd_kafka_commit(p->consumer, l, 0);
  if (!e && l->elems[0].err)
    e = l->elems[0].err;
  if (e)
    kmq__log_to(&p->log, "WARN", "wecom-puller", "commit %s [%d] %lld: %s",
             rd_kafka_topic_name(rq->rkt), (int)rq->partition,
             (long long)rq->offset + 1, rd_kafka_err2str(e));
  rd_kafka_topic_partition_list_destroy(l);
}

/* The request comes again after a backoff: seek back to it. */
static void kmq__again(kmq_wecom_puller_t *p, const rd_kafka_message_t *rq) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(rq->rkt),
                                    rq->partition)
      ->offset = rq->offset;
  rd_kafka_error_t *e = rd_kafka_seek_partitions(p->consumer, l, 5000);
  if (e) {
    kmq__log_to(&p->log, "WARN", "wecom-puller", "seek back to %lld: %s",
             (long long)rq->offset, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
  }
  rd_kafka_topic_partition_list_destroy(l);
  int ms = p->conf.retry_backoff_ms;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static kmq_wecom_api_err_t kmq__handle(kmq_wecom_puller_t *p,
                                       const rd_kafka_message_t *rq,
                                       char *errstr, size_t errstr_size) {
  json_t *r = rq->payload ? json_loadb(rq->payload, rq->len, 0, NULL) : NULL;
  const char *kfid = json_string_value(json_object_get(r, "open_kfid"));
  const char *token = json_string_value(json_object_get(r, "token"));
  kmq_wecom_api_err_t err = KMQ_WECOM_API_OK;
  if (!kfid || !*kfid || strlen(kfid) > 128) {
    KMQ__ADD(p, bad_requests, 1);
    kmq__log_to(&p->log, "WARN", "wecom-puller",
             "sync request at %s [%d] %lld has no open_kfid: skipped",
             rd_kafka_topic_name(rq->rkt), (int)rq->partition,
             (long long)rq->offset);
    kmq__commit(p, rq);
    json_decref(r);
    return KMQ_WECOM_API_OK;
  }
  if (p->cursors_stale) {
    if ((err = kmq__cursors_load(p->reader, p->cursor_topic, p->cursors,
                                 KMQ__CURSOR_LOAD_MS, errstr, errstr_size)))
      goto fail;
    p->cursors_stale = 0;
    KMQ__ADD(p, cursor_loads, 1);
  }
  int more = 0;
  if ((err = kmq__pull(p, rq, kfid, token, &more, errstr, errstr_size)) ||
      (more && (err = kmq__followup(p, rq, kfid, errstr, errstr_size))))
    goto fail;
  kmq__commit(p, rq);
  KMQ__ADD(p, requests, 1);
  p->fails = 0;
  json_decref(r);
  return KMQ_WECOM_API_OK;

fail:
  KMQ__ADD(p, errors, 1);
  if (p->fail_partition == rq->partition && p->fail_offset == rq->offset)
    p->fails++;
  else
    p->fail_partition = rq->partition, p->fail_offset = rq->offset,
    p->fails = 1;
  kmq__log_to(&p->log, "WARN", "wecom-puller", "sync of %s failed (%d in a row): %s",
           kfid, p->fails, errstr);
  char fatal[256];
  if (rd_kafka_fatal_error(p->producer, fatal, sizeof(fatal))) {
    /* Dropping requests would not help: nothing can be produced again. */
    snprintf(errstr, errstr_size,
             "fatal producer error (recreate the puller): %s", fatal);
    kmq__again(p, rq);
    err = KMQ_WECOM_API_ERR_KAFKA;
  } else if (p->fails >= p->conf.max_request_failures) {
    /* Nothing is lost: its cursor did not move past what was delivered,
     * and WeCom's next callback for kfid pulls from there. */
    KMQ__ADD(p, requests_dropped, 1);
    kmq__commit(p, rq);
    p->fails = 0;
  } else {
    kmq__again(p, rq);
  }
  json_decref(r);
  return err;
}

kmq_wecom_api_err_t kmq_wecom_puller_poll(kmq_wecom_puller_t *p, int timeout_ms,
                                          char *errstr, size_t errstr_size) {
  char local[512];
  if (!errstr || errstr_size < 2) { /* the steps append to it */
    errstr = local;
    errstr_size = sizeof(local);
  }
  rd_kafka_message_t *m = rd_kafka_consumer_poll(p->consumer, timeout_ms);
  if (!m)
    return KMQ_WECOM_API_OK;
  kmq_wecom_api_err_t err = KMQ_WECOM_API_OK;
  if (m->err) {
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
      kmq__log_to(&p->log, "WARN", "wecom-puller", "consumer: %s",
               rd_kafka_message_errstr(m));
  } else {
    errstr[0] = '\0';
    err = kmq__handle(p, m, errstr, errstr_size);
  }
  rd_kafka_message_destroy(m);
  return err;
}

/* ---- life cycle --------------------------------------------------------- */

static void kmq__puller_free(kmq_wecom_puller_t *p) {
  if (p->consumer) {
    /* Serves the final revoke; nothing is in flight between two polls, and
     * every finished request is already committed. */
    rd_kafka_consumer_close(p->consumer);
    rd_kafka_destroy(p->consumer);
  }
  if (p->reader) {
    rd_kafka_consumer_close(p->reader);
    rd_kafka_destroy(p->reader);
  }
  if (p->producer) {
    rd_kafka_flush(p->producer, 10000); /* nothing is left between polls */
    rd_kafka_destroy(p->producer);
  }
  json_decref(p->cursors);
  free(p->sync_topic);
  free(p->cursor_topic);
  free(p->out_topic);
  free(p);
}

kmq_wecom_puller_t *kmq_wecom_puller_new(const kmq_wecom_puller_conf_t *conf,
                                         char *errstr, size_t errstr_size) {
  char buf[512];
  const kmq_wecom_puller_conf_t *c = conf;
  if (!c || !c->kafka || !c->sync_topic || !*c->sync_topic || !c->group_id ||
      !*c->group_id || !c->out_topic || !*c->out_topic || !c->client ||
      c->limit < 0 || c->limit > 1000 || c->max_pages < 0 ||
      c->max_request_failures < 0 || c->retry_backoff_ms < 0) {
    snprintf(errstr, errstr_size,
             "kafka, sync_topic, group_id, out_topic and client required; "
             "limit 0..1000; counts >= 0");
    return NULL;
  }
  kmq_wecom_puller_t *p = calloc(1, sizeof(*p));
  if (!p) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  p->conf = *c;
  if (c->kafka)
    p->log = kmq__conf_hooks(c->kafka)->log;
  p->conf.kafka = NULL; /* read here, not kept */
  if (!p->conf.limit)
    p->conf.limit = 1000;
  if (!p->conf.max_pages)
    p->conf.max_pages = 100;
  if (!p->conf.max_request_failures)
    p->conf.max_request_failures = 5;
  if (!p->conf.retry_backoff_ms)
    p->conf.retry_backoff_ms = 500;
  p->fail_partition = -1;
  snprintf(buf, sizeof(buf), "%s.cursors", c->sync_topic);
  if (!(p->sync_topic = strdup(c->sync_topic)) ||
      !(p->cursor_topic = strdup(buf)) ||
      !(p->out_topic = strdup(c->out_topic)) ||
      !(p->cursors = json_object())) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  p->conf.sync_topic = p->sync_topic;
  p->conf.out_topic = p->out_topic;
  p->cursors_stale = 1;

  /* Compacted: only each open_kfid's last cursor matters. One partition:
   * a handful of records per open_kfid, read whole on every assignment.
   * Replication: the broker's default.replication.factor (-1). */
  const char *const cfg[] = {"cleanup.policy", "compact", NULL};
  if (kmq_admin_create_topic(c->kafka, p->cursor_topic, 1, -1, cfg, 1, 30000,
                             errstr, errstr_size))
    goto fail;

  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(c->kafka, KMQ_CLIENT_PRODUCER, errstr,
                             errstr_size);
  if (!rc)
    goto fail;
  rd_kafka_conf_set_dr_msg_cb(rc, kmq__batch_dr);
  if (!(p->producer = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr,
                                   errstr_size))) {
    rd_kafka_conf_destroy(rc);
    goto fail;
  }

  if (!(rc = kmq_conf_build_rdkafka(c->kafka, KMQ_CLIENT_CONSUMER, errstr,
                                    errstr_size)))
    goto fail;
  if (rd_kafka_conf_set(rc, "group.id", c->group_id, errstr, errstr_size)) {
    rd_kafka_conf_destroy(rc);
    goto fail;
  }
  rd_kafka_conf_set_rebalance_cb(rc, kmq__rebalance);
  rd_kafka_conf_set_opaque(rc, p);
  if (!(p->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr,
                                   errstr_size))) {
    rd_kafka_conf_destroy(rc);
    goto fail;
  }
  rd_kafka_poll_set_consumer(p->consumer);
  if (!(p->reader = kmq__cursor_reader_new(c->kafka, c->group_id, errstr,
                                           errstr_size)))
    goto fail;
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, p->sync_topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(p->consumer, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  if (e) {
    snprintf(errstr, errstr_size, "subscribe %s: %s", p->sync_topic,
             rd_kafka_err2str(e));
    goto fail;
  }
  return p;

fail:
  kmq__puller_free(p);
  return NULL;
}

void kmq_wecom_puller_destroy(kmq_wecom_puller_t *p) {
  if (p)
    kmq__puller_free(p);
}
