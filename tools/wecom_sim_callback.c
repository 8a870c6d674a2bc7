/* The WeCom simulator's signed callbacks (tools/wecom_sim.h, "Callbacks"):
 * URL verification at start and one kf_msg_or_event POST per notification,
 * encrypted and signed with kmq's own crypto (include/kmq/wecom.h), sent
 * with libcurl like WeCom's servers would. */
#include "wecom_sim.h"
#include "wecom_sim_int.h"

#include <curl/curl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmq/wecom.h"

#define KMQ__SIM_CB_BODY_MAX 4096 /* answers longer than this are cut */

typedef struct {
  char buf[KMQ__SIM_CB_BODY_MAX + 1];
  size_t len;
} kmq__sim_cb_body_t;

static size_t kmq__sim_cb_write(char *p, size_t sz, size_t n, void *opaque) {
  kmq__sim_cb_body_t *b = opaque;
  size_t len = sz * n, room = KMQ__SIM_CB_BODY_MAX - b->len;
  memcpy(b->buf + b->len, p, len < room ? len : room);
  b->len += len < room ? len : room;
  b->buf[b->len] = '\0';
  return len;
}

/* A fresh (timestamp, nonce): the endpoint refuses a repeated triple as a
 * replay, so the nonce carries a per-simulator serial. */
static void kmq__sim_cb_stamp(kmq_wecom_sim_t *s, char ts[24], char nonce[48]) {
  unsigned r = 0;
  RAND_bytes((unsigned char *)&r, sizeof(r));
  pthread_mutex_lock(&s->mu);
  long long serial = ++s->serial;
  pthread_mutex_unlock(&s->mu);
  snprintf(ts, 24, "%lld", (long long)time(NULL));
  snprintf(nonce, 48, "n%lld-%08x", serial, r);
}

/* One HTTP request: GET when body is NULL. Returns the HTTP status, 0 on a
 * transport error; the answer into *out. */
static long kmq__sim_cb_http(kmq_wecom_sim_t *s, const char *url,
                             const char *body, kmq__sim_cb_body_t *out) {
  CURL *h = curl_easy_init();
  long status = 0;
  if (!h)
    return 0;
  out->len = 0;
  out->buf[0] = '\0';
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)s->conf.callback_timeout_ms);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kmq__sim_cb_write);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
  struct curl_slist *hdr = NULL;
  if (body) {
    hdr = curl_slist_append(NULL, "Content-Type: text/xml");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  if (curl_easy_perform(h) == CURLE_OK)
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  return status;
}

/* WeCom's URL verification of one URL: 0 when the endpoint answers 200
 * with the plaintext of the echostr. */
static int kmq__sim_cb_verify(kmq_wecom_sim_t *s, const char *url,
                              char *errstr, size_t errstr_size) {
  char ts[24], nonce[48], plain[40], sig[41], *echo = NULL;
  unsigned r = 0;
  RAND_bytes((unsigned char *)&r, sizeof(r));
  snprintf(plain, sizeof(plain), "sim-echo-%u", r);
  kmq__sim_cb_stamp(s, ts, nonce);
  kmq_wecom_err_t err = kmq_wecom_encrypt_b64(s->crypt, plain, strlen(plain),
                                              &echo, NULL, errstr, errstr_size);
  if (err || (err = kmq_wecom_sign(s->crypt, ts, nonce, echo, sig))) {
    free(echo);
    snprintf(errstr, errstr_size, "URL verification: %s",
             kmq_wecom_err2str(err));
    return -1;
  }
  CURL *h = curl_easy_init();
  char *esc = h ? curl_easy_escape(h, echo, 0) : NULL;
  free(echo);
  if (h)
    curl_easy_cleanup(h);
  if (!esc) {
    snprintf(errstr, errstr_size, "URL verification: out of memory");
    return -1;
  }
  size_t n = strlen(url) + strlen(esc) + 256;
  char *full = malloc(n);
  if (!full) {
    curl_free(esc);
    snprintf(errstr, errstr_size, "URL verification: out of memory");
    return -1;
  }
  snprintf(full, n, "%s%cmsg_signature=%s&timestamp=%s&nonce=%s&echostr=%s",
           url, strchr(url, '?') ? '&' : '?', sig, ts, nonce, esc);
  curl_free(esc);
  kmq__sim_cb_body_t *ans = malloc(sizeof(*ans));
  long status = ans ? kmq__sim_cb_http(s, full, NULL, ans) : 0;
  free(full);
  int ok = status == 200 && !strcmp(ans->buf, plain);
  if (!ok)
    snprintf(errstr, errstr_size,
             "URL verification of %s failed: HTTP %ld%s", url, status,
             status == 200 ? " with a wrong plaintext" : "");
  free(ans);
  if (ok) {
    pthread_mutex_lock(&s->mu);
    s->st.url_verified++;
    pthread_mutex_unlock(&s->mu);
  }
  return ok ? 0 : -1;
}

int kmq__sim_callback_setup(kmq_wecom_sim_t *s, char *errstr,
                            size_t errstr_size) {
  const kmq_wecom_sim_conf_t *c = &s->conf;
  const char *token = c->callback_token ? c->callback_token : "";
  const char *key = c->callback_aes_key ? c->callback_aes_key : "";
  for (int i = 0; i < KMQ_WECOM_SIM_MAX_URLS && c->callback_urls[i]; i++)
    if (!(s->cb_urls[s->ncb_urls++] = strdup(c->callback_urls[i]))) {
      snprintf(errstr, errstr_size, "out of memory");
      return -1;
    }
  /* The conf's strings are the caller's: none is kept past this call. */
  memset(s->conf.callback_urls, 0, sizeof(s->conf.callback_urls));
  s->conf.callback_token = s->conf.callback_aes_key = NULL;
  if (!s->ncb_urls)
    return 0;
  if (c->callback_attempts < 1 || c->callback_timeout_ms < 1) {
    snprintf(errstr, errstr_size,
             "callback_attempts and callback_timeout_ms must be >= 1");
    return -1;
  }
  kmq_wecom_err_t err;
  char why[256];
  /* max skew 0: this crypt only signs and encrypts. */
  s->crypt = kmq_wecom_crypt_new(token, key, s->corp_id, 0, &err, why,
                                 sizeof(why));
  if (!s->crypt) {
    snprintf(errstr, errstr_size, "callback token / AES key: %s", why);
    return -1;
  }
  for (int i = 0; i < s->ncb_urls && !c->callback_skip_verify; i++)
    if (kmq__sim_cb_verify(s, s->cb_urls[i], errstr, errstr_size))
      return -1;
  return 0;
}

void kmq__sim_callback_teardown(kmq_wecom_sim_t *s) {
  for (int i = 0; i < s->ncb_urls; i++)
    free(s->cb_urls[i]);
  s->ncb_urls = 0;
  kmq_wecom_crypt_destroy(s->crypt);
  s->crypt = NULL;
}

/* The envelope and query of one attempt (fresh timestamp and nonce: a retry
 * is a new request to the endpoint's replay cache, as WeCom's are). */
static int kmq__sim_cb_build(kmq_wecom_sim_t *s, const char *url,
                             const char *inner, char **full, char **xml) {
  char ts[24], nonce[48], sig[41], errstr[128], *b64 = NULL;
  kmq__sim_cb_stamp(s, ts, nonce);
  *xml = NULL;
  if (kmq_wecom_encrypt_b64(s->crypt, inner, strlen(inner), &b64, NULL,
                            errstr, sizeof(errstr)) ||
      kmq_wecom_envelope(s->crypt, b64, ts, nonce, sig, xml, NULL, errstr,
                         sizeof(errstr))) {
    free(b64);
    return -1;
  }
  free(b64);
  size_t n = strlen(url) + 192;
  if (!(*full = malloc(n))) {
    free(*xml);
    return -1;
  }
  snprintf(*full, n, "%s%cmsg_signature=%s&timestamp=%s&nonce=%s", url,
           strchr(url, '?') ? '&' : '?', sig, ts, nonce);
  return 0;
}

void kmq__sim_callback_post(kmq_wecom_sim_t *s, const char *open_kfid,
                            const char *sync_token) {
  char inner[512];
  snprintf(inner, sizeof(inner),
           "<xml><ToUserName><![CDATA[%s]]></ToUserName>"
           "<CreateTime>%lld</CreateTime>"
           "<MsgType><![CDATA[event]]></MsgType>"
           "<Event><![CDATA[kf_msg_or_event]]></Event>"
           "<Token><![CDATA[%s]]></Token>"
           "<OpenKfId><![CDATA[%s]]></OpenKfId></xml>",
           s->corp_id, (long long)time(NULL), sync_token, open_kfid);
  kmq__sim_cb_body_t *ans = malloc(sizeof(*ans));
  int backoff_ms = 20, ok = 0;
  for (int a = 0; ans && a < s->conf.callback_attempts && !ok; a++) {
    pthread_mutex_lock(&s->mu);
    const char *url = s->cb_urls[s->cb_next++ % s->ncb_urls];
    pthread_mutex_unlock(&s->mu);
    char *full = NULL, *xml = NULL;
    long status = 0;
    if (!kmq__sim_cb_build(s, url, inner, &full, &xml)) {
      status = kmq__sim_cb_http(s, full, xml, ans);
      free(full);
      free(xml);
    }
    ok = status == 200;
    pthread_mutex_lock(&s->mu);
    s->st.last_callback_status = status;
    if (ok)
      s->st.callbacks_ok++;
    else if (a + 1 < s->conf.callback_attempts)
      s->st.callback_retries++;
    pthread_mutex_unlock(&s->mu);
    if (!ok && a + 1 < s->conf.callback_attempts) {
      /* WeCom retries a callback that was not answered 200; bounded. */
      struct timespec d = {0, (long)backoff_ms * 1000000L};
      nanosleep(&d, NULL);
      backoff_ms = backoff_ms < 320 ? backoff_ms * 2 : 320;
    }
  }
  pthread_mutex_lock(&s->mu);
  if (!ok)
    s->st.callbacks_failed++;
  pthread_mutex_unlock(&s->mu);
  free(ans);
}
