/* The WeCom callback endpoint in process, on a free loopback port, with the
 * real broker ($KMQ_BOOTSTRAP) behind it, driven with libcurl: a URL
 * verification and kf_msg_or_event callbacks reach the sync topic keyed by
 * open_kfid, and every refusal (path, method, size, slow client, malformed,
 * signature, stale, replay) gets its status and puts nothing on Kafka. The
 * server's clock is fixed (NOW) so "stale" is exact. */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "brokerutil.h"
#include "kmq/wecom.h"
#include "kmq/wecom_callback.h"
#include "testutil.h"

#define TOKEN "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
#define AESKEY "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
#define CORPID "ww1436e0e65a779aee"
#define NOW 1700000000
#define NPART 3
#define MAX_BODY 4096

static int64_t fixed_clock(void *opaque) {
  (void)opaque;
  return NOW;
}

static void quiet(int level, const char *msg, void *opaque) {
  (void)level, (void)opaque;
  /* Refusals are expected here; a secret in a log line is a failure. */
  ck_assert_ptr_null(strstr(msg, TOKEN));
  ck_assert_ptr_null(strstr(msg, AESKEY));
}

typedef struct {
  long status;
  CURLcode rc;
  char body[1024];
  size_t len;
} resp_t;

static size_t collect(char *p, size_t size, size_t n, void *opaque) {
  resp_t *r = opaque;
  size_t len = size * n, room = sizeof(r->body) - 1 - r->len;
  memcpy(r->body + r->len, p, len < room ? len : room);
  r->len += len < room ? len : room;
  r->body[r->len] = '\0';
  return len;
}

/* One request; headers: extra request headers or NULL. */
static resp_t http(const char *method, const char *url, const char *body,
                   size_t len, struct curl_slist *headers) {
  resp_t r = {0};
  CURL *c = curl_easy_init();
  ck_assert_ptr_nonnull(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  }
  if (headers)
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  r.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_cleanup(c);
  return r;
}

static char base[128];

/* base + "?msg_signature=..&timestamp=..&nonce=..[&echostr=..]" */
static void url_of(char *out, size_t size, const char *sig, const char *ts,
                   const char *nonce, const char *echostr) {
  int n = snprintf(out, size, "%s?msg_signature=%s&timestamp=%s&nonce=%s",
                   base, sig, ts, nonce);
  if (echostr) {
    char *e = curl_easy_escape(NULL, echostr, 0);
    snprintf(out + n, size - (size_t)n, "&echostr=%s", e);
    curl_free(e);
  }
}

/* A signed callback body for a kf_msg_or_event (or msg_type other) of
 * open_kfid; the msg_signature into sig. */
static char *callback_body(const kmq_wecom_crypt_t *c, const char *msg_type,
                           const char *open_kfid, const char *ts,
                           const char *nonce, char sig[41]) {
  char inner[1024], errstr[256], *xml = NULL;
  snprintf(inner, sizeof(inner),
           "<xml><ToUserName><![CDATA[" CORPID "]]></ToUserName>"
           "<CreateTime>%d</CreateTime><MsgType><![CDATA[%s]]></MsgType>"
           "<Event><![CDATA[kf_msg_or_event]]></Event>"
           "<Token><![CDATA[sync-token-%s]]></Token>"
           "<OpenKfId><![CDATA[%s]]></OpenKfId></xml>",
           NOW - 1, msg_type, open_kfid, open_kfid);
  char *enc = NULL;
  ck_assert_int_eq(kmq_wecom_encrypt_b64(c, inner, strlen(inner), &enc, NULL,
                                         errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_int_eq(kmq_wecom_envelope(c, enc, ts, nonce, sig, &xml, NULL,
                                      errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  free(enc);
  return xml;
}

static resp_t post(const kmq_wecom_crypt_t *c, const char *msg_type,
                   const char *kfid, const char *ts, const char *nonce) {
  char sig[41], url[512];
  char *body = callback_body(c, msg_type, kfid, ts, nonce, sig);
  url_of(url, sizeof(url), sig, ts, nonce, NULL);
  resp_t r = http("POST", url, body, strlen(body), NULL);
  free(body);
  return r;
}

/* Records in topic: the sum of the high watermarks (a fresh topic, one
 * idempotent producer, no transactions: one offset per record). */
static int64_t count_records(const char *topic, int partitions) {
  char errstr[256];
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  rd_kafka_conf_set(rc, "bootstrap.servers", kt_bootstrap(), errstr,
                    sizeof(errstr));
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
  ck_assert_msg(rk, "%s", errstr);
  int64_t total = 0;
  for (int p = 0; p < partitions; p++) {
    int64_t lo = -1, hi = -1;
    ck_assert_int_eq(
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000), 0);
    total += hi - lo;
  }
  rd_kafka_destroy(rk);
  return total;
}

typedef struct {
  int seen_a, seen_b, other;
} records_t;

static void check_record(const rd_kafka_message_t *m, void *opaque) {
  records_t *r = opaque;
  char key[64];
  snprintf(key, sizeof(key), "%.*s", (int)m->key_len, (const char *)m->key);
  json_error_t je;
  json_t *o = json_loadb(m->payload, m->len, 0, &je);
  ck_assert_msg(o, "value is not JSON: %s", je.text);
  const char *kfid = json_string_value(json_object_get(o, "open_kfid"));
  const char *tok = json_string_value(json_object_get(o, "token"));
  ck_assert_ptr_nonnull(kfid);
  ck_assert_ptr_nonnull(tok);
  ck_assert_str_eq(kfid, key); /* keyed by open_kfid */
  char want[96];
  snprintf(want, sizeof(want), "sync-token-%s", kfid);
  ck_assert_str_eq(tok, want);
  ck_assert_int_eq(json_integer_value(json_object_get(o, "create_time")),
                   NOW - 1);
  ck_assert_int_eq(json_object_size(o), 3);
  if (!strcmp(key, "wk-a"))
    r->seen_a++;
  else if (!strcmp(key, "wk-b"))
    r->seen_b++;
  else
    r->other++;
  json_decref(o);
}

/* Connects, sends half a request line and waits for the server to close
 * the connection. Returns the ms it took, -1 if still open at 8 s. */
static int64_t slow_client(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  const char part[] = "GET /cb?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  ck_assert_int_eq(write(fd, part, sizeof(part) - 1), (ssize_t)sizeof(part) - 1);
  int64_t t0 = kt_now_ms(), took = -1;
  while (kt_now_ms() - t0 < 8000) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) > 0) {
      char buf[256];
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) {
        took = kt_now_ms() - t0;
        break;
      }
    }
  }
  close(fd);
  return took;
}

START_TEST(test_endpoint) {
  char topic[96], dlq[128], errstr[512];
  kt_unique_name(topic, sizeof(topic), "wecom-sync");
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  kt_create_topics(topic, NPART, dlq);

  kmq_conf_t *conf = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(conf, "bootstrap.servers", kt_bootstrap(),
                                errstr, sizeof(errstr)),
                   KMQ_OK);
  kmq_wecom_callback_opts_t o = {
      .token = TOKEN, .aes_key = AESKEY, .receive_id = CORPID,
      .sync_topic = topic, .path = "/cb", .max_body = MAX_BODY,
      .conn_timeout_s = 1, .clock = fixed_clock, .log = quiet};
  kmq_wecom_callback_t *cb =
      kmq_wecom_callback_new(&o, conf, errstr, sizeof(errstr));
  ck_assert_msg(cb, "%s", errstr);
  kmq_conf_destroy(conf);
  uint16_t port = kmq_wecom_callback_port(cb);
  ck_assert_uint_ne(port, 0);
  snprintf(base, sizeof(base), "http://127.0.0.1:%u/cb", (unsigned)port);
  kmq_wecom_crypt_t *c =
      kmq_wecom_crypt_new(TOKEN, AESKEY, CORPID, 0, NULL, errstr,
                          sizeof(errstr));
  ck_assert_ptr_nonnull(c);

  /* URL verification: the plaintext exactly; then its replay. */
  char *echo = NULL, sig[41], url[1024];
  ck_assert_int_eq(kmq_wecom_encrypt_b64(c, "4242424242 echo+", 16, &echo,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_int_eq(kmq_wecom_sign(c, "1700000000", "g1", echo, sig), 0);
  url_of(url, sizeof(url), sig, "1700000000", "g1", echo);
  resp_t r = http("GET", url, NULL, 0, NULL);
  ck_assert_int_eq(r.status, 200);
  ck_assert_str_eq(r.body, "4242424242 echo+");
  ck_assert_int_eq(http("GET", url, NULL, 0, NULL).status, 409);
  /* The same echostr signed with another nonce is a new request. */
  ck_assert_int_eq(kmq_wecom_sign(c, "1700000000", "g2", echo, sig), 0);
  url_of(url, sizeof(url), sig, "1700000000", "g2", echo);
  ck_assert_int_eq(http("GET", url, NULL, 0, NULL).status, 200);
  /* An echostr sent with its '+' unescaped (not as %2B) is the same
   * request: encrypt until the ciphertext has a '+' (random IV-less
   * prefix, so a few tries at most). */
  char *plus = NULL;
  for (int i = 0; i < 200 && !(plus && strchr(plus, '+')); i++) {
    free(plus);
    ck_assert_int_eq(kmq_wecom_encrypt_b64(c, "plus", 4, &plus, NULL, errstr,
                                           sizeof(errstr)),
                     KMQ_WECOM_OK);
  }
  ck_assert_ptr_nonnull(strchr(plus, '+'));
  ck_assert_int_eq(kmq_wecom_sign(c, "1700000000", "g5", plus, sig), 0);
  snprintf(url, sizeof(url),
           "%s?msg_signature=%s&timestamp=1700000000&nonce=g5&echostr=%s", base,
           sig, plus);
  r = http("GET", url, NULL, 0, NULL);
  ck_assert_int_eq(r.status, 200);
  ck_assert_str_eq(r.body, "plus");
  free(plus);
  /* Bad signature, stale, missing parameter. */
  url_of(url, sizeof(url), "0123456789012345678901234567890123456789",
         "1700000000", "g3", echo);
  ck_assert_int_eq(http("GET", url, NULL, 0, NULL).status, 401);
  ck_assert_int_eq(kmq_wecom_sign(c, "1699999000", "g4", echo, sig), 0);
  url_of(url, sizeof(url), sig, "1699999000", "g4", echo);
  ck_assert_int_eq(http("GET", url, NULL, 0, NULL).status, 403);
  url_of(url, sizeof(url), sig, "1699999000", "g4", NULL);
  ck_assert_int_eq(http("GET", url, NULL, 0, NULL).status, 400);
  free(echo);

  /* Callbacks: two kf events are produced; their replays are not. */
  char *body = callback_body(c, "event", "wk-a", "1700000000", "p1", sig);
  url_of(url, sizeof(url), sig, "1700000000", "p1", NULL);
  r = http("POST", url, body, strlen(body), NULL);
  ck_assert_int_eq(r.status, 200);
  ck_assert_str_eq(r.body, "success");
  ck_assert_int_eq(http("POST", url, body, strlen(body), NULL).status, 409);
  free(body);
  ck_assert_int_eq(post(c, "event", "wk-b", "1700000010", "p2").status, 200);
  /* Another message type is acknowledged and not produced. */
  r = post(c, "text", "wk-c", "1700000000", "p3");
  ck_assert_int_eq(r.status, 200);
  ck_assert_str_eq(r.body, "success");
  /* Stale by 301 s, in both directions. */
  ck_assert_int_eq(post(c, "event", "wk-d", "1699999699", "p4").status, 403);
  ck_assert_int_eq(post(c, "event", "wk-d", "1700000301", "p5").status, 403);

  /* Bad signature: a valid body under another nonce's signature. */
  body = callback_body(c, "event", "wk-e", "1700000000", "p6", sig);
  url_of(url, sizeof(url), sig, "1700000000", "p7", NULL);
  ck_assert_int_eq(http("POST", url, body, strlen(body), NULL).status, 401);
  /* Tampered ciphertext under its old signature. */
  char *p = strstr(body, "<Encrypt><![CDATA[") + 20;
  *p = *p == 'A' ? 'B' : 'A';
  url_of(url, sizeof(url), sig, "1700000000", "p6", NULL);
  ck_assert_int_eq(http("POST", url, body, strlen(body), NULL).status, 401);
  free(body);
  /* Malformed XML, a DOCTYPE, no Encrypt, missing parameters. */
  const char *bad[] = {
      "<xml><Encrypt>abc</Encrypt>",
      "<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
      "<xml><Encrypt>&e;</Encrypt></xml>",
      "<xml><ToUserName>x</ToUserName></xml>",
      "not xml at all",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    url_of(url, sizeof(url), sig, "1700000000", "p8", NULL);
    ck_assert_int_eq(http("POST", url, bad[i], strlen(bad[i]), NULL).status,
                     400);
  }
  char plain_url[256];
  snprintf(plain_url, sizeof(plain_url), "%s?timestamp=1700000000", base);
  ck_assert_int_eq(http("POST", plain_url, "<xml/>", 6, NULL).status, 400);

  /* Size: a Content-Length over the bound is refused before the body is
   * read; a chunked body over it gets the connection closed. */
  char *big = malloc(MAX_BODY + 100);
  memset(big, 'x', MAX_BODY + 100);
  url_of(url, sizeof(url), sig, "1700000000", "p9", NULL);
  ck_assert_int_eq(http("POST", url, big, MAX_BODY + 1, NULL).status, 413);
  struct curl_slist *chunked =
      curl_slist_append(NULL, "Transfer-Encoding: chunked");
  r = http("POST", url, big, MAX_BODY + 100, chunked);
  curl_slist_free_all(chunked);
  ck_assert_msg(r.rc != CURLE_OK || r.status == 0, "chunked: %ld", r.status);
  free(big);
  /* Headers beyond the per-connection memory limit. */
  char *hdr = malloc(40000);
  memset(hdr, 'h', 39999);
  memcpy(hdr, "X-Big: ", 7);
  hdr[39999] = '\0';
  struct curl_slist *huge = curl_slist_append(NULL, hdr);
  r = http("GET", url, NULL, 0, huge);
  curl_slist_free_all(huge);
  free(hdr);
  ck_assert_msg(r.status == 431 || r.status == 413 || r.rc != CURLE_OK,
                "huge header: %ld", r.status);
  ck_assert_int_ne(r.status, 200);

  /* Path and method. */
  char other[256];
  snprintf(other, sizeof(other), "http://127.0.0.1:%u/cb/x", (unsigned)port);
  ck_assert_int_eq(http("GET", other, NULL, 0, NULL).status, 404);
  snprintf(other, sizeof(other), "http://127.0.0.1:%u/", (unsigned)port);
  ck_assert_int_eq(http("POST", other, "<xml/>", 6, NULL).status, 404);
  ck_assert_int_eq(http("PUT", base, "<xml/>", 6, NULL).status, 405);
  ck_assert_int_eq(http("DELETE", base, NULL, 0, NULL).status, 405);

  /* A client that never finishes its headers is cut at the timeout (1 s). */
  int64_t took = slow_client(port);
  ck_assert_msg(took >= 0, "slow connection still open after 8 s");
  ck_assert_msg(took >= 500, "closed after %lld ms: not by the timeout",
                (long long)took);

  kmq_wecom_callback_stats_t st;
  kmq_wecom_callback_stats(cb, &st);
  ck_assert_int_eq(st.verified, 3);
  ck_assert_int_eq(st.produced, 2);
  ck_assert_int_eq(st.ignored, 1);
  ck_assert_int_eq(st.replayed, 2);
  ck_assert_int_eq(st.bad_signature, 3);
  ck_assert_int_eq(st.stale, 3);
  ck_assert_int_eq(st.malformed, 6);
  ck_assert_int_eq(st.too_large, 2);
  ck_assert_int_eq(st.not_found, 2);
  ck_assert_int_eq(st.bad_method, 2);
  ck_assert_int_eq(st.unavailable, 0);
  /* Destroy flushes the producer: every record is on the broker now. */
  kmq_wecom_callback_destroy(cb);
  kmq_wecom_crypt_destroy(c);

  ck_assert_int_eq(count_records(topic, NPART), 2);
  ck_assert_int_eq(count_records(dlq, 1), 0);
  records_t rec = {0};
  ck_assert_int_eq(kt_read_topic(kt_bootstrap(), topic, 2, 30000,
                                 check_record, &rec),
                   2);
  ck_assert_int_eq(rec.seen_a, 1);
  ck_assert_int_eq(rec.seen_b, 1);
  ck_assert_int_eq(rec.other, 0);
}
END_TEST

/* A sync request Kafka does not take (its topic does not exist and may not
 * be created) is answered 503, and WeCom's retry of the very same request
 * is served again rather than refused as a replay. */
START_TEST(test_not_delivered) {
  char topic[96], dlq[128], errstr[512];
  kt_unique_name(topic, sizeof(topic), "wecom-absent");
  snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
  kt_create_topics(dlq, 1, NULL); /* the DLQ exists, the topic does not */
  kmq_conf_t *conf = kmq_conf_new();
  const char *kv[][2] = {{"bootstrap.servers", kt_bootstrap()},
                         {"allow.auto.create.topics", "false"},
                         {"producer.message.timeout.ms", "1500"},
                         {"kmq.dlq.topic", dlq}};
  for (size_t i = 0; i < sizeof(kv) / sizeof(*kv); i++)
    ck_assert_msg(!kmq_conf_set(conf, kv[i][0], kv[i][1], errstr,
                                sizeof(errstr)),
                  "%s", errstr);
  kmq_wecom_callback_opts_t o = {
      .token = TOKEN, .aes_key = AESKEY, .receive_id = CORPID,
      .sync_topic = topic, .path = "/cb", .clock = fixed_clock, .log = quiet};
  kmq_wecom_callback_t *cb =
      kmq_wecom_callback_new(&o, conf, errstr, sizeof(errstr));
  ck_assert_msg(cb, "%s", errstr);
  kmq_conf_destroy(conf);
  snprintf(base, sizeof(base), "http://127.0.0.1:%u/cb",
           (unsigned)kmq_wecom_callback_port(cb));
  kmq_wecom_crypt_t *c = kmq_wecom_crypt_new(TOKEN, AESKEY, CORPID, 0, NULL,
                                             errstr, sizeof(errstr));
  char sig[41], url[512];
  char *body = callback_body(c, "event", "wk-x", "1700000000", "n1", sig);
  url_of(url, sizeof(url), sig, "1700000000", "n1", NULL);
  resp_t r = http("POST", url, body, strlen(body), NULL);
  ck_assert_int_eq(r.status, 503);
  ck_assert_int_eq(http("POST", url, body, strlen(body), NULL).status, 503);
  free(body);
  kmq_wecom_callback_stats_t st;
  kmq_wecom_callback_stats(cb, &st);
  ck_assert_int_eq(st.unavailable, 2);
  ck_assert_int_eq(st.replayed, 0);
  ck_assert_int_eq(st.produced, 0);
  kmq_wecom_callback_destroy(cb);
  kmq_wecom_crypt_destroy(c);
  /* Both undelivered sync requests were dead-lettered, none lost. */
  ck_assert_int_eq(count_records(dlq, 1), 2);
}
END_TEST

static int connect_to(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

/* ms until the server closes fd (it sends nothing), -1 if open at limit. */
static int64_t closed_within(int fd, int limit_ms) {
  int64_t t0 = kt_now_ms();
  while (kt_now_ms() - t0 < limit_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char buf[64];
    if (poll(&p, 1, 50) > 0 && read(fd, buf, sizeof(buf)) <= 0)
      return kt_now_ms() - t0;
  }
  return -1;
}

/* Connections per client address are capped: the third idle one from
 * 127.0.0.1 is closed at once, the first two stay until their timeout. */
START_TEST(test_per_ip_limit) {
  char errstr[512];
  kmq_conf_t *conf = kmq_conf_new();
  ck_assert_int_eq(kmq_conf_set(conf, "bootstrap.servers", kt_bootstrap(),
                                errstr, sizeof(errstr)),
                   KMQ_OK);
  kmq_wecom_callback_opts_t o = {
      .token = TOKEN, .aes_key = AESKEY, .receive_id = CORPID,
      .sync_topic = "wecom-unused", .path = "/cb", .conn_timeout_s = 5,
      .max_conns_per_ip = 2, .clock = fixed_clock, .log = quiet};
  kmq_wecom_callback_t *cb =
      kmq_wecom_callback_new(&o, conf, errstr, sizeof(errstr));
  ck_assert_msg(cb, "%s", errstr);
  kmq_conf_destroy(conf);
  uint16_t port = kmq_wecom_callback_port(cb);
  int a = connect_to(port), b = connect_to(port), c = connect_to(port);
  ck_assert_int_ge(closed_within(c, 3000), 0);
  ck_assert_int_eq(closed_within(a, 300), -1);
  close(a);
  close(b);
  close(c);
  kmq_wecom_callback_destroy(cb);
}
END_TEST

/* Options the endpoint refuses to start with. */
START_TEST(test_bad_options) {
  char errstr[512];
  kmq_wecom_callback_opts_t o = {.token = TOKEN, .aes_key = "short",
                                 .receive_id = CORPID, .sync_topic = "t"};
  ck_assert_ptr_null(kmq_wecom_callback_new(&o, NULL, errstr, sizeof(errstr)));
  ck_assert_ptr_nonnull(strstr(errstr, "ILLEGAL_AES_KEY"));
  o.aes_key = AESKEY;
  o.max_skew_s = -5;
  ck_assert_ptr_null(kmq_wecom_callback_new(&o, NULL, errstr, sizeof(errstr)));
  o.max_skew_s = 0;
  o.listen_addr = "localhost";
  ck_assert_ptr_null(kmq_wecom_callback_new(&o, NULL, errstr, sizeof(errstr)));
  ck_assert_ptr_nonnull(strstr(errstr, "IPv4"));
  o.listen_addr = NULL;
  o.sync_topic = NULL;
  ck_assert_ptr_null(kmq_wecom_callback_new(&o, NULL, errstr, sizeof(errstr)));
  ck_assert_ptr_null(strstr(errstr, TOKEN));
}
END_TEST

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  Suite *s = suite_create("wecom_callback_broker");
  TCase *tc = tcase_create("endpoint");
  tcase_add_test(tc, test_endpoint);
  tcase_add_test(tc, test_not_delivered);
  tcase_add_test(tc, test_per_ip_limit);
  tcase_add_test(tc, test_bad_options);
  suite_add_tcase(s, tc);
  int rc = kt_run(s);
  curl_global_cleanup();
  return rc;
}
