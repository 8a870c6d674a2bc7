/*
 * WeCom (企业微信) callback crypto: URL verification, decryption of message
 * callbacks and encryption of replies, compatible with Tencent's official
 * "WXBizMsgCrypt" library (same algorithm, same error codes).
 *
 *   signature = hex(SHA1(sort(token, timestamp, nonce, data) concatenated))
 *   key       = base64decode(EncodingAESKey + "=")     (43 chars -> 32 bytes)
 *   cipher    = AES-256-CBC, IV = key[0:16], PKCS#7 padding to 32 bytes
 *   plaintext = 16 random bytes | 4-byte big-endian length | message |
 *               receive id (the corp id)
 *
 * Everything that comes from outside is checked in this order, so that an
 * unauthenticated request costs at most one bounded XML parse of the outer
 * envelope and one SHA1: size bounds, outer XML (POST only, to find the
 * Encrypt field the signature covers), signature (constant-time compare),
 * timestamp skew, and only then base64, AES, padding, length, receive id
 * and the inner XML. XML goes through expat with every DOCTYPE refused, so
 * no entity is ever declared, expanded or loaded.
 *
 * Ownership: a kmq_wecom_crypt_t holds copies of the token, key and receive
 * id; the caller's strings may be freed after kmq_wecom_crypt_new() returns.
 * Buffers a function returns through `char **` are malloc'ed, NUL-terminated
 * and owned by the caller (free()). On error nothing is returned through
 * them (they are set to NULL) and errstr says why, never quoting the token
 * or the key.
 *
 * Threads: a crypt is immutable after kmq_wecom_crypt_new(); any number of
 * threads may use it at once. There is no global state: the clock is the
 * `now` argument (Unix seconds), randomness comes from OpenSSL's RAND_bytes.
 */
#ifndef KMQ_WECOM_H
#define KMQ_WECOM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description). -40001..-40011 are the official library's
 * codes (WXBizMsgCrypt_* in Tencent's samples); below -40100 are kmq's. */
#define KMQ_WECOM_ERR_LIST(X)                                                  \
  X(OK, 0, "Success")                                                          \
  X(VALIDATE_SIGNATURE, -40001, "Signature verification failed")              \
  X(PARSE_XML, -40002, "Malformed, refused or incomplete XML")                 \
  X(COMPUTE_SIGNATURE, -40003, "Could not compute the signature")              \
  X(ILLEGAL_AES_KEY, -40004, "EncodingAESKey is not 43 chars of base64")       \
  X(VALIDATE_CORPID, -40005, "Receive id (corp id) does not match")            \
  X(ENCRYPT_AES, -40006, "AES encryption failed")                              \
  X(DECRYPT_AES, -40007, "AES decryption failed (bad length or padding)")      \
  X(ILLEGAL_BUFFER, -40008, "Bad length field or input over its size bound")   \
  X(ENCODE_BASE64, -40009, "Base64 encoding failed")                           \
  X(DECODE_BASE64, -40010, "Invalid base64")                                   \
  X(GEN_RETURN_XML, -40011, "Could not build the reply XML")                   \
  X(STALE_TIMESTAMP, -40100, "Timestamp missing or outside the allowed skew")  \
  X(REPLAYED, -40101, "Request already seen (timestamp, nonce, signature)")    \
  X(NOMEM, -40102, "Out of memory")

typedef enum {
#define KMQ_WECOM__ENUM(name, value, desc) KMQ_WECOM_ERR_##name = value,
  KMQ_WECOM_ERR_LIST(KMQ_WECOM__ENUM)
#undef KMQ_WECOM__ENUM
} kmq_wecom_err_t;

#define KMQ_WECOM_OK KMQ_WECOM_ERR_OK

/* Symbolic name, e.g. "VALIDATE_SIGNATURE"; static, never NULL. */
const char *kmq_wecom_err_name(kmq_wecom_err_t err);
/* Human-readable description; static, never NULL. */
const char *kmq_wecom_err2str(kmq_wecom_err_t err);

/* Bounds on outside input (bytes, without the NUL). Longer input is refused
 * with KMQ_WECOM_ERR_ILLEGAL_BUFFER before any work is done on it. */
#define KMQ_WECOM_MAX_PARAM 128     /* timestamp, nonce, msg_signature */
#define KMQ_WECOM_MAX_BODY 65536    /* a POST body (outer XML) */
#define KMQ_WECOM_MAX_FIELD 256     /* one field of the inner XML */
#define KMQ_WECOM_DEFAULT_MAX_SKEW_S 300

typedef struct kmq_wecom_crypt_s kmq_wecom_crypt_t;

/* A crypt for one callback configuration. token: 1..128 printable chars;
 * encoding_aes_key: the 43-char EncodingAESKey; receive_id: the corp id
 * (1..KMQ_WECOM_MAX_FIELD bytes). max_skew_s: a request whose timestamp is
 * more than this many seconds away from `now` is refused with
 * KMQ_WECOM_ERR_STALE_TIMESTAMP; 0 turns the check off (replaying recorded
 * vectors), negative is refused. Returns NULL with *err (may be NULL) and
 * errstr filled: KMQ_WECOM_ERR_ILLEGAL_AES_KEY for a bad key,
 * KMQ_WECOM_ERR_ILLEGAL_BUFFER for a bad token, receive id or skew,
 * KMQ_WECOM_ERR_NOMEM. Destroy with kmq_wecom_crypt_destroy(). */
kmq_wecom_crypt_t *kmq_wecom_crypt_new(const char *token,
                                       const char *encoding_aes_key,
                                       const char *receive_id, int max_skew_s,
                                       kmq_wecom_err_t *err, char *errstr,
                                       size_t errstr_size);

/* Wipes the key and token, frees. No-op on NULL. */
void kmq_wecom_crypt_destroy(kmq_wecom_crypt_t *c);

/* The configured skew bound in seconds (0: off). */
int kmq_wecom_crypt_max_skew(const kmq_wecom_crypt_t *c);

/* hex SHA1 of the sorted concatenation of the token, timestamp, nonce and
 * data into out (41 bytes with the NUL). Used to sign replies and by tests
 * and simulators. KMQ_WECOM_ERR_ILLEGAL_BUFFER when timestamp or nonce is
 * over KMQ_WECOM_MAX_PARAM or data over KMQ_WECOM_MAX_BODY,
 * KMQ_WECOM_ERR_COMPUTE_SIGNATURE when the digest fails. */
kmq_wecom_err_t kmq_wecom_sign(const kmq_wecom_crypt_t *c,
                               const char *timestamp, const char *nonce,
                               const char *data, char out[41]);

/* URL verification (the GET WeCom sends when the callback URL is saved):
 * checks msg_signature over (timestamp, nonce, echostr), the timestamp
 * against now, decrypts echostr and checks the receive id. On KMQ_WECOM_OK
 * *plain_out is the message exactly as sent (NUL added; *plain_len without
 * it; plain_len may be NULL), which is what the endpoint must answer. */
kmq_wecom_err_t kmq_wecom_verify_url(const kmq_wecom_crypt_t *c,
                                     const char *msg_signature,
                                     const char *timestamp, const char *nonce,
                                     const char *echostr, int64_t now,
                                     char **plain_out, size_t *plain_len,
                                     char *errstr, size_t errstr_size);

/* The fields of a message callback's inner XML ("" when absent). For the
 * customer-service event (MsgType "event", Event "kf_msg_or_event"), Token
 * and OpenKfId are what a sync_msg call needs. */
typedef struct {
  char to_user_name[KMQ_WECOM_MAX_FIELD + 1];
  int64_t create_time; /* 0 when absent */
  char msg_type[KMQ_WECOM_MAX_FIELD + 1];
  char event[KMQ_WECOM_MAX_FIELD + 1];
  char token[KMQ_WECOM_MAX_FIELD + 1];
  char open_kfid[KMQ_WECOM_MAX_FIELD + 1];
} kmq_wecom_callback_msg_t;

/* A message callback (the POST): parses the outer XML (body, body_len
 * bytes, need not be NUL-terminated) for its Encrypt field, checks
 * msg_signature over it and the timestamp against now, then decrypts,
 * checks the receive id and parses the inner XML into *msg (may be NULL:
 * no parse). On KMQ_WECOM_OK and xml_out not NULL, *xml_out is the inner
 * XML (NUL added; xml_len may be NULL). Every outcome has its own code:
 * VALIDATE_SIGNATURE, STALE_TIMESTAMP, PARSE_XML (outer or inner),
 * DECODE_BASE64, DECRYPT_AES (length not a multiple of the block, padding),
 * ILLEGAL_BUFFER (length field, size bounds), VALIDATE_CORPID, NOMEM. */
kmq_wecom_err_t kmq_wecom_decrypt_msg(const kmq_wecom_crypt_t *c,
                                      const char *msg_signature,
                                      const char *timestamp, const char *nonce,
                                      const char *body, size_t body_len,
                                      int64_t now,
                                      kmq_wecom_callback_msg_t *msg,
                                      char **xml_out, size_t *xml_len,
                                      char *errstr, size_t errstr_size);

/* Encrypts len bytes of plaintext (16 fresh random bytes from RAND_bytes in
 * front, the receive id behind) into *b64_out, the value of an Encrypt
 * field or an echostr. len <= KMQ_WECOM_MAX_BODY / 2. */
kmq_wecom_err_t kmq_wecom_encrypt_b64(const kmq_wecom_crypt_t *c,
                                      const void *plaintext, size_t len,
                                      char **b64_out, size_t *b64_len,
                                      char *errstr, size_t errstr_size);

/* The signed envelope around an Encrypt value (from kmq_wecom_encrypt_b64):
 * msg_signature into sig_out, which is what a simulated callback sends as
 * its query parameter, and the XML below into *xml_out. timestamp and
 * nonce as for kmq_wecom_encrypt; encrypt_b64 must be base64 of at most
 * KMQ_WECOM_MAX_BODY chars (else KMQ_WECOM_ERR_GEN_RETURN_XML). */
kmq_wecom_err_t kmq_wecom_envelope(const kmq_wecom_crypt_t *c,
                                   const char *encrypt_b64,
                                   const char *timestamp, const char *nonce,
                                   char sig_out[41], char **xml_out,
                                   size_t *xml_len, char *errstr,
                                   size_t errstr_size);

/* A signed envelope, as a reply or as a simulated callback body:
 * <xml><Encrypt>..</Encrypt><MsgSignature>..</MsgSignature>
 * <TimeStamp>..</TimeStamp><Nonce>..</Nonce></xml>, into *xml_out.
 * timestamp and nonce: 1..KMQ_WECOM_MAX_PARAM chars of [0-9A-Za-z_-]
 * (anything else is KMQ_WECOM_ERR_GEN_RETURN_XML). To post it as a
 * callback, send msg_signature = the MsgSignature inside, or build it in
 * two steps (kmq_wecom_encrypt_b64, kmq_wecom_envelope) to have it apart. */
kmq_wecom_err_t kmq_wecom_encrypt(const kmq_wecom_crypt_t *c,
                                  const void *plaintext, size_t len,
                                  const char *timestamp, const char *nonce,
                                  char **xml_out, size_t *xml_len,
                                  char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_WECOM_H */
