/*
 * WeCom (企业微信) customer-service API client and the sync_msg puller.
 *
 * Contract.
 *   Client (kmq_wecom_client_*): HTTPS calls to WeCom's server API through
 *   libcurl. One client serves any number of threads at once: every call
 *   uses its own curl handle, the access_token is cached under a mutex and
 *   fetched by one thread at a time (the others wait for it instead of each
 *   asking WeCom, which rate-limits gettoken). A call blocks its thread,
 *   bounded by kmq_wecom_client_conf_t: at most max_attempts + 2 requests
 *   (max_attempts for busy / rate-limit answers, one more after a token
 *   refresh, one more without the sync token after 95007) of at most
 *   timeout_ms each, the backoffs between them (each <= backoff_max_ms),
 *   plus up to two token fetches of at most timeout_ms each (waiting for
 *   another thread's fetch instead when one is under way; while gettoken
 *   keeps failing, the waiting threads try one after the other). Calls
 *   never call back into the application.
 *   Every WeCom answer with errcode != 0 is carried to the caller: the call
 *   returns a kmq_wecom_api_err_t and, in kmq_wecom_result_t, WeCom's own
 *   errcode and errmsg (like kmq carries rd_kafka_resp_err_t next to its
 *   code instead of flattening it).
 *   Retried inside a call: -1 (system busy), 45009 and 45033 (rate limits),
 *   with a doubling backoff and full jitter, up to max_attempts in all;
 *   40014 / 42001 (invalid / expired access_token): the token is fetched
 *   again and the call repeated once; 95007 on kf/sync_msg (the callback's
 *   sync token is invalid or expired): the call is repeated once without
 *   the token (it only lifts the rate limit of sync_msg), reported in
 *   kmq_wecom_result_t.sync_token_dropped. Transport failures are not
 *   retried inside the call (the caller decides: a send_msg that timed out
 *   may have been delivered).
 *   Secrets: the corp secret and the access_token are never logged, never
 *   written into errstr or errmsg (an errmsg that contains one is
 *   redacted), and URLs (which carry them) are never reported.
 *   Response bodies are bounded by max_response_bytes
 *   (KMQ_WECOM_API_ERR_TOO_LARGE past it).
 *
 *   Process set-up: libcurl's global state must be initialised once per
 *   process before the first client is created, on one thread, by
 *   kmq_wecom_global_init() (and may be released by kmq_wecom_global_cleanup()
 *   after the last client is gone). kmq keeps no global state of its own.
 *
 *   Puller (kmq_wecom_puller_*): see the puller section below.
 */
#ifndef KMQ_WECOM_API_H
#define KMQ_WECOM_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "kmq/conf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description). A domain of its own: WeCom's errcode (an
 * open set of several hundred values) travels beside it in
 * kmq_wecom_result_t. Named kmq_wecom_api_err_t because kmq_wecom_err_t is
 * the callback crypto's (include/kmq/wecom.h, codes -40001...); the values
 * here (-1...-11) do not overlap, so the two lists can become one. */
#define KMQ_WECOM_API_ERR_LIST(X)                                              \
  X(OK, 0, "Success")                                                          \
  X(INVALID_ARG, -1, "Invalid argument")                                       \
  X(NOMEM, -2, "Out of memory")                                                \
  X(TRANSPORT, -3, "HTTP transport failed (connect, TLS, reset)")              \
  X(TIMED_OUT, -4, "HTTP request timed out")                                   \
  X(HTTP, -5, "HTTP status other than 200")                                    \
  X(BAD_RESPONSE, -6, "Response is not the JSON WeCom documents")              \
  X(TOO_LARGE, -7, "Response exceeds max_response_bytes")                      \
  X(API, -8, "WeCom returned an errcode (see kmq_wecom_result_t)")             \
  X(BUSY, -9, "WeCom still busy or rate limiting after max_attempts")          \
  X(TOKEN, -10, "No valid access_token (gettoken failed or token refused)")    \
  X(KAFKA, -11, "Kafka client error")

typedef enum {
#define KMQ__WECOM_API_ERR_ENUM(name, value, desc)                             \
  KMQ_WECOM_API_ERR_##name = value,
  KMQ_WECOM_API_ERR_LIST(KMQ__WECOM_API_ERR_ENUM)
#undef KMQ__WECOM_API_ERR_ENUM
} kmq_wecom_api_err_t;

#define KMQ_WECOM_API_OK KMQ_WECOM_API_ERR_OK

/* Static strings; never NULL. */
const char *kmq_wecom_api_err2str(kmq_wecom_api_err_t err);
const char *kmq_wecom_api_err_name(kmq_wecom_api_err_t err);

/* WeCom errcodes the client acts on. */
#define KMQ_WECOM_ERRCODE_BUSY (-1)
#define KMQ_WECOM_ERRCODE_INVALID_TOKEN 40014
#define KMQ_WECOM_ERRCODE_TOKEN_EXPIRED 42001
#define KMQ_WECOM_ERRCODE_FREQ_LIMIT 45009
#define KMQ_WECOM_ERRCODE_QPS_LIMIT 45033
#define KMQ_WECOM_ERRCODE_SYNC_TOKEN 95007

/* Process-wide libcurl set-up (curl_global_init). Call once, before any
 * thread uses a client; not thread-safe. Returns KMQ_WECOM_API_ERR_TRANSPORT
 * when libcurl cannot initialise. */
kmq_wecom_api_err_t kmq_wecom_global_init(void);
/* Pairs with kmq_wecom_global_init(); after every client is destroyed. */
void kmq_wecom_global_cleanup(void);

/* ---- client ------------------------------------------------------------ */

/* Client settings. Not in kmq_conf_t on purpose: kmq_conf_dump() prints
 * every kmq.* key, and the corp secret must never be printed. Fill with
 * kmq_wecom_client_conf_init() and override fields; strings are copied by
 * kmq_wecom_client_new(). */
typedef struct {
  const char *base_url;    /* default "https://qyapi.weixin.qq.com/cgi-bin" */
  const char *corp_id;     /* required */
  const char *corp_secret; /* required (the customer-service app's secret) */
  long timeout_ms;         /* per HTTP request, connect included; 10000 */
  int max_attempts;        /* per call, for busy / rate limits; 5 */
  int backoff_ms;          /* first backoff; doubles; 200 */
  int backoff_max_ms;      /* 5000 */
  /* The token is refreshed when less than this is left of its expires_in
   * (at most a quarter of expires_in, so that short-lived tokens are used
   * too); 300. */
  int refresh_margin_s;
  size_t max_response_bytes; /* 4 MiB */
} kmq_wecom_client_conf_t;

void kmq_wecom_client_conf_init(kmq_wecom_client_conf_t *conf);

typedef struct kmq_wecom_client_s kmq_wecom_client_t;

/* WeCom's side of one call. errmsg is WeCom's text (secrets redacted),
 * truncated to fit. */
typedef struct {
  int errcode;       /* last WeCom errcode seen; 0 for success */
  char errmsg[256];  /* its errmsg */
  long http_status;  /* last HTTP status; 0 when none */
  int attempts;      /* HTTP requests this call made (token fetches apart) */
  int token_refreshes; /* tokens fetched again after 40014 / 42001 */
  bool sync_token_dropped; /* sync_msg: 95007, repeated without the token */
} kmq_wecom_result_t;

typedef struct {
  int64_t requests;        /* HTTP requests made, token fetches included */
  int64_t token_fetches;   /* gettoken calls that returned a token */
  int64_t token_rejected;  /* 40014 / 42001 answers */
  int64_t retries;         /* backoffs after -1 / 45009 / 45033 */
  int64_t busy_exhausted;  /* calls that ended KMQ_WECOM_API_ERR_BUSY */
  int64_t sync_token_dropped; /* 95007 answers */
  int64_t errors;          /* calls that returned an error */
} kmq_wecom_client_stats_t;

/* Creates a client; makes no request yet (the first call fetches the
 * token). Returns NULL with errstr filled on a missing field or no memory.
 * Destroy with kmq_wecom_client_destroy(). */
kmq_wecom_client_t *kmq_wecom_client_new(const kmq_wecom_client_conf_t *conf,
                                         char *errstr, size_t errstr_size);

/* No-op on NULL. No call may be running on c. */
void kmq_wecom_client_destroy(kmq_wecom_client_t *c);

/* Forgets the cached token (the next call fetches one). Any thread. */
void kmq_wecom_client_drop_token(kmq_wecom_client_t *c);

/* Any thread; a consistent-enough snapshot (each counter is atomic). */
void kmq_wecom_client_stats(const kmq_wecom_client_t *c,
                            kmq_wecom_client_stats_t *out);

/* kf/sync_msg request. Strings are borrowed for the call. */
typedef struct {
  const char *open_kfid;  /* required */
  const char *cursor;     /* NULL or "": from the oldest WeCom keeps */
  const char *token;      /* the callback's Token; NULL: none */
  int limit;              /* 1..1000; 0: 1000 */
  int voice_format;       /* 0: amr (WeCom's default), 1: silk */
} kmq_wecom_sync_req_t;

/* One kf/sync_msg page. Owns one JSON tree; next_cursor and msg_list point
 * into it and are valid until kmq_wecom_sync_page_clear(). */
typedef struct {
  const char *next_cursor; /* never NULL ("" when WeCom sent none) */
  bool has_more;
  json_t *msg_list;        /* a JSON array (possibly empty), borrowed */
  json_t *_root;           /* private */
} kmq_wecom_sync_page_t;

/* Calls kf/sync_msg once (plus the retries described at the top). On
 * KMQ_WECOM_API_OK *page is filled (release it with kmq_wecom_sync_page_clear);
 * on error *page is empty and errstr says why. res may be NULL.
 * @locality any thread; blocks (see the bound at the top). */
kmq_wecom_api_err_t kmq_wecom_sync_msg(kmq_wecom_client_t *c,
                                       const kmq_wecom_sync_req_t *req,
                                       kmq_wecom_sync_page_t *page,
                                       kmq_wecom_result_t *res, char *errstr,
                                       size_t errstr_size);

/* Releases a page; no-op on an empty page. */
void kmq_wecom_sync_page_clear(kmq_wecom_sync_page_t *page);

/* Sends a text message to a customer with kf/send_msg. msgid (NULL: WeCom
 * picks one) makes a resend recognisable: pass the same msgid when the
 * caller retries after a transport error or timeout, which may have been
 * delivered. WeCom's msgid of the message goes to msgid_out (may be NULL).
 * All strings borrowed for the call.
 * @locality any thread, e.g. an ASYNC processor's own thread (not a kmq
 * worker: it blocks up to the bound at the top). */
kmq_wecom_api_err_t kmq_wecom_send_text(kmq_wecom_client_t *c,
                                        const char *touser,
                                        const char *open_kfid, const char *text,
                                        const char *msgid, char *msgid_out,
                                        size_t msgid_out_size,
                                        kmq_wecom_result_t *res, char *errstr,
                                        size_t errstr_size);

/* ---- puller ------------------------------------------------------------ */

/*
 * The puller turns WeCom's "new messages" callbacks into kmq messages.
 *
 * Input: sync requests on a Kafka topic, JSON
 *   {"open_kfid": "...", "token": "...", "create_time": <s>}
 * keyed by open_kfid (the callback receiver writes them). The puller reads
 * them with a plain librdkafka consumer in group `group_id`, so with several
 * gateway instances each open_kfid is pulled by one instance at a time.
 *
 * For each request, on the thread that calls kmq_wecom_puller_poll():
 *   1. kf/sync_msg from the open_kfid's stored cursor, page by page while
 *      has_more (an empty page with has_more = 1 continues too);
 *   2. every message of a page is produced to `out_topic` as kmq's envelope
 *      (include/kmq/message.h) keyed by its external_userid (for events:
 *      event.external_userid), message_id = WeCom's msgid, headers msg_type,
 *      msg_id and user_id as kmq_producer_send() writes them;
 *   3. once every message of the page is delivered (acks=all), the page's
 *      next_cursor is written to the compacted topic `<sync topic>.cursors`
 *      (key open_kfid, value cursor) and delivered too;
 *   4. after the last page, the request's offset is committed.
 * A crash (or a failed delivery) therefore re-pulls from the last stored
 * cursor and never skips: duplicates are limited to the one page whose
 * messages were delivered but whose cursor was not. A request whose page
 * fails is tried again after a backoff (the consumer seeks back to it);
 * after max_request_failures in a row it is committed and counted in
 * requests_dropped: nothing is lost by that either, since its cursor did
 * not move and WeCom's next callback for the open_kfid pulls from there.
 * A page with messages or has_more but no next_cursor fails the same way,
 * before any of it is produced (storing an empty cursor would restart the
 * open_kfid from WeCom's oldest message).
 * A request that is not JSON or has no open_kfid is committed and counted
 * (bad_requests). A fatal error of the idempotent producer (librdkafka
 * #4438 on 2.0.2) is not recovered: every request fails from then on
 * without being dropped, kmq_wecom_puller_poll() says so, and the
 * application destroys and recreates the puller (nothing delivered is
 * lost: the cursor never moved past it). A message without an
 * external_userid (e.g. the servicer_status_change event) is not
 * produced: counted in unroutable and logged.
 *
 * Cursors are shared by every instance through the cursor topic: all of it
 * is read to its end when partitions are assigned, before the next request.
 * A rebalance runs inside kmq_wecom_puller_poll() between two requests, so
 * a revoked partition never has a page in flight (the previous owner's
 * cursor is delivered before its revoke completes). max_pages bounds one
 * request, so that one request cannot outlast max.poll.interval.ms: when it
 * is reached with has_more still set, the puller writes a follow-up request
 * (same open_kfid, no token) to the request's partition before committing.
 * Each cursor record carries the request it belongs to (headers): the
 * puller that handles the same request again (the next owner after a
 * crash, or this one after a failed page) knows its first page may repeat
 * delivered messages and counts them in duplicates_suspected.
 *
 * Threads: kmq_wecom_puller_poll() on one thread at a time (the puller's
 * thread); kmq_wecom_puller_stats() from any thread.
 */
typedef struct kmq_wecom_puller_s kmq_wecom_puller_t;

/* Called on the puller's thread after a page's messages are delivered,
 * before its cursor is written: progress metrics, and the hook tests use to
 * crash at the worst moment. */
typedef void(kmq_wecom_page_cb)(const char *open_kfid, int messages,
                                void *opaque);

typedef struct {
  /* bootstrap.servers and any librdkafka keys (bare, producer., consumer.);
   * read by kmq_wecom_puller_new, not kept. Required. */
  const kmq_conf_t *kafka;
  const char *sync_topic; /* required; its cursors: "<sync_topic>.cursors" */
  const char *group_id;   /* required */
  const char *out_topic;  /* required: kmq's message topic */
  kmq_wecom_client_t *client; /* required; borrowed, must outlive the puller */
  int limit;              /* sync_msg page size; 0: 1000 */
  int voice_format;
  int max_pages;          /* per request; 0: 100 */
  int max_request_failures; /* 0: 5 */
  int retry_backoff_ms;     /* after a failed request; 0: 500 */
  kmq_wecom_page_cb *on_page; /* may be NULL */
  void *on_page_opaque;
} kmq_wecom_puller_conf_t;

typedef struct {
  int64_t requests;         /* sync requests handled to their commit */
  int64_t bad_requests;     /* not JSON / no open_kfid: committed, skipped */
  int64_t requests_dropped; /* failed max_request_failures times */
  int64_t followups;        /* follow-up requests written at max_pages */
  int64_t pages;            /* sync_msg pages whose cursor was stored */
  int64_t empty_pages;      /* of them: no message */
  int64_t pulled;           /* messages received from sync_msg */
  int64_t produced;         /* messages delivered to out_topic */
  int64_t unroutable;       /* messages without a user id, not produced */
  int64_t cursor_writes;    /* cursor records delivered */
  int64_t errors;           /* failed attempts at a request */
  int64_t sync_token_dropped; /* 95007: pulled without the callback token */
  /* Messages of the first page of a request that was begun before and left
   * unfinished (a crash, or a failed page of this puller): they may have
   * been delivered already. */
  int64_t duplicates_suspected;
  int64_t cursor_loads;     /* cursor topic read to its end */
  int32_t assigned;         /* sync topic partitions assigned now */
} kmq_wecom_puller_stats_t;

/* Creates the puller: its consumer (subscribed to sync_topic), its
 * producer (kmq's producer baseline: idempotent, acks=all, murmur2_random)
 * and the cursor topic if missing (compacted, 1 partition). Returns NULL
 * with errstr filled on a bad configuration or when Kafka refuses. */
kmq_wecom_puller_t *kmq_wecom_puller_new(const kmq_wecom_puller_conf_t *conf,
                                         char *errstr, size_t errstr_size);

/* Waits up to timeout_ms for one sync request and handles it completely
 * (every page, cursor, commit) before returning; serves rebalances. Returns
 * KMQ_WECOM_API_OK (also when nothing came), or the error of a failed request
 * (already counted and scheduled again; errstr says why). The puller's
 * thread only. A request can take up to max_pages client calls. */
kmq_wecom_api_err_t kmq_wecom_puller_poll(kmq_wecom_puller_t *p, int timeout_ms,
                                          char *errstr, size_t errstr_size);

/* Any thread. */
void kmq_wecom_puller_stats(const kmq_wecom_puller_t *p,
                            kmq_wecom_puller_stats_t *out);

/* Leaves the group (committed work stays committed; nothing is committed
 * past a request that is not finished) and frees. The puller's thread, not
 * inside poll. No-op on NULL. */
void kmq_wecom_puller_destroy(kmq_wecom_puller_t *p);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_WECOM_API_H */
