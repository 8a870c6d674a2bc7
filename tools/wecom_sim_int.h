/* Private to the WeCom simulator (tools/wecom_sim_core.c: model and life
 * cycle; tools/wecom_sim_http.c: the HTTP handlers). Everything below `mu`
 * in kmq_wecom_sim_s is guarded by it. */
#ifndef KMQ_TOOLS_WECOM_SIM_INT_H
#define KMQ_TOOLS_WECOM_SIM_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "wecom_sim.h"

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
  int64_t *sent_ms;      /* monotonic ms each seq was added */
  int sent_cap;
  int acked;             /* seqs 0..acked-1 have their latency recorded */
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
  int latency_ms; /* before each sync_msg answer */
  int no_cursor;  /* pages left to send without next_cursor */
  kmq_wecom_sim_stats_t st;
  int64_t *lat_ms; /* one per acknowledged message */
  int nlat, lat_cap;
  /* Signed callbacks (wecom_sim_callback.c); set before the server starts,
   * read-only afterwards except cb_next (under mu). */
  struct kmq_wecom_crypt_s *crypt;
  char *cb_urls[KMQ_WECOM_SIM_MAX_URLS];
  int ncb_urls, cb_next;
};

/* Monotonic ms. */
int64_t kmq__sim_now(void);
/* Index of "wkSIM<k>" / "wmSIM<u>" below the bound, else -1. */
int kmq__sim_kf_index(const char *kfid, int kfids);
int kmq__sim_user_index(const char *user, int nusers);
/* Issues a sync token for open_kfid k into buf. @locks_required mu */
void kmq__sim_new_sync_token(kmq_wecom_sim_t *s, int k, char *buf,
                             size_t size);

/* Records that user u's message seq was acknowledged (first time only).
 * @locks_required mu */
void kmq__sim_ack(kmq_wecom_sim_t *s, int u, int seq);

/* Signed callbacks (wecom_sim_callback.c). _setup copies the URLs, builds
 * the crypt and verifies every URL (unless skipped): 0, or -1 with errstr;
 * _post sends one kf_msg_or_event callback, with its retries, outside mu;
 * _teardown frees what _setup made (also after a failed _setup). */
int kmq__sim_callback_setup(kmq_wecom_sim_t *s, char *errstr,
                            size_t errstr_size);
void kmq__sim_callback_post(kmq_wecom_sim_t *s, const char *open_kfid,
                            const char *sync_token);
void kmq__sim_callback_teardown(kmq_wecom_sim_t *s);

/* libmicrohttpd's access handler and completion callback (cls: the sim). */
enum MHD_Result kmq__sim_handler(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls);
void kmq__sim_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                   enum MHD_RequestTerminationCode toe);

#endif
