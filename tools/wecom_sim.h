/*
 * A local simulator of the WeCom server API that kmq's WeCom client uses
 * (gettoken, kf/sync_msg, kf/send_msg), for tests, the demo and
 * kmq-wecom-sim. WeCom itself is unreachable from here; this is the one
 * stand-in. It serves HTTP on 127.0.0.1 from libmicrohttpd's own thread.
 *
 * Model: open_kfids "wkSIM000", "wkSIM001", ...; customers "wmSIM00000",
 * ... (customer u belongs to open_kfid u % kfids); customer u's message seq
 * has msgid "sim-<u>-<seq>" and, for text, the content
 * "hello #<seq> from wmSIM<u>". With `events`, each customer's seq 0 is an
 * enter_session event instead (its user id only in event.external_userid).
 * Each open_kfid has an append-only log; sync_msg pages over it with an
 * opaque cursor and has_more, as WeCom does. A reply "acknowledges" message
 * seq when its text contains "#<seq>" (kmq_wecom_sim_reply_text()).
 *
 * Faults, each for the next `count` calls of an endpoint: any errcode
 * (-1 busy, 45009, 45033, 95007, ...), empty sync pages with has_more = 1;
 * access tokens expire after token_lifetime_s, or at once on
 * kmq_wecom_sim_revoke_tokens() (then 42001 or 40014 for them).
 *
 * Callbacks: when messages are added, each open_kfid that got some is
 * notified once, with a fresh sync token, on the thread that added them,
 * outside the simulator's lock, in two ways (either, both or none):
 *  - notify_cb (if set), in process: tests that want no HTTP;
 *  - with callback_urls[0] set, as WeCom does it (tools/wecom_sim_callback.c):
 *    a POST of a signed, encrypted kf_msg_or_event callback (inner XML:
 *    ToUserName = corp_id, CreateTime, MsgType event, Event
 *    kf_msg_or_event, Token, OpenKfId), built with kmq_wecom_encrypt_b64 and
 *    kmq_wecom_envelope from callback_token, callback_aes_key and corp_id.
 *    A non-200 answer or a transport error is retried, on the next URL of
 *    the list, up to callback_attempts in all (bounded backoff: 20 ms
 *    doubling to 320 ms); callbacks go to the URLs in turn (several
 *    gateways behind one address). kmq_wecom_sim_new() first performs
 *    WeCom's URL verification on every URL (GET with msg_signature,
 *    timestamp, nonce and an encrypted echostr; the answer must be the
 *    plaintext) and fails if one does not pass, unless
 *    callback_skip_verify. The process must have called
 *    kmq_wecom_global_init() (libcurl).
 * A message's latency is measured from when it was added to the first
 * reply acknowledging it (kmq_wecom_sim_latency()).
 *
 * Threads: every function may be called from any thread; the HTTP thread
 * takes the same lock. Errors: constructors return NULL with errstr.
 */
#ifndef KMQ_TOOLS_WECOM_SIM_H
#define KMQ_TOOLS_WECOM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kmq_wecom_sim_s kmq_wecom_sim_t;

#define KMQ_WECOM_SIM_MAX_URLS 4

typedef void(kmq_wecom_sim_notify_cb)(const char *open_kfid,
                                      const char *sync_token, void *opaque);

typedef struct {
  int port;                  /* 0: any free port */
  const char *corp_id;       /* "wwSIMCORP" */
  const char *corp_secret;   /* "sim-secret-0123456789" */
  int token_lifetime_s;      /* expires_in of access tokens; 7200 */
  int sync_token_lifetime_s; /* callback sync tokens; 600 */
  int page_max;              /* cap on sync_msg's limit; 1000 */
  int kfids;                 /* open_kfids; 1 */
  bool events;               /* seq 0 of each customer is an event */
  kmq_wecom_sim_notify_cb *notify_cb;
  void *notify_opaque;
  /* Signed callbacks (see the top); strings copied by kmq_wecom_sim_new. */
  const char *callback_urls[KMQ_WECOM_SIM_MAX_URLS]; /* NULL-terminated */
  const char *callback_token;   /* the callback Token */
  const char *callback_aes_key; /* the 43-char EncodingAESKey */
  int callback_attempts;        /* per callback; 8 */
  int callback_timeout_ms;      /* per HTTP request; 5000 */
  bool callback_skip_verify;    /* no URL verification at start */
} kmq_wecom_sim_conf_t;

typedef enum {
  KMQ_WECOM_SIM_GETTOKEN,
  KMQ_WECOM_SIM_SYNC,
  KMQ_WECOM_SIM_SEND,
  KMQ_WECOM_SIM_EP_CNT
} kmq_wecom_sim_endpoint_t;

typedef struct {
  int64_t calls[KMQ_WECOM_SIM_EP_CNT]; /* requests per endpoint */
  int64_t tokens_issued;
  int64_t injected;      /* injected errors served */
  int64_t empty_pages;   /* injected empty pages served */
  int64_t token_refused; /* 40014 / 42001 answers */
  int64_t sync_with_token, sync_without_token;
  int64_t messages;      /* in all logs */
  int64_t replies;       /* recorded send_msg texts */
  int64_t url_verified;  /* URL verifications answered with the plaintext */
  int64_t callbacks_ok;  /* callbacks answered 200 */
  int64_t callback_retries; /* attempts answered otherwise, tried again */
  int64_t callbacks_failed; /* callbacks given up after callback_attempts */
  long last_callback_status; /* HTTP status of the last attempt; 0: none */
} kmq_wecom_sim_stats_t;

void kmq_wecom_sim_conf_init(kmq_wecom_sim_conf_t *conf);

/* Starts the server. The conf's strings are copied. */
kmq_wecom_sim_t *kmq_wecom_sim_new(const kmq_wecom_sim_conf_t *conf,
                                   char *errstr, size_t errstr_size);
/* Stops the server (waits for a request in progress) and frees. NULL: no-op */
void kmq_wecom_sim_destroy(kmq_wecom_sim_t *sim);

int kmq_wecom_sim_port(const kmq_wecom_sim_t *sim);
/* "http://127.0.0.1:<port>/cgi-bin" into buf: a client's base_url. */
void kmq_wecom_sim_base_url(const kmq_wecom_sim_t *sim, char *buf,
                            size_t size);

/* Names of the model (see the top). */
void kmq_wecom_sim_kfid(int k, char *buf, size_t size);
void kmq_wecom_sim_user(int u, char *buf, size_t size);
/* The reply text acknowledging message seq of user u. */
void kmq_wecom_sim_reply_text(int u, int seq, char *buf, size_t size);
/* Parses "sim-<u>-<seq>"; 0 on success, -1 otherwise. */
int kmq_wecom_sim_parse_msgid(const char *id, int *u, int *seq);

/* Appends `per` further messages for each of customers 0..customers-1
 * (round-robin: every customer's next message, then the next ...), then
 * notifies each open_kfid that got some. Returns the number appended, -1
 * when out of memory. */
int kmq_wecom_sim_add_messages(kmq_wecom_sim_t *sim, int customers, int per);

/* Appends one msg_list item as given (a JSON object, copied) to open_kfid
 * k's log, without notifying: e.g. an event that names no customer. It is
 * no customer's message (kmq_wecom_sim_sent does not count it). Returns 0,
 * or -1 for a bad k or no memory. */
int kmq_wecom_sim_add_raw(kmq_wecom_sim_t *sim, int k, const char *item);

/* The next `count` calls of ep answer errcode (count 0 clears). */
void kmq_wecom_sim_inject(kmq_wecom_sim_t *sim, kmq_wecom_sim_endpoint_t ep,
                          int errcode, int count);
/* The next `count` sync_msg calls answer an empty page with has_more = 1
 * and a cursor at the same position. */
void kmq_wecom_sim_inject_empty_pages(kmq_wecom_sim_t *sim, int count);
/* The next `count` sync_msg pages with messages come without next_cursor
 * (a broken answer a puller must not store). */
void kmq_wecom_sim_inject_no_cursor(kmq_wecom_sim_t *sim, int count);
/* A slow WeCom: every sync_msg answer from now on is sent latency_ms late
 * (waited on the request's own thread, outside the simulator's lock). */
void kmq_wecom_sim_set_latency(kmq_wecom_sim_t *sim, int latency_ms);
/* Every access token issued so far is refused from now on with errcode
 * (42001 expired, 40014 invalid). */
void kmq_wecom_sim_revoke_tokens(kmq_wecom_sim_t *sim, int errcode);
/* A fresh sync token for open_kfid, as a callback would carry. */
void kmq_wecom_sim_sync_token(kmq_wecom_sim_t *sim, const char *open_kfid,
                              char *buf, size_t size);

void kmq_wecom_sim_stats(kmq_wecom_sim_t *sim, kmq_wecom_sim_stats_t *out);

/* Latency from a message's addition to its first acknowledging reply, in
 * ms: the q-quantile (0..1) over every acknowledged message into *ms.
 * Returns how many messages were measured (0: *ms untouched). */
int kmq_wecom_sim_latency(kmq_wecom_sim_t *sim, double q, double *ms);

/* Number of messages each customer sent so far, or -1 for an unknown u. */
int kmq_wecom_sim_sent(kmq_wecom_sim_t *sim, int u);

/* Checks that every customer's replies acknowledge exactly its messages
 * 0..n-1 in order (duplicates of the same reply in a row are allowed only
 * with allow_repeats). Returns the number of customers that fail, with the
 * first failure described in report. */
int kmq_wecom_sim_verify_replies(kmq_wecom_sim_t *sim, bool allow_repeats,
                                 char *report, size_t size);

#endif
