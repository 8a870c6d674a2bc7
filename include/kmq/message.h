/*
 * kmq message model: the ChatMessage envelope carried on the Kafka topic.
 *
 * Wire format (the record value, UTF-8 JSON, one object):
 *   {"message_id": "<id>", "external_user_id": "<wm...>",
 *    "open_kfid": "<wk...>", "msg_type": "text", "timestamp": <ms>,
 *    "content": <one msg_list item of WeCom kf/sync_msg, as WeCom sent it>}
 * The record key is the external_user_id (kmq_msg_key_matches()).
 *
 * Validation (kmq_msg_decode), in this order, each failure with its own code
 * and a reason in errstr that names the offending detail:
 *   1. size > kmq.msg.max.bytes            -> KMQ_ERR_TOO_LARGE (nothing read)
 *   2. empty value (or tombstone)          -> KMQ_ERR_BAD_JSON
 *      invalid UTF-8 (strict, RFC 3629)    -> KMQ_ERR_BAD_UTF8
 *   3. not JSON, duplicate key, \u0000, not an object -> KMQ_ERR_BAD_JSON
 *   4. the user id, resolved as: envelope "external_user_id" (authoritative),
 *      else content.external_userid, else content.event.external_userid (WeCom
 *      puts it there for events). None present or the chosen one empty ->
 *      KMQ_ERR_MISSING_USER; two present and different -> KMQ_ERR_BAD_FIELD.
 *   5. message_id / msg_type / content missing, empty or of the wrong JSON
 *      type, content.msgtype != msg_type, conflicting open_kfid, a known type
 *      without its body object (content.text, ...) or its key field
 *      (text.content, *.media_id, ...), any typed field of the wrong JSON
 *      type -> KMQ_ERR_BAD_FIELD.
 *   An unknown msg_type is not an error: it decodes as KMQ_MSG_UNKNOWN with
 *   the type string kept, and the processor registry routes it to its
 *   default processor. Unknown envelope keys are ignored (forward compatible).
 * docs/bad-input.md lists every case with its reason string and DLQ fate.
 *
 * Memory: a decoded kmq_chat_msg_t lives in caller storage and owns one
 * reference to the parsed JSON tree; every pointer in it (strings, content,
 * msgmenu list) points into that tree and stays valid until
 * kmq_chat_msg_clear() on that message, whatever else happens: further
 * decodes on the same decoder, destroying the decoder, other threads. The
 * struct may be moved by assignment (e.g. from the poll thread's slot into an
 * actor's); clear exactly one copy. Parsing allocates the tree (jansson); the
 * decoder itself allocates nothing per message.
 *
 * Threads: decoding only reads the decoder's limits, so one decoder may be
 * shared by every worker (the runtime does); decoded messages are plain data that any one thread may read and clear.
 * Encoding functions are reentrant.
 */
#ifndef KMQ_MESSAGE_H
#define KMQ_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kmq/conf.h"
#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* WeCom msgtype. The order is the registry's array index: append only. */
typedef enum {
  KMQ_MSG_TEXT,
  KMQ_MSG_IMAGE,
  KMQ_MSG_VOICE,
  KMQ_MSG_VIDEO,
  KMQ_MSG_FILE,
  KMQ_MSG_LOCATION,
  KMQ_MSG_LINK,
  KMQ_MSG_BUSINESS_CARD,
  KMQ_MSG_MINIPROGRAM,
  KMQ_MSG_MSGMENU,
  KMQ_MSG_EVENT,
  KMQ_MSG_UNKNOWN, /* any other msgtype string: see kmq_chat_msg_t.msg_type */
  KMQ_MSG_TYPE_CNT
} kmq_msg_type_t;

/* content.origin */
#define KMQ_MSG_ORIGIN_CUSTOMER 3 /* sent by the WeChat user */
#define KMQ_MSG_ORIGIN_SYSTEM 4   /* system event */
#define KMQ_MSG_ORIGIN_SERVICER 5 /* sent by a servicer from WeCom */

/* A string of a message. In a decoded message ptr is never NULL: an absent
 * field reads as "" (len 0), and every string is NUL-terminated, valid UTF-8
 * and free of NUL bytes (\u0000 is rejected), so ptr is a usable C string.
 * When filling a message for kmq_msg_encode(), ptr == NULL or len == 0 means
 * "absent". */
typedef struct kmq_msg_str_s {
  const char *ptr;
  size_t len;
} kmq_msg_str_t;

/* A kmq_msg_str_t over a C string (NULL gives the absent string). The string
 * is borrowed, not copied. */
static inline kmq_msg_str_t kmq_msg_str(const char *s) {
  kmq_msg_str_t r = {s, 0};
  if (s)
    while (s[r.len])
      r.len++;
  return r;
}

/* Typed views of the WeCom bodies, content.<msgtype>. */
typedef struct kmq_msg_text_s {
  kmq_msg_str_t content; /* required */
  kmq_msg_str_t menu_id; /* set when the user clicked a msgmenu item */
} kmq_msg_text_t;

/* image, voice, video, file */
typedef struct kmq_msg_media_s {
  kmq_msg_str_t media_id; /* required */
} kmq_msg_media_t;

typedef struct kmq_msg_location_s {
  double latitude, longitude; /* required (JSON numbers) */
  kmq_msg_str_t name, address;
} kmq_msg_location_t;

typedef struct kmq_msg_link_s {
  kmq_msg_str_t title, desc, url /* required */, pic_url;
} kmq_msg_link_t;

typedef struct kmq_msg_business_card_s {
  kmq_msg_str_t userid; /* required */
} kmq_msg_business_card_t;

typedef struct kmq_msg_miniprogram_s {
  kmq_msg_str_t title, appid /* required */, pagepath, thumb_media_id;
} kmq_msg_miniprogram_t;

typedef struct kmq_msg_msgmenu_s {
  kmq_msg_str_t head_content, tail_content;
  /* The "list" array as WeCom sent it (click / view / miniprogram items),
   * borrowed from the message; NULL when absent. */
  const json_t *list;
} kmq_msg_msgmenu_t;

/* Integer event fields read -1 when absent (0 is a meaningful fail_type). */
typedef struct kmq_msg_event_s {
  kmq_msg_str_t event_type; /* required: enter_session, msg_send_fail, ... */
  kmq_msg_str_t open_kfid, external_userid, servicer_userid;
  kmq_msg_str_t scene, scene_param, welcome_code;    /* enter_session */
  kmq_msg_str_t fail_msgid;                          /* msg_send_fail */
  kmq_msg_str_t old_servicer_userid, new_servicer_userid, msg_code;
  kmq_msg_str_t recall_msgid; /* user_recall_msg, servicer_recall_msg */
  int64_t fail_type, status, stop_type, change_type;
} kmq_msg_event_t;

/* A decoded ChatMessage. The fields before `content` are the typed view;
 * `content` gives everything else. */
typedef struct kmq_chat_msg_s {
  /* Envelope. */
  kmq_msg_str_t message_id;       /* required */
  kmq_msg_str_t external_user_id; /* resolved user id: never empty */
  kmq_msg_str_t open_kfid;        /* envelope, else content(.event).open_kfid */
  kmq_msg_type_t type;
  kmq_msg_str_t msg_type; /* the type string as sent, e.g. "text" */
  int64_t timestamp;      /* envelope timestamp, ms since epoch; 0: absent */

  /* Common WeCom fields of content. */
  int64_t send_time;             /* seconds since epoch; 0: absent */
  int origin;                    /* KMQ_MSG_ORIGIN_*; 0: absent */
  kmq_msg_str_t servicer_userid; /* origin 5 */

  /* content.<msgtype>, selected by `type`; all zero for KMQ_MSG_UNKNOWN. */
  union {
    kmq_msg_text_t text;
    kmq_msg_media_t media; /* image, voice, video, file */
    kmq_msg_location_t location;
    kmq_msg_link_t link;
    kmq_msg_business_card_t business_card;
    kmq_msg_miniprogram_t miniprogram;
    kmq_msg_msgmenu_t msgmenu;
    kmq_msg_event_t event;
  } body;

  /* The whole WeCom object, borrowed from the message (do not decref; take
   * your own json_incref() to keep a part past kmq_chat_msg_clear()). For
   * kmq_msg_encode(): a tree to write as-is, or NULL to build it from the
   * typed view. */
  json_t *content;

  json_t *_root; /* private: the parsed envelope this message owns */
} kmq_chat_msg_t;

typedef struct kmq_msg_decoder_s kmq_msg_decoder_t;

/* "text", "image", ..., "event"; "unknown" for KMQ_MSG_UNKNOWN and for values
 * out of range. Static; never NULL. */
const char *kmq_msg_type_name(kmq_msg_type_t type);

/* The type of a WeCom msgtype string (exact, case-sensitive match);
 * KMQ_MSG_UNKNOWN for anything else, including NULL. */
kmq_msg_type_t kmq_msg_type_from_str(const char *s, size_t len);

/* Creates a decoder. Reads kmq.msg.max.bytes from conf once (conf is not
 * kept; NULL means all defaults). Returns NULL with errstr filled when out of
 * memory. Destroy with kmq_msg_decoder_destroy(). */
kmq_msg_decoder_t *kmq_msg_decoder_new(const kmq_conf_t *conf, char *errstr,
                                       size_t errstr_size);

/* No-op on NULL. Messages decoded by d stay valid (they own their trees). */
void kmq_msg_decoder_destroy(kmq_msg_decoder_t *d);

/* The size limit the decoder applies, in bytes. */
size_t kmq_msg_decoder_max_bytes(const kmq_msg_decoder_t *d);

/* Decodes and validates one record value (buf is borrowed, not kept; buf may
 * be NULL only with len 0, a tombstone). `out` is caller storage treated as
 * uninitialised: clear a message it held before, or that message leaks.
 * Returns KMQ_OK with `out` filled (release it with kmq_chat_msg_clear()), or
 * one of TOO_LARGE, BAD_UTF8, BAD_JSON, MISSING_USER, BAD_FIELD (INVALID_ARG
 * for NULL d/out, NOMEM) with the reason in errstr and `out` empty: on every
 * return kmq_chat_msg_clear(out) is valid and a no-op after an error.
 * @locality any thread: decode only reads d's limits, so one decoder may
 * serve every worker (the runtime shares one). */
kmq_err_t kmq_msg_decode(kmq_msg_decoder_t *d, const void *buf, size_t len,
                         kmq_chat_msg_t *out, char *errstr,
                         size_t errstr_size);

/* Drops the message's tree and resets it to empty. After it every pointer the
 * message handed out is invalid. No-op on NULL or an empty message. */
void kmq_chat_msg_clear(kmq_chat_msg_t *msg);

/* True when the Kafka record key is exactly the message's user id. A
 * mismatch is the caller's call (kmq's runtime dead-letters it as BAD_FIELD
 * with reason KMQ_MSG_REASON_KEY_MISMATCH): a wrong key means the record may
 * sit in another user's partition, out of order. */
bool kmq_msg_key_matches(const kmq_chat_msg_t *msg, const void *key,
                         size_t keylen);

/* Short machine-readable DLQ reason of a decode error: "too_large",
 * "bad_utf8", "bad_json", "missing_user", "bad_field"; "decode_failed" for
 * any other code. Static; never NULL. */
const char *kmq_msg_reason(kmq_err_t err);
#define KMQ_MSG_REASON_KEY_MISMATCH "key_mismatch"

/* Field-by-field equality of two messages' typed views (strings by bytes,
 * an absent string equal to "", doubles exactly, msgmenu lists by
 * json_equal), plus their content trees (json_equal) when both have one: a
 * message filled for kmq_msg_encode() has none and compares by its view. */
bool kmq_chat_msg_equal(const kmq_chat_msg_t *a, const kmq_chat_msg_t *b);

/* Sets msg to an empty message of the given type for kmq_msg_encode(): every
 * string absent, event integers -1, content NULL. msg_type is set to the
 * type's name (for KMQ_MSG_UNKNOWN set it yourself). */
void kmq_chat_msg_init(kmq_chat_msg_t *msg, kmq_msg_type_t type);

/* Serialises msg as a compact envelope. When msg->content is non-NULL it is
 * written as the content as-is and the typed body is ignored; when NULL the
 * content is built from the common fields (msgid = message_id) and the body
 * selected by msg->type. Either way the result is validated exactly as
 * kmq_msg_decode() validates (except the size limit, which is the decoder's:
 * compare *lenp yourself), so encode never produces an envelope decode
 * rejects for its content. msg and every string in it are borrowed.
 * On KMQ_OK *outp is a new NUL-terminated string of *lenp bytes that the
 * caller frees with free(). On error (INVALID_ARG, NOMEM, BAD_UTF8 for a
 * string that is not UTF-8, or the decode error) *outp is NULL and errstr
 * says why. */
kmq_err_t kmq_msg_encode(const kmq_chat_msg_t *msg, char **outp, size_t *lenp,
                         char *errstr, size_t errstr_size);

/* Convenience for producers: the envelope of a customer's text message
 * (origin 3, timestamp = send_time * 1000). All strings are borrowed C
 * strings; open_kfid may be NULL. Ownership and errors as kmq_msg_encode(). */
kmq_err_t kmq_msg_build_text(const char *external_user_id,
                             const char *open_kfid, const char *msgid,
                             const char *text, int64_t send_time, char **outp,
                             size_t *lenp, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_MESSAGE_H */
