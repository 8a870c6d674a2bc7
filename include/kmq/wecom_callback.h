/*
 * WeCom callback endpoint: an HTTP server (libmicrohttpd) that answers
 * WeCom's URL verification and turns each authenticated customer-service
 * callback into a "sync request" record on Kafka, for the puller to call
 * sync_msg with.
 *
 *   GET  <path>?msg_signature&timestamp&nonce&echostr
 *        -> 200 with the decrypted echostr, exactly.
 *   POST <path>?msg_signature&timestamp&nonce   body: <xml><Encrypt>..
 *        -> for MsgType "event" / Event "kf_msg_or_event": the record
 *           {"open_kfid":..,"token":..,"create_time":..} keyed by open_kfid
 *           to the sync topic through kmq's producer; 200 "success" once
 *           its delivery report says DELIVERED, 503 otherwise (WeCom then
 *           retries). Other events: 200 "success", nothing produced.
 *
 * Every request is checked before any work it could make expensive: path
 * (404) and method (405, only GET and POST), Content-Length and body size
 * (413), query parameters present and bounded (400), then the outer XML
 * (bounded, no DOCTYPE) only to find the Encrypt field the signature
 * covers, the signature (401), the timestamp skew (403), the replay cache
 * (409), and only then decryption and the inner XML (400 when they fail).
 * Headers are bounded by the per-connection memory limit, slow clients by
 * the connection timeout, concurrency by the connection limits.
 *
 * Replays: a (timestamp, nonce, msg_signature) seen within the skew window
 * is refused with 409 (the signature binds the timestamp and the nonce, so
 * it is the cache key). The cache has a fixed number of slots; when every
 * slot holds a live entry a request is refused with 503 rather than letting
 * a replay through. A request answered 5xx is forgotten again so that
 * WeCom's retry of it is served.
 *
 * Neither the token nor the AES key is ever logged; refusals are logged
 * with their status, code and reason.
 *
 * Threads: kmq_wecom_callback_new() starts the server's threads (one per
 * connection, at most max_connections); the log callback runs on them.
 * kmq_wecom_callback_port() and _stats() may be called from any thread;
 * _destroy() from one thread, after which no callback runs.
 */
#ifndef KMQ_WECOM_CALLBACK_H
#define KMQ_WECOM_CALLBACK_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/conf.h"
#include "kmq/wecom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_wecom_callback_s kmq_wecom_callback_t;

/* Called for every refusal and failure (level 3: error, 4: warning, 6:
 * info), from a server thread; msg is valid during the call. */
typedef void(kmq_wecom_log_cb)(int level, const char *msg, void *opaque);

/* Unix seconds; the clock the skew and the replay window are measured by. */
typedef int64_t(kmq_wecom_clock_cb)(void *opaque);

/* Settings. Strings are copied by kmq_wecom_callback_new(). A zero field
 * takes the default in brackets. */
typedef struct {
  const char *token;      /* required */
  const char *aes_key;    /* required: the 43-char EncodingAESKey */
  const char *receive_id; /* required: the corp id */
  const char *sync_topic; /* required */
  const char *listen_addr; /* IPv4 address to bind ["127.0.0.1"] */
  uint16_t port;           /* [0: any free port, see _port()] */
  const char *path;        /* ["/wecom/callback"] */
  int max_skew_s;          /* [KMQ_WECOM_DEFAULT_MAX_SKEW_S]; must be > 0:
                              it is also the replay window */
  size_t max_body;         /* [16384], at most KMQ_WECOM_MAX_BODY */
  size_t conn_memory_limit;  /* per connection, headers included [32768] */
  unsigned conn_timeout_s;   /* idle connection closed after [10] */
  unsigned max_connections;  /* [64] */
  unsigned max_conns_per_ip; /* [16] */
  size_t replay_slots;       /* [4096] */
  int delivery_timeout_ms;   /* wait for the delivery report [10000] */
  kmq_wecom_clock_cb *clock; /* [time(NULL)] */
  void *clock_opaque;
  kmq_wecom_log_cb *log; /* [stderr] */
  void *log_opaque;
} kmq_wecom_callback_opts_t;

/* Outcomes so far (monotonic counters). */
typedef struct {
  int64_t verified;      /* GET answered 200 */
  int64_t produced;      /* POST whose sync request was DELIVERED */
  int64_t ignored;       /* POST authenticated, not a kf event: 200 */
  int64_t bad_signature; /* 401 */
  int64_t stale;         /* 403 */
  int64_t replayed;      /* 409 */
  int64_t malformed;     /* 400 */
  int64_t too_large;     /* 413 */
  int64_t not_found;     /* 404 */
  int64_t bad_method;    /* 405 */
  int64_t unavailable;   /* 503: not delivered, replay cache full */
} kmq_wecom_callback_stats_t;

/* Creates the producer (from kafka_conf: librdkafka keys and kmq.*; its
 * kmq.topic defaults to sync_topic, and with it the DLQ to
 * "<sync_topic>.dlq") and starts listening. Returns NULL with errstr filled
 * when an option is invalid (the crypto's own refusals included), the
 * producer cannot be built or the address cannot be bound; nothing is left
 * running then. Destroy with kmq_wecom_callback_destroy(). */
kmq_wecom_callback_t *
kmq_wecom_callback_new(const kmq_wecom_callback_opts_t *opts,
                       const kmq_conf_t *kafka_conf, char *errstr,
                       size_t errstr_size);

/* Stops accepting, waits for the requests in progress (each bounded by the
 * connection timeout and delivery_timeout_ms), then destroys the producer
 * (which flushes). No-op on NULL. */
void kmq_wecom_callback_destroy(kmq_wecom_callback_t *cb);

/* The TCP port actually bound. */
uint16_t kmq_wecom_callback_port(const kmq_wecom_callback_t *cb);

void kmq_wecom_callback_stats(const kmq_wecom_callback_t *cb,
                              kmq_wecom_callback_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_WECOM_CALLBACK_H */
