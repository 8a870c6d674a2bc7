/* The WeCom API simulator (tools/wecom_sim.h): the model (logs, customers,
 * tokens, faults) and its life cycle; the HTTP side is wecom_sim_http.c. */
#include "wecom_sim.h"
#include "wecom_sim_int.h"

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

int64_t kmq__sim_now(void) {
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
  c->callback_attempts = 8;
  c->callback_timeout_ms = 5000;
}

/* ---- model -------------------------------------------------------------- */

int kmq__sim_kf_index(const char *kfid, int kfids) {
  int k;
  char tail;
  if (!kfid || sscanf(kfid, "wkSIM%d%c", &k, &tail) != 1 || k < 0 ||
      k >= kfids)
    return -1;
  return k;
}

int kmq__sim_user_index(const char *user, int nusers) {
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
void kmq__sim_new_sync_token(kmq_wecom_sim_t *s, int k, char *buf,
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
      kmq__sim_user_t *us = &s->users[u];
      if (us->sent == us->sent_cap) {
        int cap = us->sent_cap ? us->sent_cap * 2 : 16;
        int64_t *ns = realloc(us->sent_ms, sizeof(*ns) * (size_t)cap);
        if (!ns) {
          ok = 0;
          break;
        }
        us->sent_ms = ns;
        us->sent_cap = cap;
      }
      char *item = kmq__sim_item(s, u, s->users[u].sent);
      if (!item) {
        ok = 0;
        break;
      }
      us->sent_ms[us->sent] = kmq__sim_now();
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
  /* Outside the lock: the callback may call back into the simulator, and
   * a POST waits for the gateway, which calls sync_msg here. */
  for (int k = 0; k < kfids; k++)
    if (touched[k]) {
      char kfid[32];
      kmq_wecom_sim_kfid(k, kfid, sizeof(kfid));
      if (s->conf.notify_cb)
        s->conf.notify_cb(kfid, tokens[k], s->conf.notify_opaque);
      if (s->ncb_urls)
        kmq__sim_callback_post(s, kfid, tokens[k]);
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

void kmq_wecom_sim_inject_no_cursor(kmq_wecom_sim_t *s, int count) {
  pthread_mutex_lock(&s->mu);
  s->no_cursor = count;
  pthread_mutex_unlock(&s->mu);
}

void kmq_wecom_sim_set_latency(kmq_wecom_sim_t *s, int latency_ms) {
  pthread_mutex_lock(&s->mu);
  s->latency_ms = latency_ms;
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

/* @locks_required mu */
void kmq__sim_ack(kmq_wecom_sim_t *s, int u, int seq) {
  kmq__sim_user_t *us = &s->users[u];
  if (seq != us->acked || seq >= us->sent)
    return; /* a repeat, or out of order: verify_replies reports it */
  if (s->nlat == s->lat_cap) {
    int cap = s->lat_cap ? s->lat_cap * 2 : 256;
    int64_t *nl = realloc(s->lat_ms, sizeof(*nl) * (size_t)cap);
    if (!nl)
      return; /* a latency sample less, not an error of the model */
    s->lat_ms = nl;
    s->lat_cap = cap;
  }
  s->lat_ms[s->nlat++] = kmq__sim_now() - us->sent_ms[seq];
  us->acked++;
}

static int kmq__sim_cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int kmq_wecom_sim_latency(kmq_wecom_sim_t *s, double q, double *ms) {
  pthread_mutex_lock(&s->mu);
  int n = s->nlat;
  if (n > 0) {
    qsort(s->lat_ms, (size_t)n, sizeof(*s->lat_ms), kmq__sim_cmp64);
    int i = (int)(q * (n - 1) + 0.5);
    *ms = (double)s->lat_ms[i < 0 ? 0 : i >= n ? n - 1 : i];
  }
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
  /* After the server: the gateway being verified may call it back. */
  if (kmq__sim_callback_setup(s, errstr, errstr_size)) {
    kmq_wecom_sim_destroy(s);
    return NULL;
  }
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
  kmq__sim_callback_teardown(s);
  for (int k = 0; k < s->conf.kfids; k++) {
    for (int i = 0; i < s->kf[k].len; i++)
      free(s->kf[k].log[i].item);
    free(s->kf[k].log);
  }
  for (int u = 0; u < s->nusers; u++) {
    free(s->users[u].replies);
    free(s->users[u].sent_ms);
  }
  free(s->lat_ms);
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
