/* The WeCom API simulator (tools/wecom_sim.h): model and HTTP handlers. */
#include "wecom_sim.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KMQ__SIM_BODY_MAX (1u << 20)
#define KMQ__SIM_TOKENS 64 /* access tokens remembered (older: invalid) */
#define KMQ__SIM_SYNC_TOKENS 16 /* sync tokens remembered per open_kfid */

typedef struct {
  char token[48];
  int64_t expires_ms; /* monotonic */
  int refused;        /* errcode once revoked; 0: valid until expires_ms */
} kmq__sim_tok_t;

typedef struct {
  char *item; /* one msg_list item, serialised */
} kmq__sim_msg_t;

typedef struct {
  kmq__sim_msg_t *log;
  int len, cap;
  char sync_tokens[KMQ__SIM_SYNC_TOKENS][48];
  int64_t sync_expires[KMQ__SIM_SYNC_TOKENS];
  int sync_next;
} kmq__sim_kf_t;

typedef struct {
  int sent;              /* messages generated */
  int *replies;          /* acknowledged seq per reply, -1: none in it */
  int nreplies, cap;
  char last_msgid[64];   /* send_msg's msgid, for idempotent resends */
} kmq__sim_user_t;

struct kmq_wecom_sim_s {
  kmq_wecom_sim_conf_t conf;
  char *corp_id, *corp_secret;
  struct MHD_Daemon *d;
  int port;
  pthread_mutex_t mu; /* everything below */
  kmq__sim_kf_t *kf;
  kmq__sim_user_t *users;
  int nusers;
  kmq__sim_tok_t toks[KMQ__SIM_TOKENS];
  int tok_next;
  int64_t serial; /* tokens and msgids of replies */
  int inject_code[KMQ_WECOM_SIM_EP_CNT], inject_cnt[KMQ_WECOM_SIM_EP_CNT];
  int empty_pages;
  kmq_wecom_sim_stats_t st;
};

static int64_t kmq__sim_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kmq_wecom_sim_kfid(int k, char *buf, size_t size) {
  snprintf(buf, size, "wkSIM%03d", k);
}
void kmq_wecom_sim_user(int u, char *buf, size_t size) {
  snprintf(buf, size, "wmSIM%05d", u);
}
void kmq_wecom_sim_reply_text(int u, int seq, char *buf, size_t size) {
  snprintf(buf, size, "re #%d (wmSIM%05d): thank you", seq, u);
}
int kmq_wecom_sim_parse_msgid(const char *id, int *u, int *seq) {
  char tail;
  return id && sscanf(id, "sim-%d-%d%c", u, seq, &tail) == 2 ? 0 : -1;
}

void kmq_wecom_sim_conf_init(kmq_wecom_sim_conf_t *c) {
  memset(c, 0, sizeof(*c));
  c->corp_id = "wwSIMCORP";
  c->corp_secret = "sim-secret-0123456789";
  c->token_lifetime_s = 7200;
  c->sync_token_lifetime_s = 600;
  c->page_max = 1000;
  c->kfids = 1;
}

/* ---- model -------------------------------------------------------------- */

static int kmq__sim_kf_index(const char *kfid, int kfids) {
  int k;
  char tail;
  if (!kfid || sscanf(kfid, "wkSIM%d%c", &k, &tail) != 1 || k < 0 ||
      k >= kfids)
    return -1;
  return k;
}

static int kmq__sim_user_index(const char *user, int nusers) {
  int u;
  char tail;
  if (!user || sscanf(user, "wmSIM%d%c", &u, &tail) != 1 || u < 0 ||
      u >= nusers)
    return -1;
  return u;
}

/* One msg_list item as WeCom's sync_msg returns it. */
static char *kmq__sim_item(const kmq_wecom_sim_t *s, int u, int seq) {
  char user[32], kf[32], id[64], text[96];
  kmq_wecom_sim_user(u, user, sizeof(user));
  kmq_wecom_sim_kfid(u % s->conf.kfids, kf, sizeof(kf));
  snprintf(id, sizeof(id), "sim-%d-%d", u, seq);
  json_t *it;
  long long t = 1700000000LL + seq;
  if (s->conf.events && seq == 0) {
    it = json_pack("{s:s, s:s, s:I, s:i, s:s, s:{s:s, s:s, s:s, s:s}}",
                   "msgid", id, "open_kfid", kf, "send_time", t, "origin", 4,
                   "msgtype", "event", "event", "event_type", "enter_session",
                   "open_kfid", kf, "external_userid", user, "scene", "sim");
  } else {
    snprintf(text, sizeof(text), "hello #%d from %s", seq, user);
    it = json_pack("{s:s, s:s, s:s, s:I, s:i, s:s, s:{s:s}}", "msgid", id,
                   "open_kfid", kf, "external_userid", user, "send_time", t,
                   "origin", 3, "msgtype", "text", "text", "content", text);
  }
  char *out = it ? json_dumps(it, JSON_COMPACT) : NULL;
  json_decref(it);
  return out;
}

/* @locks_required mu */
static void kmq__sim_new_sync_token(kmq_wecom_sim_t *s, int k, char *buf,
                                    size_t size) {
  kmq__sim_kf_t *kf = &s->kf[k];
  int i = kf->sync_next++ % KMQ__SIM_SYNC_TOKENS;
  snprintf(kf->sync_tokens[i], sizeof(kf->sync_tokens[i]), "SYNC-%d-%lld", k,
           (long long)++s->serial);
  kf->sync_expires[i] =
      kmq__sim_now() + (int64_t)s->conf.sync_token_lifetime_s * 1000;
  snprintf(buf, size, "%s", kf->sync_tokens[i]);
}

int kmq_wecom_sim_add_messages(kmq_wecom_sim_t *s, int customers, int per) {
  int added = 0, ok = 1;
  int kfids = s->conf.kfids;
  char (*tokens)[48] = calloc((size_t)kfids, 48);
  int *touched = calloc((size_t)kfids, sizeof(int));
  if (!tokens || !touched) {
    free(tokens);
    free(touched);
    return -1;
  }
  pthread_mutex_lock(&s->mu);
  if (customers > s->nusers) {
    kmq__sim_user_t *nu = realloc(s->users, sizeof(*nu) * (size_t)customers);
    if (!nu) {
      ok = 0;
      goto out;
    }
    memset(nu + s->nusers, 0, sizeof(*nu) * (size_t)(customers - s->nusers));
    s->users = nu;
    s->nusers = customers;
  }
  for (int i = 0; i < per && ok; i++)
    for (int u = 0; u < customers; u++) {
      kmq__sim_kf_t *kf = &s->kf[u % kfids];
      if (kf->len == kf->cap) {
        int cap = kf->cap ? kf->cap * 2 : 64;
        kmq__sim_msg_t *nl = realloc(kf->log, sizeof(*nl) * (size_t)cap);
        if (!nl) {
          ok = 0;
          break;
        }
        kf->log = nl;
        kf->cap = cap;
      }
      char *item = kmq__sim_item(s, u, s->users[u].sent);
      if (!item) {
        ok = 0;
        break;
      }
      kf->log[kf->len++].item = item;
      s->users[u].sent++;
      s->st.messages++;
      touched[u % kfids] = 1;
      added++;
    }
  for (int k = 0; k < kfids; k++)
    if (touched[k])
      kmq__sim_new_sync_token(s, k, tokens[k], 48);
out:
  pthread_mutex_unlock(&s->mu);
  /* Outside the lock: the callback may call back into the simulator. */
  for (int k = 0; k < kfids && s->conf.notify_cb; k++)
    if (touched[k]) {
      char kfid[32];
      kmq_wecom_sim_kfid(k, kfid, sizeof(kfid));
      s->conf.notify_cb(kfid, tokens[k], s->conf.notify_opaque);
    }
  free(tokens);
  free(touched);
  return ok ? added : -1;
}

int kmq_wecom_sim_add_raw(kmq_wecom_sim_t *s, int k, const char *item) {
  int rc = -1;
  pthread_mutex_lock(&s->mu);
  kmq__sim_kf_t *kf = k >= 0 && k < s->conf.kfids ? &s->kf[k] : NULL;
  if (kf && kf->len == kf->cap) {
    int cap = kf->cap ? kf->cap * 2 : 64;
    kmq__sim_msg_t *nl = realloc(kf->log, sizeof(*nl) * (size_t)cap);
    if (nl)
      kf->log = nl, kf->cap = cap;
  }
  if (kf && kf->len < kf->cap && (kf->log[kf->len].item = strdup(item))) {
    kf->len++;
    s->st.messages++;
    rc = 0;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void kmq_wecom_sim_inject(kmq_wecom_sim_t *s, kmq_wecom_sim_endpoint_t ep,
                          int errcode, int count) {
  pthread_mutex_lock(&s->mu);
  s->inject_code[ep] = errcode;
  s->inject_cnt[ep] = count;
  pthread_mutex_unlock(&s->mu);
}

void kmq_wecom_sim_inject_empty_pages(kmq_wecom_sim_t *s, int count) {
  pthread_mutex_lock(&s->mu);
  s->empty_pages = count;
  pthread_mutex_unlock(&s->mu);
}

void kmq_wecom_sim_revoke_tokens(kmq_wecom_sim_t *s, int errcode) {
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < KMQ__SIM_TOKENS; i++)
    if (s->toks[i].token[0] && !s->toks[i].refused)
      s->toks[i].refused = errcode;
  pthread_mutex_unlock(&s->mu);
}

void kmq_wecom_sim_sync_token(kmq_wecom_sim_t *s, const char *open_kfid,
                              char *buf, size_t size) {
  pthread_mutex_lock(&s->mu);
  int k = kmq__sim_kf_index(open_kfid, s->conf.kfids);
  if (k >= 0)
    kmq__sim_new_sync_token(s, k, buf, size);
  else
    snprintf(buf, size, "%s", "");
  pthread_mutex_unlock(&s->mu);
}

void kmq_wecom_sim_stats(kmq_wecom_sim_t *s, kmq_wecom_sim_stats_t *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->st;
  pthread_mutex_unlock(&s->mu);
}

int kmq_wecom_sim_sent(kmq_wecom_sim_t *s, int u) {
  pthread_mutex_lock(&s->mu);
  int n = u >= 0 && u < s->nusers ? s->users[u].sent : -1;
  pthread_mutex_unlock(&s->mu);
  return n;
}

int kmq_wecom_sim_verify_replies(kmq_wecom_sim_t *s, bool allow_repeats,
                                 char *report, size_t size) {
  int bad = 0;
  if (report && size)
    report[0] = '\0';
  pthread_mutex_lock(&s->mu);
  for (int u = 0; u < s->nusers; u++) {
    const kmq__sim_user_t *us = &s->users[u];
    int next = 0; /* the seq the next new reply must acknowledge */
    const char *why = NULL;
    int at = -1;
    for (int i = 0; i < us->nreplies && !why; i++) {
      int r = us->replies[i];
      if (r == next)
        next++;
      else if (!(allow_repeats && next > 0 && r == next - 1))
        why = "out of order or unknown", at = i;
    }
    if (!why && next != us->sent)
      why = "missing replies", at = next;
    if (why && bad++ == 0 && report)
      snprintf(report, size, "wmSIM%05d: %s at %d (sent %d, %d replies)", u,
               why, at, us->sent, us->nreplies);
  }
  pthread_mutex_unlock(&s->mu);
  return bad;
}

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
  snprintf(t->token, sizeof(t->token), "SIMTOK-%lld-%08x",
           (long long)++s->serial, (unsigned)rand());
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
  snprintf(us->last_msgid, sizeof(us->last_msgid), "%s", id);
  s->st.replies++;
  return json_pack("{s:i, s:s, s:s}", "errcode", 0, "errmsg", "ok", "msgid",
                   id);
}

static enum MHD_Result kmq__sim_handler(void *cls, struct MHD_Connection *conn,
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
  pthread_mutex_unlock(&s->mu);
  json_decref(body);
  return kmq__sim_reply(conn, MHD_HTTP_OK, ans);
}

static void kmq__sim_done(void *cls, struct MHD_Connection *conn,
                          void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)cls, (void)conn, (void)toe;
  kmq__sim_req_t *rq = *con_cls;
  if (rq) {
    free(rq->buf);
    free(rq);
  }
  *con_cls = NULL;
}

/* ---- life cycle --------------------------------------------------------- */

kmq_wecom_sim_t *kmq_wecom_sim_new(const kmq_wecom_sim_conf_t *conf,
                                   char *errstr, size_t errstr_size) {
  if (!conf || conf->kfids < 1 || conf->page_max < 1 ||
      conf->token_lifetime_s < 1 || !conf->corp_id || !conf->corp_secret) {
    snprintf(errstr, errstr_size,
             "kfids, page_max, token_lifetime_s >= 1 and the corp required");
    return NULL;
  }
  kmq_wecom_sim_t *s = calloc(1, sizeof(*s));
  if (!s)
    goto fail_nomem;
  s->conf = *conf;
  if (!(s->kf = calloc((size_t)conf->kfids, sizeof(*s->kf))) ||
      !(s->corp_id = strdup(conf->corp_id)) ||
      !(s->corp_secret = strdup(conf->corp_secret)))
    goto fail_alloc;
  pthread_mutex_init(&s->mu, NULL);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)conf->port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* A thread per connection: one slow client (a test holding a request)
   * does not stall the others. */
  s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
                              MHD_USE_THREAD_PER_CONNECTION |
                              MHD_USE_ERROR_LOG,
                          0, NULL, NULL, kmq__sim_handler, s,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                          MHD_OPTION_NOTIFY_COMPLETED, kmq__sim_done, s,
                          MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
  if (!s->d) {
    snprintf(errstr, errstr_size, "cannot start the HTTP server on port %d",
             conf->port);
    pthread_mutex_destroy(&s->mu);
    goto fail_free;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : conf->port;
  return s;

fail_alloc:
  snprintf(errstr, errstr_size, "out of memory");
fail_free:
  free(s->corp_secret);
  free(s->corp_id);
  free(s->kf);
  free(s);
  return NULL;
fail_nomem:
  snprintf(errstr, errstr_size, "out of memory");
  return NULL;
}

void kmq_wecom_sim_destroy(kmq_wecom_sim_t *s) {
  if (!s)
    return;
  MHD_stop_daemon(s->d);
  for (int k = 0; k < s->conf.kfids; k++) {
    for (int i = 0; i < s->kf[k].len; i++)
      free(s->kf[k].log[i].item);
    free(s->kf[k].log);
  }
  for (int u = 0; u < s->nusers; u++)
    free(s->users[u].replies);
  pthread_mutex_destroy(&s->mu);
  free(s->users);
  free(s->kf);
  free(s->corp_secret);
  free(s->corp_id);
  free(s);
}

int kmq_wecom_sim_port(const kmq_wecom_sim_t *s) { return s->port; }

void kmq_wecom_sim_base_url(const kmq_wecom_sim_t *s, char *buf, size_t size) {
  snprintf(buf, size, "http://127.0.0.1:%d/cgi-bin", s->port);
}
