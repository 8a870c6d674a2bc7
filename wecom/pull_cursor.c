/* The puller's cursor store: one compacted Kafka topic shared by every
 * gateway instance (key open_kfid, value WeCom's cursor), and the delivery
 * wait the puller uses for everything it produces. See wecom/pull_int.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "wecom/pull_int.h"

/* ---- delivery ----------------------------------------------------------- */

void kmq__batch_dr(rd_kafka_t *rk, const rd_kafka_message_t *m,
                   void *opaque) {
  (void)rk, (void)opaque;
  kmq__batch_t *b = m->_private; /* the per-message opaque */
  if (!b)
    return;
  if (m->err && !b->failed++)
    b->first_err = m->err;
  b->pending--;
}

kmq_wecom_api_err_t kmq__batch_wait(rd_kafka_t *producer, kmq__batch_t *b,
                                    char *errstr, size_t errstr_size) {
  /* rd_kafka_flush serves the reports on this thread; each message is
   * reported within message.timeout.ms, so the loop ends. */
  while (b->pending > 0)
    rd_kafka_flush(producer, 1000);
  kmq_wecom_api_err_t err = KMQ_WECOM_API_OK;
  if (b->failed) {
    snprintf(errstr, errstr_size, "%d message(s) not delivered: %s",
             b->failed, rd_kafka_err2str(b->first_err));
    err = KMQ_WECOM_API_ERR_KAFKA;
  }
  memset(b, 0, sizeof(*b));
  return err;
}

/* ---- the map ------------------------------------------------------------ */

void kmq__cursor_get(const json_t *map, const char *open_kfid,
                     kmq__cursor_t *out) {
  json_t *e = json_object_get(map, open_kfid);
  const char *c = json_string_value(json_object_get(e, "c"));
  const char *s = json_string_value(json_object_get(e, "s"));
  json_t *p = json_object_get(e, "p"), *o = json_object_get(e, "o");
  out->cursor = c ? c : "";
  out->state = s ? s : "";
  out->req_partition = p ? (int32_t)json_integer_value(p) : -1;
  out->req_offset = o ? (int64_t)json_integer_value(o) : -1;
}

kmq_wecom_api_err_t kmq__cursor_set(json_t *map, const char *open_kfid,
                                    const char *cursor, int32_t req_partition,
                                    int64_t req_offset, const char *state) {
  json_t *e = json_pack("{s:s, s:I, s:I, s:s}", "c", cursor, "p",
                        (json_int_t)req_partition, "o", (json_int_t)req_offset,
                        "s", state);
  return e && !json_object_set_new(map, open_kfid, e) ? KMQ_WECOM_API_OK
                                                      : KMQ_WECOM_API_ERR_NOMEM;
}

/* ---- writing ------------------------------------------------------------ */

kmq_wecom_api_err_t kmq__cursor_produce(rd_kafka_t *producer, const char *topic,
                                        const char *open_kfid,
                                        const char *cursor,
                                        int32_t req_partition,
                                        int64_t req_offset, const char *state,
                                        kmq__batch_t *b, char *errstr,
                                        size_t errstr_size) {
  char req[48];
  snprintf(req, sizeof(req), "%d/%lld", (int)req_partition,
           (long long)req_offset);
  rd_kafka_headers_t *h = rd_kafka_headers_new(2);
  rd_kafka_header_add(h, "kmq_req", -1, req, -1);
  rd_kafka_header_add(h, "kmq_state", -1, state, -1);
  b->pending++;
  rd_kafka_resp_err_t e = rd_kafka_producev(
      producer, RD_KAFKA_V_TOPIC(topic),
      RD_KAFKA_V_KEY(open_kfid, strlen(open_kfid)),
      RD_KAFKA_V_VALUE((void *)cursor, strlen(cursor)),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
      RD_KAFKA_V_OPAQUE(b), RD_KAFKA_V_END);
  if (e) {
    b->pending--;
    rd_kafka_headers_destroy(h); /* not taken on failure */
    snprintf(errstr, errstr_size, "cursor of %s: %s", open_kfid,
             rd_kafka_err2str(e));
    return KMQ_WECOM_API_ERR_KAFKA;
  }
  return KMQ_WECOM_API_OK;
}

/* ---- reading ------------------------------------------------------------ */

rd_kafka_t *kmq__cursor_reader_new(const kmq_conf_t *kafka, const char *group,
                                   char *errstr, size_t errstr_size) {
  rd_kafka_conf_t *rc =
      kmq_conf_build_rdkafka(kafka, KMQ_CLIENT_CONSUMER, errstr, errstr_size);
  if (!rc)
    return NULL;
  /* assign() only: it never joins a group nor commits, but librdkafka
   * refuses assign() without a group.id (ERR__UNKNOWN_GROUP). A name of
   * its own, so that it never touches the pullers' group. */
  char g[512];
  snprintf(g, sizeof(g), "%s.cursor-reader", group);
  if (rd_kafka_conf_set(rc, "group.id", g, errstr, errstr_size)) {
    rd_kafka_conf_destroy(rc);
    return NULL;
  }
  rd_kafka_t *rk =
      rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, (size_t)errstr_size);
  if (!rk) {
    rd_kafka_conf_destroy(rc);
    return NULL;
  }
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

static void kmq__apply(json_t *map, const rd_kafka_message_t *m) {
  char kfid[256], cursor[1024], state[16] = "", req[48] = "";
  if (!m->key || !m->key_len || m->key_len >= sizeof(kfid))
    return;
  memcpy(kfid, m->key, m->key_len);
  kfid[m->key_len] = '\0';
  if (!m->payload) { /* tombstone: the open_kfid starts over */
    json_object_del(map, kfid);
    return;
  }
  if (m->len >= sizeof(cursor))
    return; /* not a cursor this puller wrote: keep the previous one */
  memcpy(cursor, m->payload, m->len);
  cursor[m->len] = '\0';
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t n;
  if (!rd_kafka_message_headers(m, &h)) {
    if (!rd_kafka_header_get_last(h, "kmq_state", &v, &n) && n < sizeof(state))
      memcpy(state, v, n), state[n] = '\0';
    if (!rd_kafka_header_get_last(h, "kmq_req", &v, &n) && n < sizeof(req))
      memcpy(req, v, n), req[n] = '\0';
  }
  int p = -1;
  long long o = -1;
  if (sscanf(req, "%d/%lld", &p, &o) != 2)
    p = -1, o = -1;
  kmq__cursor_set(map, kfid, cursor, p, o, state);
}

kmq_wecom_api_err_t kmq__cursors_load(rd_kafka_t *rk, const char *topic,
                                      json_t *map, int timeout_ms, char *errstr,
                                      size_t errstr_size) {
  int64_t deadline = kmq__mono_ms() + timeout_ms;
  const rd_kafka_metadata_t *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
  rd_kafka_topic_destroy(rkt);
  if (e || md->topic_cnt != 1 || md->topics[0].err ||
      md->topics[0].partition_cnt < 1) {
    snprintf(errstr, errstr_size, "%s: no metadata: %s", topic,
             rd_kafka_err2str(e ? e : md->topics[0].err));
    if (md)
      rd_kafka_metadata_destroy(md);
    return KMQ_WECOM_API_ERR_KAFKA;
  }
  int cnt = md->topics[0].partition_cnt;
  rd_kafka_topic_partition_list_t *parts =
      rd_kafka_topic_partition_list_new(cnt);
  int64_t *high = calloc((size_t)cnt, sizeof(*high));
  int64_t *pos = calloc((size_t)cnt, sizeof(*pos));
  json_t *fresh = json_object();
  kmq_wecom_api_err_t err = KMQ_WECOM_API_ERR_KAFKA;
  int left = 0;
  if (!high || !pos || !fresh) {
    err = KMQ_WECOM_API_ERR_NOMEM;
    snprintf(errstr, errstr_size, "out of memory");
    goto out;
  }
  for (int i = 0; i < cnt; i++) {
    int32_t id = md->topics[0].partitions[i].id;
    int64_t lo;
    if ((e = rd_kafka_query_watermark_offsets(rk, topic, id, &lo, &high[i],
                                              timeout_ms))) {
      snprintf(errstr, errstr_size, "%s [%d]: end offset: %s", topic, (int)id,
               rd_kafka_err2str(e));
      goto out;
    }
    pos[i] = lo;
    if (high[i] > lo)
      left++;
    rd_kafka_topic_partition_list_add(parts, topic, id)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  if (left && (e = rd_kafka_assign(rk, parts))) {
    snprintf(errstr, errstr_size, "%s: assign: %s", topic,
             rd_kafka_err2str(e));
    goto out;
  }
  while (left > 0 && kmq__mono_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m)
      continue;
    if (!m->err) {
      kmq__apply(fresh, m);
      for (int i = 0; i < cnt; i++)
        if (md->topics[0].partitions[i].id == m->partition &&
            pos[i] < high[i] && (pos[i] = m->offset + 1) >= high[i])
          left--;
    }
    rd_kafka_message_destroy(m);
  }
  if (left) {
    snprintf(errstr, errstr_size, "%s: end not reached in %d ms", topic,
             timeout_ms);
    err = KMQ_WECOM_API_ERR_TIMED_OUT;
  } else {
    err = json_object_update(map, fresh) ? KMQ_WECOM_API_ERR_NOMEM
                                         : KMQ_WECOM_API_OK;
    /* Keys the topic no longer has (tombstoned) leave the map too. */
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(map, tmp, k, v) {
      if (!json_object_get(fresh, k))
        json_object_del(map, k);
    }
  }
  rd_kafka_assign(rk, NULL);
out:
  json_decref(fresh);
  free(pos);
  free(high);
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_metadata_destroy(md);
  return err;
}
