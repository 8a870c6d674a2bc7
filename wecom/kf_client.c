/* WeCom API client: access_token cache, retries, kf/sync_msg, kf/send_msg
 * (see include/kmq/wecom_api.h for the contract). */
#include "kmq/wecom_api.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/util.h"

#define KMQ__WECOM_TOKEN_MAX 1024 /* WeCom documents at least 512 bytes */

struct kmq_wecom_client_s {
  char *base_url, *corp_id, *corp_secret;
  kmq_wecom_client_conf_t conf; /* its strings point to the copies above */

  /* The token and its refresh deadline. tok_mu is held during a gettoken
   * request: concurrent callers wait for that one fetch instead of each
   * asking WeCom (gettoken has its own rate limit). */
  pthread_mutex_t tok_mu;
  char token[KMQ__WECOM_TOKEN_MAX];
  int64_t token_refresh_at; /* monotonic ms; 0: no token */

  atomic_uint seed; /* jitter: each backoff takes the next value */
  /* Counters only: relaxed, nothing is ordered against them. */
  atomic_llong requests, token_fetches, token_rejected, retries,
      busy_exhausted, sync_token_dropped, errors;
};

/* ---- errors, global set-up ---------------------------------------------- */

const char *kmq_wecom_api_err2str(kmq_wecom_api_err_t err) {
  switch (err) {
#define KMQ__C(name, value, desc)                                              \
  case KMQ_WECOM_API_ERR_##name:                                               \
    return desc;
    KMQ_WECOM_API_ERR_LIST(KMQ__C)
#undef KMQ__C
  }
  return "Unknown error";
}

const char *kmq_wecom_api_err_name(kmq_wecom_api_err_t err) {
  switch (err) {
#define KMQ__C(name, value, desc)                                              \
  case KMQ_WECOM_API_ERR_##name:                                               \
    return #name;
    KMQ_WECOM_API_ERR_LIST(KMQ__C)
#undef KMQ__C
  }
  return "UNKNOWN";
}

kmq_wecom_api_err_t kmq_wecom_global_init(void) {
  return curl_global_init(CURL_GLOBAL_DEFAULT) ? KMQ_WECOM_API_ERR_TRANSPORT
                                               : KMQ_WECOM_API_OK;
}

void kmq_wecom_global_cleanup(void) { curl_global_cleanup(); }

static void kmq__wset(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void kmq__wset(char *errstr, size_t size, const char *fmt, ...) {
  if (!errstr || !size)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, size, fmt, ap);
  va_end(ap);
}

/* Replaces every occurrence of secret in s by "***", in place (s only
 * shrinks). Secrets shorter than 4 bytes are not searched: they would blank
 * ordinary words, and WeCom's are far longer. */
static void kmq__redact(char *s, const char *secret) {
  size_t n = secret ? strlen(secret) : 0;
  if (n < 4)
    return;
  char *p;
  while ((p = strstr(s, secret))) {
    memcpy(p, "***", 3);
    memmove(p + 3, p + n, strlen(p + n) + 1);
  }
}

/* ---- life cycle --------------------------------------------------------- */

void kmq_wecom_client_conf_init(kmq_wecom_client_conf_t *conf) {
  memset(conf, 0, sizeof(*conf));
  conf->base_url = "https://qyapi.weixin.qq.com/cgi-bin";
  conf->timeout_ms = 10000;
  conf->max_attempts = 5;
  conf->backoff_ms = 200;
  conf->backoff_max_ms = 5000;
  conf->refresh_margin_s = 300;
  conf->max_response_bytes = 4u << 20;
}

kmq_wecom_client_t *kmq_wecom_client_new(const kmq_wecom_client_conf_t *conf,
                                         char *errstr, size_t errstr_size) {
  if (!conf || !conf->base_url || !*conf->base_url || !conf->corp_id ||
      !*conf->corp_id || !conf->corp_secret || !*conf->corp_secret) {
    kmq__wset(errstr, errstr_size,
              "base_url, corp_id and corp_secret are required");
    return NULL;
  }
  if (conf->timeout_ms <= 0 || conf->max_attempts < 1 ||
      conf->backoff_ms < 0 || conf->backoff_max_ms < conf->backoff_ms ||
      conf->refresh_margin_s < 0 || conf->max_response_bytes < 64) {
    kmq__wset(errstr, errstr_size,
              "timeout_ms > 0, max_attempts >= 1, 0 <= backoff_ms <= "
              "backoff_max_ms, refresh_margin_s >= 0, max_response_bytes "
              ">= 64 required");
    return NULL;
  }
  kmq_wecom_client_t *c = calloc(1, sizeof(*c));
  if (!c)
    goto fail_nomem;
  c->conf = *conf;
  if (!(c->base_url = strdup(conf->base_url)) ||
      !(c->corp_id = strdup(conf->corp_id)) ||
      !(c->corp_secret = strdup(conf->corp_secret)))
    goto fail_strings;
  /* Drop one trailing '/' so that paths join with exactly one. */
  size_t bl = strlen(c->base_url);
  if (bl && c->base_url[bl - 1] == '/')
    c->base_url[bl - 1] = '\0';
  c->conf.base_url = c->base_url;
  c->conf.corp_id = c->corp_id;
  c->conf.corp_secret = c->corp_secret;
  if (pthread_mutex_init(&c->tok_mu, NULL))
    goto fail_strings;
  atomic_init(&c->seed, (unsigned)kmq__mono_ms() ^ (unsigned)(uintptr_t)c);
  return c;

fail_strings:
  free(c->corp_secret);
  free(c->corp_id);
  free(c->base_url);
  free(c);
fail_nomem:
  kmq__wset(errstr, errstr_size, "out of memory");
  return NULL;
}

void kmq_wecom_client_destroy(kmq_wecom_client_t *c) {
  if (!c)
    return;
  pthread_mutex_destroy(&c->tok_mu);
  /* The secret does not outlive the client in freed memory. */
  memset(c->corp_secret, 0, strlen(c->corp_secret));
  memset(c->token, 0, sizeof(c->token));
  free(c->corp_secret);
  free(c->corp_id);
  free(c->base_url);
  free(c);
}

void kmq_wecom_client_drop_token(kmq_wecom_client_t *c) {
  pthread_mutex_lock(&c->tok_mu);
  c->token[0] = '\0';
  c->token_refresh_at = 0;
  pthread_mutex_unlock(&c->tok_mu);
}

void kmq_wecom_client_stats(const kmq_wecom_client_t *c,
                            kmq_wecom_client_stats_t *o) {
  kmq_wecom_client_t *m = (kmq_wecom_client_t *)c; /* atomics are not const */
  o->requests = atomic_load_explicit(&m->requests, memory_order_relaxed);
  o->token_fetches =
      atomic_load_explicit(&m->token_fetches, memory_order_relaxed);
  o->token_rejected =
      atomic_load_explicit(&m->token_rejected, memory_order_relaxed);
  o->retries = atomic_load_explicit(&m->retries, memory_order_relaxed);
  o->busy_exhausted =
      atomic_load_explicit(&m->busy_exhausted, memory_order_relaxed);
  o->sync_token_dropped =
      atomic_load_explicit(&m->sync_token_dropped, memory_order_relaxed);
  o->errors = atomic_load_explicit(&m->errors, memory_order_relaxed);
}

#define KMQ__INC(c, f)                                                         \
  atomic_fetch_add_explicit(&(c)->f, 1, memory_order_relaxed)

/* ---- one HTTP request --------------------------------------------------- */

typedef struct {
  char *buf;
  size_t len, cap, max;
  int over;
} kmq__body_t;

static size_t kmq__write_cb(char *data, size_t sz, size_t n, void *opaque) {
  kmq__body_t *b = opaque;
  size_t add = sz * n;
  if (b->len + add > b->max) {
    b->over = 1;
    return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
  }
  if (b->len + add + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + add + 1)
      cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (!nb)
      return 0;
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, data, add);
  b->len += add;
  b->buf[b->len] = '\0';
  return add;
}

/* GET (body NULL) or POST JSON to base_url/path?query, where query is
 * already escaped. On KMQ_WECOM_API_OK *out is the response object with an
 * integer errcode (0 when WeCom omitted it, as gettoken may). Never puts
 * the URL (it holds the token or secret) into errstr. */
static kmq_wecom_api_err_t kmq__http(kmq_wecom_client_t *c, const char *path,
                                     const char *query, const char *tok,
                                     const char *body, json_t **out,
                                     kmq_wecom_result_t *res, char *errstr,
                                     size_t errstr_size) {
  kmq_wecom_api_err_t err = KMQ_WECOM_API_OK;
  kmq__body_t rb = {.max = c->conf.max_response_bytes};
  struct curl_slist *hdrs = NULL;
  char *url = NULL;
  *out = NULL;
  size_t ulen = strlen(c->base_url) + strlen(path) + strlen(query) + 3;
  CURL *h = curl_easy_init();
  if (!h || !(url = malloc(ulen))) {
    err = KMQ_WECOM_API_ERR_NOMEM;
    kmq__wset(errstr, errstr_size, "%s: out of memory", path);
    goto done;
  }
  snprintf(url, ulen, "%s/%s?%s", c->base_url, path, query);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->conf.timeout_ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->conf.timeout_ms);
  /* No signals: the call may run on any thread of a threaded process. */
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kmq__write_cb);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &rb);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  if (body) {
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  }
  KMQ__INC(c, requests);
  if (res)
    res->attempts++;
  CURLcode cc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (res)
    res->http_status = status;
  if (cc != CURLE_OK) {
    err = rb.over ? KMQ_WECOM_API_ERR_TOO_LARGE
          : cc == CURLE_OPERATION_TIMEDOUT ? KMQ_WECOM_API_ERR_TIMED_OUT
                                           : KMQ_WECOM_API_ERR_TRANSPORT;
    /* curl_easy_strerror is a fixed text per code: it carries no URL. */
    if (rb.over)
      kmq__wset(errstr, errstr_size, "%s: response over %zu bytes", path,
                rb.max);
    else
      kmq__wset(errstr, errstr_size, "%s: %s", path, curl_easy_strerror(cc));
    goto done;
  }
  if (status != 200) {
    err = KMQ_WECOM_API_ERR_HTTP;
    kmq__wset(errstr, errstr_size, "%s: HTTP status %ld", path, status);
    goto done;
  }
  json_error_t je;
  json_t *root = rb.buf ? json_loadb(rb.buf, rb.len, 0, &je) : NULL;
  json_t *ec = root ? json_object_get(root, "errcode") : NULL;
  if (!json_is_object(root) || (ec && !json_is_integer(ec))) {
    json_decref(root);
    err = KMQ_WECOM_API_ERR_BAD_RESPONSE;
    kmq__wset(errstr, errstr_size, "%s: response is not a WeCom JSON object",
              path);
    goto done;
  }
  if (res) {
    const char *em = json_string_value(json_object_get(root, "errmsg"));
    res->errcode = ec ? (int)json_integer_value(ec) : 0;
    snprintf(res->errmsg, sizeof(res->errmsg), "%s", em ? em : "");
    kmq__redact(res->errmsg, c->corp_secret);
    kmq__redact(res->errmsg, tok);
  }
  *out = root;

done:
  curl_slist_free_all(hdrs);
  if (h)
    curl_easy_cleanup(h);
  free(url);
  free(rb.buf);
  return err;
}

static int kmq__errcode(const json_t *r) {
  return (int)json_integer_value(json_object_get(r, "errcode"));
}

static void kmq__api_errstr(const char *path, const json_t *r,
                            const kmq_wecom_client_t *c, const char *tok,
                            char *errstr,
                            size_t errstr_size) {
  char msg[256];
  const char *em = json_string_value(json_object_get(r, "errmsg"));
  snprintf(msg, sizeof(msg), "%s", em ? em : "");
  kmq__redact(msg, c->corp_secret);
  kmq__redact(msg, tok);
  kmq__wset(errstr, errstr_size, "%s: errcode %d: %s", path, kmq__errcode(r),
            msg);
}

/* ---- token -------------------------------------------------------------- */

/* Copies a usable token into out. When `rejected` is a token WeCom just
 * refused and the cache still holds it, fetches a new one; a cache that
 * already moved on (another thread refreshed) is used as it is. */
static kmq_wecom_api_err_t kmq__token(kmq_wecom_client_t *c,
                                      const char *rejected, char *out,
                                      kmq_wecom_result_t *res, char *errstr,
                                      size_t errstr_size) {
  kmq_wecom_api_err_t err = KMQ_WECOM_API_OK;
  pthread_mutex_lock(&c->tok_mu);
  int64_t now = kmq__mono_ms();
  int stale = !c->token[0] || now >= c->token_refresh_at ||
              (rejected && !strcmp(rejected, c->token));
  if (stale) {
    char *id = curl_easy_escape(NULL, c->corp_id, 0);
    char *sec = curl_easy_escape(NULL, c->corp_secret, 0);
    char *q = NULL;
    json_t *r = NULL;
    /* gettoken's own answer must not overwrite the caller's result: keep
     * only its attempt out of the call's count. */
    kmq_wecom_result_t tres = {0};
    if (!id || !sec ||
        !(q = malloc(strlen(id) + strlen(sec) + 32))) {
      err = KMQ_WECOM_API_ERR_NOMEM;
      kmq__wset(errstr, errstr_size, "gettoken: out of memory");
    } else {
      sprintf(q, "corpid=%s&corpsecret=%s", id, sec);
      err = kmq__http(c, "gettoken", q, NULL, NULL, &r, &tres, errstr,
                      errstr_size);
    }
    if (!err) {
      const char *tok = json_string_value(json_object_get(r, "access_token"));
      json_int_t exp = json_integer_value(json_object_get(r, "expires_in"));
      if (kmq__errcode(r)) {
        kmq__api_errstr("gettoken", r, c, NULL, errstr, errstr_size);
        err = KMQ_WECOM_API_ERR_TOKEN;
        if (res) {
          res->errcode = tres.errcode;
          memcpy(res->errmsg, tres.errmsg, sizeof(res->errmsg));
        }
      } else if (!tok || !*tok || strlen(tok) >= sizeof(c->token) ||
                 exp <= 0) {
        kmq__wset(errstr, errstr_size,
                  "gettoken: no access_token / expires_in in the answer");
        err = KMQ_WECOM_API_ERR_BAD_RESPONSE;
      } else {
        int margin = c->conf.refresh_margin_s;
        if (margin > exp / 4)
          margin = (int)(exp / 4);
        strcpy(c->token, tok);
        c->token_refresh_at = now + ((int64_t)exp - margin) * 1000;
        KMQ__INC(c, token_fetches);
      }
    } else if (err != KMQ_WECOM_API_ERR_NOMEM) {
      err = KMQ_WECOM_API_ERR_TOKEN;
    }
    if (err) {
      c->token[0] = '\0';
      c->token_refresh_at = 0;
    }
    json_decref(r);
    free(q);
    curl_free(sec);
    curl_free(id);
  }
  if (!err)
    strcpy(out, c->token);
  pthread_mutex_unlock(&c->tok_mu);
  return err;
}

/* ---- one API call with its retries -------------------------------------- */

static void kmq__backoff(kmq_wecom_client_t *c, int retry) {
  int64_t cap = c->conf.backoff_ms;
  for (int i = 0; i < retry && cap < c->conf.backoff_max_ms; i++)
    cap *= 2;
  if (cap > c->conf.backoff_max_ms)
    cap = c->conf.backoff_max_ms;
  /* Full jitter (a uniform wait in [cap/2, cap]) so that callers that were
   * refused together do not come back together. */
  unsigned s = atomic_fetch_add_explicit(&c->seed, 2654435761u,
                                         memory_order_relaxed);
  int64_t ms = cap / 2 + (cap ? (int64_t)(rand_r(&s) % (cap / 2 + 1)) : 0);
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts))
    ;
}

#define KMQ__CALL_SYNC 1 /* 95007 handling applies */

/* POSTs body (an object; the call may remove "token" from it) to path with
 * the access_token, retrying as the header says. On KMQ_WECOM_API_OK *out is
 * WeCom's errcode-0 answer. */
static kmq_wecom_api_err_t kmq__call(kmq_wecom_client_t *c, const char *path,
                                     json_t *body, int flags, json_t **out,
                                     kmq_wecom_result_t *res, char *errstr,
                                     size_t errstr_size) {
  kmq_wecom_api_err_t err;
  char token[KMQ__WECOM_TOKEN_MAX], rejected[KMQ__WECOM_TOKEN_MAX];
  int busy = 0, refreshed = 0, dropped = 0, have_rejected = 0;
  json_t *r = NULL;
  *out = NULL;
  for (;;) {
    if ((err = kmq__token(c, have_rejected ? rejected : NULL, token, res,
                          errstr, errstr_size)))
      break;
    char *q = NULL, *et = curl_easy_escape(NULL, token, 0);
    char *js = json_dumps(body, JSON_COMPACT);
    if (et && (q = malloc(strlen(et) + 16)))
      sprintf(q, "access_token=%s", et);
    if (!q || !js) {
      err = KMQ_WECOM_API_ERR_NOMEM;
      kmq__wset(errstr, errstr_size, "%s: out of memory", path);
    } else {
      err = kmq__http(c, path, q, token, js, &r, res, errstr, errstr_size);
    }
    curl_free(et);
    free(q);
    free(js);
    if (err)
      break;
    int code = kmq__errcode(r);
    if (!code) {
      *out = r;
      return KMQ_WECOM_API_OK;
    }
    if (code == KMQ_WECOM_ERRCODE_INVALID_TOKEN ||
        code == KMQ_WECOM_ERRCODE_TOKEN_EXPIRED) {
      KMQ__INC(c, token_rejected);
      if (!refreshed) { /* once: a second refusal is not an expiry */
        refreshed = 1;
        have_rejected = 1;
        strcpy(rejected, token);
        if (res)
          res->token_refreshes++;
        json_decref(r);
        r = NULL;
        continue;
      }
      kmq__api_errstr(path, r, c, token, errstr, errstr_size);
      err = KMQ_WECOM_API_ERR_TOKEN;
      break;
    }
    if ((flags & KMQ__CALL_SYNC) && code == KMQ_WECOM_ERRCODE_SYNC_TOKEN &&
        !dropped && json_object_get(body, "token")) {
      KMQ__INC(c, sync_token_dropped);
      dropped = 1;
      if (res)
        res->sync_token_dropped = true;
      json_object_del(body, "token");
      json_decref(r);
      r = NULL;
      continue;
    }
    if (code == KMQ_WECOM_ERRCODE_BUSY ||
        code == KMQ_WECOM_ERRCODE_FREQ_LIMIT ||
        code == KMQ_WECOM_ERRCODE_QPS_LIMIT) {
      if (++busy < c->conf.max_attempts) {
        KMQ__INC(c, retries);
        json_decref(r);
        r = NULL;
        kmq__backoff(c, busy - 1);
        continue;
      }
      KMQ__INC(c, busy_exhausted);
      kmq__api_errstr(path, r, c, token, errstr, errstr_size);
      err = KMQ_WECOM_API_ERR_BUSY;
      break;
    }
    kmq__api_errstr(path, r, c, token, errstr, errstr_size);
    err = KMQ_WECOM_API_ERR_API;
    break;
  }
  json_decref(r);
  KMQ__INC(c, errors);
  return err;
}

/* ---- kf/sync_msg, kf/send_msg ------------------------------------------- */

void kmq_wecom_sync_page_clear(kmq_wecom_sync_page_t *page) {
  if (!page)
    return;
  json_decref(page->_root);
  memset(page, 0, sizeof(*page));
}

kmq_wecom_api_err_t kmq_wecom_sync_msg(kmq_wecom_client_t *c,
                                       const kmq_wecom_sync_req_t *req,
                                       kmq_wecom_sync_page_t *page,
                                       kmq_wecom_result_t *res, char *errstr,
                                       size_t errstr_size) {
  if (page)
    memset(page, 0, sizeof(*page));
  if (res)
    memset(res, 0, sizeof(*res));
  if (!c || !req || !page || !req->open_kfid || !*req->open_kfid ||
      req->limit < 0 || req->limit > 1000) {
    kmq__wset(errstr, errstr_size,
              "kf/sync_msg: client, page and open_kfid required, limit "
              "0..1000");
    return KMQ_WECOM_API_ERR_INVALID_ARG;
  }
  json_t *body = json_object(), *r = NULL;
  if (!body ||
      json_object_set_new(body, "open_kfid", json_string(req->open_kfid)) ||
      (req->cursor && *req->cursor &&
       json_object_set_new(body, "cursor", json_string(req->cursor))) ||
      (req->token && *req->token &&
       json_object_set_new(body, "token", json_string(req->token))) ||
      json_object_set_new(body, "limit",
                          json_integer(req->limit ? req->limit : 1000)) ||
      json_object_set_new(body, "voice_format",
                          json_integer(req->voice_format))) {
    json_decref(body);
    kmq__wset(errstr, errstr_size, "kf/sync_msg: out of memory");
    return KMQ_WECOM_API_ERR_NOMEM;
  }
  kmq_wecom_api_err_t err = kmq__call(c, "kf/sync_msg", body, KMQ__CALL_SYNC,
                                      &r,
                                  res, errstr, errstr_size);
  json_decref(body);
  if (err)
    return err;
  json_t *list = json_object_get(r, "msg_list");
  json_t *cur = json_object_get(r, "next_cursor");
  json_t *more = json_object_get(r, "has_more");
  if (!json_is_array(list) || (cur && !json_is_string(cur)) ||
      (more && !json_is_integer(more) && !json_is_boolean(more))) {
    json_decref(r);
    KMQ__INC(c, errors);
    kmq__wset(errstr, errstr_size,
              "kf/sync_msg: msg_list / next_cursor / has_more malformed");
    return KMQ_WECOM_API_ERR_BAD_RESPONSE;
  }
  page->_root = r;
  page->msg_list = list;
  page->next_cursor = cur ? json_string_value(cur) : "";
  page->has_more = json_is_true(more) || json_integer_value(more) != 0;
  return KMQ_WECOM_API_OK;
}

kmq_wecom_api_err_t kmq_wecom_send_text(kmq_wecom_client_t *c,
                                        const char *touser,
                                        const char *open_kfid, const char *text,
                                        const char *msgid, char *msgid_out,
                                        size_t msgid_out_size,
                                        kmq_wecom_result_t *res, char *errstr,
                                        size_t errstr_size) {
  if (res)
    memset(res, 0, sizeof(*res));
  if (msgid_out && msgid_out_size)
    msgid_out[0] = '\0';
  if (!c || !touser || !*touser || !open_kfid || !*open_kfid || !text) {
    kmq__wset(errstr, errstr_size,
              "kf/send_msg: client, touser, open_kfid and text required");
    return KMQ_WECOM_API_ERR_INVALID_ARG;
  }
  json_t *body = json_pack("{s:s, s:s, s:s, s:{s:s}}", "touser", touser,
                           "open_kfid", open_kfid, "msgtype", "text", "text",
                           "content", text);
  if (body && msgid && *msgid &&
      json_object_set_new(body, "msgid", json_string(msgid))) {
    json_decref(body);
    body = NULL;
  }
  if (!body) { /* json_pack fails on bad UTF-8 as well as on no memory */
    kmq__wset(errstr, errstr_size,
              "kf/send_msg: cannot encode (invalid UTF-8 or no memory)");
    return KMQ_WECOM_API_ERR_INVALID_ARG;
  }
  json_t *r = NULL;
  kmq_wecom_api_err_t err =
      kmq__call(c, "kf/send_msg", body, 0, &r, res, errstr, errstr_size);
  json_decref(body);
  if (err)
    return err;
  const char *id = json_string_value(json_object_get(r, "msgid"));
  if (msgid_out && msgid_out_size)
    snprintf(msgid_out, msgid_out_size, "%s", id ? id : "");
  json_decref(r);
  return KMQ_WECOM_API_OK;
}
