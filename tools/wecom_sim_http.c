/* The WeCom simulator's HTTP side: gettoken, kf/sync_msg, kf/send_msg on
 * libmicrohttpd's threads (tools/wecom_sim.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wecom_sim_int.h"

/* ---- HTTP --------------------------------------------------------------- */

typedef struct {
  char *buf;
  size_t len;
  int over;
} kmq__sim_req_t;

static enum MHD_Result kmq__sim_reply(struct MHD_Connection *conn,
                                      unsigned status, json_t *obj) {
  char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
  json_decref(obj);
  if (!s)
    return MHD_NO;
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(s);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

static json_t *kmq__sim_err(int code, const char *msg) {
  return json_pack("{s:i, s:s}", "errcode", code, "errmsg", msg);
}

/* @locks_required mu. The injected error for ep, if any is due. */
static json_t *kmq__sim_injected(kmq_wecom_sim_t *s,
                                 kmq_wecom_sim_endpoint_t ep) {
  if (s->inject_cnt[ep] <= 0)
    return NULL;
  s->inject_cnt[ep]--;
  s->st.injected++;
  return kmq__sim_err(s->inject_code[ep], "injected by the simulator");
}

/* @locks_required mu. NULL when the access token is usable. */
static json_t *kmq__sim_check_token(kmq_wecom_sim_t *s, const char *tok) {
  int64_t now = kmq__sim_now();
  for (int i = 0; tok && i < KMQ__SIM_TOKENS; i++) {
    kmq__sim_tok_t *t = &s->toks[i];
    if (!t->token[0] || strcmp(t->token, tok))
      continue;
    int code = t->refused ? t->refused : now >= t->expires_ms ? 42001 : 0;
    if (!code)
      return NULL;
    s->st.token_refused++;
    return kmq__sim_err(code, code == 42001 ? "access_token expired"
                                            : "invalid access_token");
  }
  s->st.token_refused++;
  return kmq__sim_err(40014, "invalid access_token");
}

/* @locks_required mu */
static json_t *kmq__sim_gettoken(kmq_wecom_sim_t *s, const char *id,
                                 const char *secret) {
  if (!id || strcmp(id, s->corp_id))
    return kmq__sim_err(40013, "invalid corpid");
  if (!secret || strcmp(secret, s->corp_secret))
    return kmq__sim_err(40001, "invalid credential");
  kmq__sim_tok_t *t = &s->toks[s->tok_next++ % KMQ__SIM_TOKENS];
  /* Unguessable enough for a test double, and no libc rand() state. */
  unsigned mix = (unsigned)(++s->serial * 2654435761u) ^
                 (unsigned)(kmq__sim_now() & 0xffffffffu);
  snprintf(t->token, sizeof(t->token), "SIMTOK-%lld-%08x",
           (long long)s->serial, mix);
  t->expires_ms = kmq__sim_now() + (int64_t)s->conf.token_lifetime_s * 1000;
  t->refused = 0;
  s->st.tokens_issued++;
  return json_pack("{s:i, s:s, s:s, s:i}", "errcode", 0, "errmsg", "ok",
                   "access_token", t->token, "expires_in",
                   s->conf.token_lifetime_s);
}

/* @locks_required mu. Cursor "CUR:<k>:<pos>": opaque to the client. */
static json_t *kmq__sim_sync(kmq_wecom_sim_t *s, json_t *body) {
  const char *kfid = json_string_value(json_object_get(body, "open_kfid"));
  const char *cur = json_string_value(json_object_get(body, "cursor"));
  const char *tok = json_string_value(json_object_get(body, "token"));
  json_int_t limit = json_integer_value(json_object_get(body, "limit"));
  int k = kmq__sim_kf_index(kfid, s->conf.kfids), ck, pos = 0;
  if (k < 0)
    return kmq__sim_err(95000, "invalid open_kfid");
  kmq__sim_kf_t *kf = &s->kf[k];
  if (cur && *cur) {
    char tail;
    if (sscanf(cur, "CUR:%d:%d%c", &ck, &pos, &tail) != 2 || ck != k ||
        pos < 0 || pos > kf->len)
      return kmq__sim_err(95000, "invalid cursor");
  }
  if (tok) {
    int64_t now = kmq__sim_now();
    int found = 0;
    for (int i = 0; i < KMQ__SIM_SYNC_TOKENS; i++)
      found |= !strcmp(kf->sync_tokens[i], tok) && now < kf->sync_expires[i];
    if (!found)
      return kmq__sim_err(95007, "invalid msg token");
    s->st.sync_with_token++;
  } else {
    s->st.sync_without_token++;
  }
  if (limit <= 0 || limit > 1000)
    limit = 1000;
  if (limit > s->conf.page_max)
    limit = s->conf.page_max;
  int n = 0, injected_empty = 0;
  if (s->empty_pages > 0) {
    s->empty_pages--;
    s->st.empty_pages++;
    injected_empty = 1;
  } else {
    n = kf->len - pos < limit ? kf->len - pos : (int)limit;
  }
  json_t *list = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(list, json_loads(kf->log[pos + i].item, 0, NULL));
  char next[48];
  snprintf(next, sizeof(next), "CUR:%d:%d", k, pos + n);
  /* An injected empty page says has_more = 1 whatever is left: the case a
   * client must not mistake for the end. */
  int more = injected_empty || pos + n < kf->len;
  if (n > 0 && s->no_cursor > 0) {
    s->no_cursor--;
    return json_pack("{s:i, s:s, s:i, s:o}", "errcode", 0, "errmsg", "ok",
                     "has_more", more, "msg_list", list);
  }
  return json_pack("{s:i, s:s, s:s, s:i, s:o}", "errcode", 0, "errmsg", "ok",
                   "next_cursor", next, "has_more", more, "msg_list", list);
}

/* @locks_required mu */
static json_t *kmq__sim_send(kmq_wecom_sim_t *s, json_t *body) {
  const char *to = json_string_value(json_object_get(body, "touser"));
  const char *kfid = json_string_value(json_object_get(body, "open_kfid"));
  const char *type = json_string_value(json_object_get(body, "msgtype"));
  const char *mid = json_string_value(json_object_get(body, "msgid"));
  const char *text = json_string_value(
      json_object_get(json_object_get(body, "text"), "content"));
  int u = kmq__sim_user_index(to, s->nusers);
  if (u < 0 || kmq__sim_kf_index(kfid, s->conf.kfids) != u % s->conf.kfids)
    return kmq__sim_err(95000, "invalid touser or open_kfid");
  if (!type || strcmp(type, "text") || !text)
    return kmq__sim_err(40008, "invalid message type");
  kmq__sim_user_t *us = &s->users[u];
  char id[64];
  if (mid && *mid) {
    snprintf(id, sizeof(id), "%s", mid);
    if (!strcmp(us->last_msgid, id)) /* a resend: already recorded */
      return json_pack("{s:i, s:s, s:s}", "errcode", 0, "errmsg", "ok",
                       "msgid", id);
  } else {
    snprintf(id, sizeof(id), "SIMREPLY-%lld", (long long)++s->serial);
  }
  if (us->nreplies == us->cap) {
    int cap = us->cap ? us->cap * 2 : 16;
    int *nr = realloc(us->replies, sizeof(int) * (size_t)cap);
    if (!nr)
      return kmq__sim_err(-1, "system busy (out of memory)");
    us->replies = nr;
    us->cap = cap;
  }
  const char *h = strchr(text, '#');
  int seq = -1;
  if (!h || sscanf(h, "#%d", &seq) != 1)
    seq = -1;
  us->replies[us->nreplies++] = seq;
  kmq__sim_ack(s, u, seq);
  snprintf(us->last_msgid, sizeof(us->last_msgid), "%s", id);
  s->st.replies++;
  return json_pack("{s:i, s:s, s:s}", "errcode", 0, "errmsg", "ok", "msgid",
                   id);
}

enum MHD_Result kmq__sim_handler(void *cls, struct MHD_Connection *conn,
                                        const char *url, const char *method,
                                        const char *version,
                                        const char *upload, size_t *upload_size,
                                        void **con_cls) {
  (void)version;
  kmq_wecom_sim_t *s = cls;
  kmq__sim_req_t *rq = *con_cls;
  if (!rq) { /* first call: headers only */
    if (!(rq = calloc(1, sizeof(*rq))))
      return MHD_NO;
    *con_cls = rq;
    return MHD_YES;
  }
  if (*upload_size) { /* a chunk of the body */
    if (rq->len + *upload_size > KMQ__SIM_BODY_MAX) {
      rq->over = 1;
    } else if (!rq->over) {
      char *nb = realloc(rq->buf, rq->len + *upload_size + 1);
      if (!nb)
        return MHD_NO;
      memcpy(nb + rq->len, upload, *upload_size);
      rq->buf = nb;
      rq->len += *upload_size;
      rq->buf[rq->len] = '\0';
    }
    *upload_size = 0;
    return MHD_YES;
  }
  int is_get = !strcmp(method, "GET"), is_post = !strcmp(method, "POST");
  kmq_wecom_sim_endpoint_t ep;
  if (is_get && !strcmp(url, "/cgi-bin/gettoken"))
    ep = KMQ_WECOM_SIM_GETTOKEN;
  else if (is_post && !strcmp(url, "/cgi-bin/kf/sync_msg"))
    ep = KMQ_WECOM_SIM_SYNC;
  else if (is_post && !strcmp(url, "/cgi-bin/kf/send_msg"))
    ep = KMQ_WECOM_SIM_SEND;
  else
    return kmq__sim_reply(conn, MHD_HTTP_NOT_FOUND,
                          kmq__sim_err(404, "no such API"));
  if (rq->over)
    return kmq__sim_reply(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                          kmq__sim_err(413, "body too large"));
  json_t *body = NULL, *ans;
  /* Parsed outside json_is_object(): the macro evaluates its argument more
   * than once. */
  if (ep != KMQ_WECOM_SIM_GETTOKEN && rq->buf)
    body = json_loads(rq->buf, 0, NULL);
  if (ep != KMQ_WECOM_SIM_GETTOKEN && !json_is_object(body)) {
    json_decref(body);
    return kmq__sim_reply(conn, MHD_HTTP_OK,
                          kmq__sim_err(47001, "data format error"));
  }
  pthread_mutex_lock(&s->mu);
  s->st.calls[ep]++;
  if (!(ans = kmq__sim_injected(s, ep))) {
    if (ep == KMQ_WECOM_SIM_GETTOKEN)
      ans = kmq__sim_gettoken(
          s, MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "corpid"),
          MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
                                      "corpsecret"));
    else if (!(ans = kmq__sim_check_token(
                   s, MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
                                                  "access_token"))))
      ans = ep == KMQ_WECOM_SIM_SYNC ? kmq__sim_sync(s, body)
                                     : kmq__sim_send(s, body);
  }
  int latency = ep == KMQ_WECOM_SIM_SYNC ? s->latency_ms : 0;
  pthread_mutex_unlock(&s->mu);
  json_decref(body);
  /* A slow WeCom. A thread per connection: no other request waits. */
  if (latency > 0) {
    struct timespec ts = {latency / 1000, (latency % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  return kmq__sim_reply(conn, MHD_HTTP_OK, ans);
}

void kmq__sim_done(void *cls, struct MHD_Connection *conn,
                          void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)cls, (void)conn, (void)toe;
  kmq__sim_req_t *rq = *con_cls;
  if (rq) {
    free(rq->buf);
    free(rq);
  }
  *con_cls = NULL;
}
