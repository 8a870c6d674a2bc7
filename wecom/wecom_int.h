/* Private to wecom/: the steps of kmq_wecom_decrypt_msg() one by one, so the
 * callback server can put its replay check between "authenticated" and
 * "decrypted", and the XML reader shared by the outer and inner parse. */
#ifndef KMQ_WECOM_INT_H
#define KMQ_WECOM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kmq/wecom.h"

/* One child element of <xml> to collect. buf has cap bytes (value + NUL);
 * a longer value, a second occurrence or a missing required one is a
 * parse error. */
typedef struct {
  const char *name;
  char *buf;
  size_t cap;
  size_t len;
  bool required;
  bool seen;
} kmq__xml_field_t;

/* Parses a document whose root is <xml> with expat, DOCTYPE (and with it
 * every entity declaration) refused, no external entity loaded, depth at
 * most 8. Collects the text (CDATA or not) of the direct children named in
 * fields. KMQ_WECOM_ERR_PARSE_XML with errstr on any failure. */
kmq_wecom_err_t kmq__wecom_xml_parse(const char *doc, size_t len,
                                     kmq__xml_field_t *fields, size_t nfields,
                                     char *errstr, size_t errstr_size);

/* Strict standard base64 (length a multiple of 4, '=' only as the last one
 * or two chars, no whitespace); non-zero trailing bits are accepted, as the
 * official library does (Tencent's sample key has them). out needs
 * len / 4 * 3 bytes. Returns the decoded length, or -1. */
long kmq__wecom_b64_decode(const char *in, size_t len, unsigned char *out);

/* Strict decimal Unix seconds: 1..18 digits, nothing else. */
bool kmq__wecom_parse_ts(const char *s, int64_t *out);

/* Size bounds, the signature over data (constant time) and the timestamp
 * skew, in that order: the whole authentication of a request, before any
 * decryption. */
kmq_wecom_err_t kmq__wecom_authenticate(const kmq_wecom_crypt_t *c,
                                        const char *msg_signature,
                                        const char *timestamp,
                                        const char *nonce, const char *data,
                                        int64_t now, char *errstr,
                                        size_t errstr_size);

/* Base64, AES, padding, length field and receive id of an authenticated
 * Encrypt value / echostr; *out as for kmq_wecom_verify_url. */
kmq_wecom_err_t kmq__wecom_decrypt_b64(const kmq_wecom_crypt_t *c,
                                       const char *b64, char **out,
                                       size_t *out_len, char *errstr,
                                       size_t errstr_size);

/* The Encrypt field of an outer envelope into a malloc'ed string. */
kmq_wecom_err_t kmq__wecom_outer_parse(const char *body, size_t len,
                                       char **encrypt, char *errstr,
                                       size_t errstr_size);

/* The inner XML of a message callback into *msg. */
kmq_wecom_err_t kmq__wecom_inner_parse(const char *xml, size_t len,
                                       kmq_wecom_callback_msg_t *msg,
                                       char *errstr, size_t errstr_size);

/* The callback server's replay cache: a fixed table of (msg_signature,
 * expiry) under a mutex. Linear scans: a few thousand slots cost
 * microseconds, against a request rate WeCom keeps in the tens per second,
 * and keep the no-eviction rule obvious. @locality any server thread. */
typedef struct kmq__replay_s kmq__replay_t;

kmq__replay_t *kmq__replay_new(size_t slots);
void kmq__replay_destroy(kmq__replay_t *r);

/* Records sig (40 hex chars) as seen until expires (Unix seconds).
 * KMQ_WECOM_ERR_REPLAYED when it is already there and not expired at now;
 * KMQ_WECOM_ERR_NOMEM when every slot holds a live entry (nothing is
 * evicted early: that would let its replay through). */
kmq_wecom_err_t kmq__replay_add(kmq__replay_t *r, const char *sig,
                                int64_t expires, int64_t now);

/* Forgets sig again (its request failed and may be retried). */
void kmq__replay_forget(kmq__replay_t *r, const char *sig);

#endif
