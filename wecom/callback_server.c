/* WeCom callback endpoint (contract in include/kmq/wecom_callback.h).
 *
 * libmicrohttpd runs one thread per connection (bounded by
 * max_connections) because a POST blocks until its sync request's delivery
 * report: a pool thread would stall every other connection it serves. */
#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/producer.h"
#include "kmq/wecom_callback.h"
#include "wecom/wecom_int.h"

struct kmq_wecom_callback_s {
  kmq_wecom_crypt_t *crypt;
  kmq__replay_t *replay;
  kmq_producer_t *producer;
  struct MHD_Daemon *mhd;
  char *path, *topic;
  size_t max_body;
  int skew_s, delivery_timeout_ms;
  uint16_t port;
  kmq_wecom_clock_cb *clock;
  void *clock_opaque;
  kmq_wecom_log_cb *log;
  void *log_opaque;
  /* Counters only: relaxed increments, read by _stats() as a snapshot. */
  struct {
    atomic_llong verified, produced, ignored, bad_signature, stale, replayed,
        malformed, too_large, not_found, bad_method, unavailable;
  } st;
};

/* One request's state between libmicrohttpd's calls. */
typedef struct {
  bool post;
  size_t len;
  char *body; /* max_body + 1 bytes, POST only */
} kmq__req_t;

/* A POST's wait for its delivery report. Two references, the handler's and
 * the delivery callback's: the handler may give up at its deadline while
 * the report is still to come, so the last one out frees it. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  kmq_delivery_status_t status;
  atomic_int refs;
} kmq__waiter_t;

static void kmq__waiter_unref(kmq__waiter_t *w) {
  /* acq_rel: the last owner must see the other's writes before freeing. */
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
    return;
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

static void kmq__log(kmq_wecom_callback_t *cb, int level, const char *fmt,
                     ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (cb->log)
    cb->log(level, msg, cb->log_opaque);
  else
    fprintf(stderr, "kmq-wecom: %s\n", msg);
}

static int64_t kmq__now(kmq_wecom_callback_t *cb) {
  return cb->clock ? cb->clock(cb->clock_opaque) : (int64_t)time(NULL);
}

static void kmq__count(atomic_llong *c) {
  atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static enum MHD_Result kmq__respond(struct MHD_Connection *conn,
                                    unsigned status, const char *body,
                                    size_t len, const char *allow) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                          "text/plain; charset=utf-8");
  if (allow)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* A refusal: counted, logged without secrets, answered with its status
 * and a short reason (the code's name, nothing about the configuration). */
static enum MHD_Result kmq__refuse(kmq_wecom_callback_t *cb,
                                   struct MHD_Connection *conn,
                                   const char *method, unsigned status,
                                   atomic_llong *counter, const char *what,
                                   const char *why) {
  kmq__count(counter);
  kmq__log(cb, status >= 500 ? 3 : 4, "%s refused with %u %s: %s", method,
           status, what, why);
  char body[128];
  int n = snprintf(body, sizeof(body), "%u %s\n", status, what);
  return kmq__respond(conn, status, body, (size_t)n, NULL);
}

/* The status a crypto refusal is answered with. */
static enum MHD_Result kmq__refuse_err(kmq_wecom_callback_t *cb,
                                       struct MHD_Connection *conn,
                                       const char *method,
                                       kmq_wecom_err_t err, const char *why) {
  const char *name = kmq_wecom_err_name(err);
  switch (err) {
  case KMQ_WECOM_ERR_VALIDATE_SIGNATURE:
    return kmq__refuse(cb, conn, method, MHD_HTTP_UNAUTHORIZED,
                       &cb->st.bad_signature, name, why);
  case KMQ_WECOM_ERR_STALE_TIMESTAMP:
    return kmq__refuse(cb, conn, method, MHD_HTTP_FORBIDDEN, &cb->st.stale,
                       name, why);
  case KMQ_WECOM_ERR_REPLAYED:
    return kmq__refuse(cb, conn, method, MHD_HTTP_CONFLICT, &cb->st.replayed,
                       name, why);
  case KMQ_WECOM_ERR_NOMEM:
  case KMQ_WECOM_ERR_COMPUTE_SIGNATURE:
    return kmq__refuse(cb, conn, method, MHD_HTTP_SERVICE_UNAVAILABLE,
                       &cb->st.unavailable, name, why);
  default:
    return kmq__refuse(cb, conn, method, MHD_HTTP_BAD_REQUEST,
                       &cb->st.malformed, name, why);
  }
}

static const char *kmq__arg(struct MHD_Connection *conn, const char *name) {
  return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
}

/* Authenticated (signature, skew), then recorded in the replay cache. */
static kmq_wecom_err_t kmq__admit(kmq_wecom_callback_t *cb, const char *sig,
                                  const char *ts, const char *nonce,
                                  const char *data, char *errstr,
                                  size_t errstr_size) {
  int64_t now = kmq__now(cb), t = 0;
  kmq_wecom_err_t err = kmq__wecom_authenticate(cb->crypt, sig, ts, nonce,
                                                data, now, errstr, errstr_size);
  if (err)
    return err;
  kmq__wecom_parse_ts(ts, &t); /* checked by the skew test (skew > 0) */
  err = kmq__replay_add(cb->replay, sig, t + cb->skew_s, now);
  if (err == KMQ_WECOM_ERR_REPLAYED)
    snprintf(errstr, errstr_size, "(timestamp, nonce, msg_signature) seen");
  else if (err)
    snprintf(errstr, errstr_size, "replay cache full");
  return err;
}

static enum MHD_Result kmq__get(kmq_wecom_callback_t *cb,
                                struct MHD_Connection *conn) {
  const char *sig = kmq__arg(conn, "msg_signature"),
             *ts = kmq__arg(conn, "timestamp"), *nonce = kmq__arg(conn, "nonce"),
             *echo = kmq__arg(conn, "echostr");
  char errstr[256], echostr[KMQ_WECOM_MAX_BODY + 1], *plain = NULL;
  size_t len = 0;
  if (!sig || !ts || !nonce || !echo)
    return kmq__refuse(cb, conn, "GET", MHD_HTTP_BAD_REQUEST,
                       &cb->st.malformed, "MISSING_PARAMETER",
                       "msg_signature, timestamp, nonce or echostr missing");
  size_t n = strnlen(echo, sizeof(echostr));
  if (n == sizeof(echostr))
    return kmq__refuse_err(cb, conn, "GET", KMQ_WECOM_ERR_ILLEGAL_BUFFER,
                           "echostr too long");
  /* An unescaped '+' of the base64 may have been decoded to a space on the
   * way; base64 has no spaces, so this only undoes that. */
  for (size_t i = 0; i <= n; i++)
    echostr[i] = echo[i] == ' ' ? '+' : echo[i];
  kmq_wecom_err_t err =
      kmq__admit(cb, sig, ts, nonce, echostr, errstr, sizeof(errstr));
  if (!err)
    err = kmq__wecom_decrypt_b64(cb->crypt, echostr, &plain, &len, errstr,
                                 sizeof(errstr));
  if (err)
    return kmq__refuse_err(cb, conn, "GET", err, errstr);
  kmq__count(&cb->st.verified);
  enum MHD_Result r = kmq__respond(conn, MHD_HTTP_OK, plain, len, NULL);
  free(plain);
  return r;
}

static void kmq__delivered(const kmq_delivery_t *d, void *opaque) {
  (void)opaque;
  kmq__waiter_t *w = d->opaque;
  pthread_mutex_lock(&w->lock);
  w->status = d->status;
  w->done = true;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  kmq__waiter_unref(w);
}

/* Produces the sync request and waits for its report: true when
 * DELIVERED within delivery_timeout_ms. */
static bool kmq__produce_sync(kmq_wecom_callback_t *cb,
                              const kmq_wecom_callback_msg_t *m, char *errstr,
                              size_t errstr_size) {
  json_t *o = json_pack("{s:s, s:s, s:I}", "open_kfid", m->open_kfid, "token",
                        m->token, "create_time", (json_int_t)m->create_time);
  char *value = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  kmq__waiter_t *w = calloc(1, sizeof(*w));
  if (!value || !w) {
    free(value);
    free(w);
    snprintf(errstr, errstr_size, "out of memory");
    return false;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&w->lock, NULL);
  atomic_init(&w->refs, 2);
  kmq_produce_msg_t msg = {.topic = cb->topic,
                           .key = m->open_kfid,
                           .key_len = strlen(m->open_kfid),
                           .value = value,
                           .value_len = strlen(value),
                           .msg_type = "sync_request",
                           .opaque = w};
  rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
  kmq_err_t err = kmq_producer_send(cb->producer, &msg, &kerr);
  free(value);
  if (err) {
    snprintf(errstr, errstr_size, "send: %s (%s)", kmq_err2str(err),
             rd_kafka_err2str(kerr));
    kmq__waiter_unref(w); /* no report will come: both references */
    kmq__waiter_unref(w);
    return false;
  }
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += cb->delivery_timeout_ms / 1000;
  dl.tv_nsec += (long)(cb->delivery_timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&w->lock);
  while (!w->done)
    if (pthread_cond_timedwait(&w->cond, &w->lock, &dl))
      break;
  bool done = w->done;
  kmq_delivery_status_t status = w->status;
  pthread_mutex_unlock(&w->lock);
  kmq__waiter_unref(w);
  if (!done)
    snprintf(errstr, errstr_size, "no delivery report within %d ms",
             cb->delivery_timeout_ms);
  else if (status != KMQ_DELIVERY_DELIVERED)
    snprintf(errstr, errstr_size, "not delivered (status %d)", (int)status);
  return done && status == KMQ_DELIVERY_DELIVERED;
}

static enum MHD_Result kmq__post(kmq_wecom_callback_t *cb,
                                 struct MHD_Connection *conn, kmq__req_t *rq) {
  const char *sig = kmq__arg(conn, "msg_signature"),
             *ts = kmq__arg(conn, "timestamp"), *nonce = kmq__arg(conn, "nonce");
  char errstr[256], *enc = NULL, *xml = NULL;
  size_t xlen = 0;
  kmq_wecom_callback_msg_t m;
  if (!sig || !ts || !nonce)
    return kmq__refuse(cb, conn, "POST", MHD_HTTP_BAD_REQUEST,
                       &cb->st.malformed, "MISSING_PARAMETER",
                       "msg_signature, timestamp or nonce missing");
  /* The outer XML is parsed (bounded, no DOCTYPE) only to find what the
   * signature covers; nothing is decrypted before it checks. */
  kmq_wecom_err_t err = kmq__wecom_outer_parse(rq->body, rq->len, &enc,
                                               errstr, sizeof(errstr));
  if (!err)
    err = kmq__admit(cb, sig, ts, nonce, enc, errstr, sizeof(errstr));
  if (!err)
    err = kmq__wecom_decrypt_b64(cb->crypt, enc, &xml, &xlen, errstr,
                                 sizeof(errstr));
  if (!err)
    err = kmq__wecom_inner_parse(xml, xlen, &m, errstr, sizeof(errstr));
  free(xml);
  free(enc);
  if (err)
    return kmq__refuse_err(cb, conn, "POST", err, errstr);
  if (strcmp(m.msg_type, "event") || strcmp(m.event, "kf_msg_or_event")) {
    kmq__count(&cb->st.ignored);
    kmq__log(cb, 6, "POST: MsgType \"%s\" Event \"%s\" ignored", m.msg_type,
             m.event);
    return kmq__respond(conn, MHD_HTTP_OK, "success", 7, NULL);
  }
  if (!m.open_kfid[0] || !m.token[0])
    return kmq__refuse(cb, conn, "POST", MHD_HTTP_BAD_REQUEST,
                       &cb->st.malformed, "PARSE_XML",
                       "kf_msg_or_event without OpenKfId or Token");
  if (!kmq__produce_sync(cb, &m, errstr, sizeof(errstr))) {
    /* WeCom retries a 5xx with the same signature: let it through. */
    kmq__replay_forget(cb->replay, sig);
    return kmq__refuse(cb, conn, "POST", MHD_HTTP_SERVICE_UNAVAILABLE,
                       &cb->st.unavailable, "NOT_DELIVERED", errstr);
  }
  kmq__count(&cb->st.produced);
  return kmq__respond(conn, MHD_HTTP_OK, "success", 7, NULL);
}

/* @locality the connection's server thread. */
static enum MHD_Result kmq__access(void *cls, struct MHD_Connection *conn,
                                   const char *url, const char *method,
                                   const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls) {
  kmq_wecom_callback_t *cb = cls;
  kmq__req_t *rq = *con_cls;
  (void)version;
  if (!rq) { /* headers only so far: refuse before reading any body */
    if (strcmp(url, cb->path))
      return kmq__refuse(cb, conn, method, MHD_HTTP_NOT_FOUND,
                         &cb->st.not_found, "NOT_FOUND", "unknown path");
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!post && strcmp(method, MHD_HTTP_METHOD_GET)) {
      kmq__count(&cb->st.bad_method);
      kmq__log(cb, 4, "%s refused with 405", method);
      return kmq__respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "405 METHOD_NOT_ALLOWED\n", 23, "GET, POST");
    }
    const char *cl = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (post && cl && strtoull(cl, NULL, 10) > cb->max_body)
      return kmq__refuse(cb, conn, method, MHD_HTTP_CONTENT_TOO_LARGE,
                         &cb->st.too_large, "TOO_LARGE", "Content-Length");
    if (!(rq = calloc(1, sizeof(*rq))) ||
        (post && !(rq->body = malloc(cb->max_body + 1)))) {
      free(rq);
      return MHD_NO;
    }
    rq->post = post;
    *con_cls = rq;
    return MHD_YES;
  }
  if (*upload_size) {
    if (!rq->post) {
      kmq__count(&cb->st.malformed);
      kmq__log(cb, 4, "GET with a body, connection closed");
      return MHD_NO;
    }
    if (*upload_size > cb->max_body - rq->len) {
      /* Only a chunked body gets here (a Content-Length was checked):
       * libmicrohttpd cannot answer in the middle of an upload, so the
       * connection is closed. */
      kmq__count(&cb->st.too_large);
      kmq__log(cb, 4, "%s: body over %zu bytes, connection closed", method,
               cb->max_body);
      return MHD_NO;
    }
    memcpy(rq->body + rq->len, upload, *upload_size);
    rq->len += *upload_size;
    *upload_size = 0;
    return MHD_YES;
  }
  return rq->post ? kmq__post(cb, conn, rq) : kmq__get(cb, conn);
}

static void kmq__completed(void *cls, struct MHD_Connection *conn,
                           void **con_cls, enum MHD_RequestTerminationCode t) {
  (void)cls, (void)conn, (void)t;
  kmq__req_t *rq = *con_cls;
  if (rq) {
    free(rq->body);
    free(rq);
    *con_cls = NULL;
  }
}

kmq_wecom_callback_t *
kmq_wecom_callback_new(const kmq_wecom_callback_opts_t *o,
                       const kmq_conf_t *kafka_conf, char *errstr,
                       size_t errstr_size) {
  kmq_wecom_callback_t *cb = calloc(1, sizeof(*cb));
  kmq_conf_t *conf = NULL;
  if (!cb) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  if (!o->sync_topic || !*o->sync_topic) {
    snprintf(errstr, errstr_size, "no sync topic");
    goto fail;
  }
  cb->skew_s = o->max_skew_s ? o->max_skew_s : KMQ_WECOM_DEFAULT_MAX_SKEW_S;
  if (cb->skew_s < 0) {
    snprintf(errstr, errstr_size,
             "max skew must be > 0: it is also the replay window");
    goto fail;
  }
  cb->max_body = o->max_body ? o->max_body : 16384;
  if (cb->max_body > KMQ_WECOM_MAX_BODY) {
    snprintf(errstr, errstr_size, "max body over %d", KMQ_WECOM_MAX_BODY);
    goto fail;
  }
  cb->delivery_timeout_ms =
      o->delivery_timeout_ms > 0 ? o->delivery_timeout_ms : 10000;
  cb->clock = o->clock, cb->clock_opaque = o->clock_opaque;
  cb->log = o->log, cb->log_opaque = o->log_opaque;
  const char *path = o->path ? o->path : "/wecom/callback";
  if (path[0] != '/') {
    snprintf(errstr, errstr_size, "path must start with '/'");
    goto fail;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(o->port)};
  const char *addr = o->listen_addr ? o->listen_addr : "127.0.0.1";
  if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
    snprintf(errstr, errstr_size, "listen address \"%s\" is not IPv4", addr);
    goto fail;
  }
  if (!(cb->path = strdup(path)) || !(cb->topic = strdup(o->sync_topic)) ||
      !(cb->replay = kmq__replay_new(o->replay_slots ? o->replay_slots
                                                     : 4096))) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  char why[256];
  kmq_wecom_err_t werr;
  if (!(cb->crypt = kmq_wecom_crypt_new(o->token, o->aes_key, o->receive_id,
                                        cb->skew_s, &werr, why,
                                        sizeof(why)))) {
    snprintf(errstr, errstr_size, "%s: %s", kmq_wecom_err_name(werr), why);
    goto fail;
  }
  conf = kafka_conf ? kmq_conf_dup(kafka_conf) : kmq_conf_new();
  if (!conf || (!kmq_conf_get(conf, "kmq.topic") &&
                kmq_conf_set(conf, "kmq.topic", cb->topic, errstr,
                             errstr_size))) {
    goto fail;
  }
  if (!(cb->producer = kmq_producer_new(conf, kmq__delivered, cb, NULL, NULL,
                                        errstr, errstr_size)))
    goto fail;
  kmq_conf_destroy(conf);
  conf = NULL;
  cb->mhd = MHD_start_daemon(
      MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
          MHD_USE_POLL,
      o->port, NULL, NULL, kmq__access, cb, MHD_OPTION_SOCK_ADDR, &sa,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)(o->conn_memory_limit ? o->conn_memory_limit : 32768),
      MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)(o->conn_timeout_s ? o->conn_timeout_s : 10),
      MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)(o->max_connections ? o->max_connections : 64),
      MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)(o->max_conns_per_ip ? o->max_conns_per_ip : 16),
      MHD_OPTION_NOTIFY_COMPLETED, kmq__completed, cb, MHD_OPTION_END);
  if (!cb->mhd) {
    snprintf(errstr, errstr_size, "cannot listen on %s:%u", addr,
             (unsigned)o->port);
    goto fail;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(cb->mhd, MHD_DAEMON_INFO_BIND_PORT);
  cb->port = di ? di->port : o->port;
  return cb;
fail:
  kmq_conf_destroy(conf);
  kmq_wecom_callback_destroy(cb);
  return NULL;
}

void kmq_wecom_callback_destroy(kmq_wecom_callback_t *cb) {
  if (!cb)
    return;
  if (cb->mhd)
    MHD_stop_daemon(cb->mhd); /* joins every connection thread */
  kmq_producer_destroy(cb->producer);
  kmq_wecom_crypt_destroy(cb->crypt);
  kmq__replay_destroy(cb->replay);
  free(cb->path);
  free(cb->topic);
  free(cb);
}

uint16_t kmq_wecom_callback_port(const kmq_wecom_callback_t *cb) {
  return cb->port;
}

void kmq_wecom_callback_stats(const kmq_wecom_callback_t *cb,
                              kmq_wecom_callback_stats_t *out) {
#define KMQ__LOAD(f)                                                           \
  out->f = atomic_load_explicit(&cb->st.f, memory_order_relaxed)
  KMQ__LOAD(verified);
  KMQ__LOAD(produced);
  KMQ__LOAD(ignored);
  KMQ__LOAD(bad_signature);
  KMQ__LOAD(stale);
  KMQ__LOAD(replayed);
  KMQ__LOAD(malformed);
  KMQ__LOAD(too_large);
  KMQ__LOAD(not_found);
  KMQ__LOAD(bad_method);
  KMQ__LOAD(unavailable);
#undef KMQ__LOAD
}
