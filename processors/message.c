/* ChatMessage decoding and validation (see include/kmq/message.h). */
#include "kmq/message.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "processors/msg_internal.h"

struct kmq_msg_decoder_s {
  size_t max_bytes; /* kmq.msg.max.bytes, read once */
};

static const char *const kmq__type_names[KMQ_MSG_TYPE_CNT] = {
    [KMQ_MSG_TEXT] = "text",
    [KMQ_MSG_IMAGE] = "image",
    [KMQ_MSG_VOICE] = "voice",
    [KMQ_MSG_VIDEO] = "video",
    [KMQ_MSG_FILE] = "file",
    [KMQ_MSG_LOCATION] = "location",
    [KMQ_MSG_LINK] = "link",
    [KMQ_MSG_BUSINESS_CARD] = "business_card",
    [KMQ_MSG_MINIPROGRAM] = "miniprogram",
    [KMQ_MSG_MSGMENU] = "msgmenu",
    [KMQ_MSG_EVENT] = "event",
    [KMQ_MSG_UNKNOWN] = "unknown",
};

const char *kmq_msg_type_name(kmq_msg_type_t type) {
  if ((unsigned)type >= KMQ_MSG_TYPE_CNT)
    return "unknown";
  return kmq__type_names[type];
}

kmq_msg_type_t kmq_msg_type_from_str(const char *s, size_t len) {
  if (!s)
    return KMQ_MSG_UNKNOWN;
  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++)
    if (strlen(kmq__type_names[t]) == len &&
        !memcmp(kmq__type_names[t], s, len))
      return (kmq_msg_type_t)t;
  return KMQ_MSG_UNKNOWN;
}

const char *kmq_msg_reason(kmq_err_t err) {
  switch (err) {
  case KMQ_ERR_TOO_LARGE:
    return "too_large";
  case KMQ_ERR_BAD_UTF8:
    return "bad_utf8";
  case KMQ_ERR_BAD_JSON:
    return "bad_json";
  case KMQ_ERR_MISSING_USER:
    return "missing_user";
  case KMQ_ERR_BAD_FIELD:
    return "bad_field";
  default:
    return "decode_failed";
  }
}

/* ---- decoder ------------------------------------------------------------ */

kmq_msg_decoder_t *kmq_msg_decoder_new(const kmq_conf_t *conf, char *errstr,
                                       size_t errstr_size) {
  kmq_conf_t *defaults = NULL;
  kmq_msg_decoder_t *d = NULL;
  if (!conf) {
    /* An empty conf yields the documented defaults of every kmq.* key, so
     * the default lives in one place: the conf table. */
    defaults = kmq_conf_new();
    if (!defaults)
      goto fail_nomem;
    conf = defaults;
  }
  d = calloc(1, sizeof(*d));
  if (!d)
    goto fail_nomem;
  /* kmq_conf_set range-checks the value (64 .. 1 GiB). */
  d->max_bytes = (size_t)kmq_conf_get_int(conf, "kmq.msg.max.bytes");
  kmq_conf_destroy(defaults);
  return d;

fail_nomem:
  kmq_conf_destroy(defaults);
  kmq__errset(errstr, errstr_size, "out of memory creating a decoder");
  return NULL;
}

void kmq_msg_decoder_destroy(kmq_msg_decoder_t *d) { free(d); }

size_t kmq_msg_decoder_max_bytes(const kmq_msg_decoder_t *d) {
  return d->max_bytes;
}

/* ---- identity: user id and open_kfid ------------------------------------ */

typedef struct {
  const char *name; /* where it was read, for reasons */
  kmq_msg_str_t val;
} kmq__cand_t;

/* Picks the first non-empty candidate; any other non-empty one that differs
 * is a conflict. Returns the index picked, -1 when none is set, -2 on a
 * conflict (errstr filled). */
static int kmq__pick(const kmq__cand_t *c, int n, char *errstr,
                     size_t errstr_size) {
  int pick = -1;
  for (int i = 0; i < n; i++) {
    if (!c[i].val.len)
      continue;
    if (pick < 0) {
      pick = i;
    } else if (!kmq__str_eq(c[pick].val, c[i].val)) {
      char qa[KMQ__QUOTE_MAX * 4 + 8], qb[KMQ__QUOTE_MAX * 4 + 8];
      kmq__quote(qa, sizeof(qa), c[pick].val.ptr, c[pick].val.len);
      kmq__quote(qb, sizeof(qb), c[i].val.ptr, c[i].val.len);
      kmq__errset(errstr, errstr_size, "%s %s differs from %s %s", c[pick].name,
                  qa, c[i].name, qb);
      return -2;
    }
  }
  return pick;
}

static kmq_err_t kmq__resolve_ids(const json_t *root, const json_t *content,
                                  const json_t *event, kmq_chat_msg_t *msg,
                                  char *errstr, size_t errstr_size) {
  kmq_err_t err;
  kmq__cand_t u[3] = {{"external_user_id", KMQ__ABSENT},
                      {"content.external_userid", KMQ__ABSENT},
                      {"content.event.external_userid", KMQ__ABSENT}};
  int nu = event ? 3 : 2;
  if ((err = kmq__get_str(root, "", "external_user_id", 0, &u[0].val, errstr,
                          errstr_size)) ||
      (err = kmq__get_str(content, "content", "external_userid", 0, &u[1].val,
                          errstr, errstr_size)) ||
      (event && (err = kmq__get_str(event, "content.event", "external_userid",
                                    0, &u[2].val, errstr, errstr_size))))
    return err;
  int pick = kmq__pick(u, nu, errstr, errstr_size);
  if (pick == -2)
    return KMQ_ERR_BAD_FIELD;
  if (pick < 0) {
    /* Say what was seen: "absent" and "empty" point at different bugs. */
    static const char *const keys[3] = {"external_user_id", "external_userid",
                                        "external_userid"};
    const json_t *objs[3] = {root, content, event};
    char seen[256];
    size_t o = 0;
    for (int i = 0; i < nu && o < sizeof(seen); i++) {
      int w = snprintf(seen + o, sizeof(seen) - o, "%s%s %s", i ? ", " : "",
                       u[i].name,
                       kmq__member(objs[i], keys[i]) ? "empty" : "absent");
      if (w < 0)
        break;
      o += (size_t)w;
    }
    kmq__errset(errstr, errstr_size, "no user id: %s", seen);
    return KMQ_ERR_MISSING_USER;
  }
  msg->external_user_id = u[pick].val;

  kmq__cand_t k[3] = {{"open_kfid", KMQ__ABSENT},
                      {"content.open_kfid", KMQ__ABSENT},
                      {"content.event.open_kfid", KMQ__ABSENT}};
  if ((err = kmq__get_str(root, "", "open_kfid", 0, &k[0].val, errstr,
                          errstr_size)) ||
      (err = kmq__get_str(content, "content", "open_kfid", 0, &k[1].val,
                          errstr, errstr_size)) ||
      (event && (err = kmq__get_str(event, "content.event", "open_kfid", 0,
                                    &k[2].val, errstr, errstr_size))))
    return err;
  pick = kmq__pick(k, nu, errstr, errstr_size);
  if (pick == -2)
    return KMQ_ERR_BAD_FIELD;
  msg->open_kfid = pick >= 0 ? k[pick].val : KMQ__ABSENT;
  return KMQ_OK;
}

/* ---- envelope ----------------------------------------------------------- */

void kmq__msg_reset(kmq_chat_msg_t *m) {
  memset(m, 0, sizeof(*m));
  m->message_id = m->external_user_id = m->open_kfid = m->msg_type =
      m->servicer_userid = KMQ__ABSENT;
  m->type = KMQ_MSG_UNKNOWN;
}

kmq_err_t kmq__msg_extract(json_t *root, kmq_chat_msg_t *m, char *errstr,
                           size_t errstr_size) {
  kmq_err_t err;
  json_t *content = kmq__member(root, "content");
  json_t *event = NULL;
  kmq_msg_str_t ctype;
  int64_t origin;

  kmq__msg_reset(m);
  /* The type first (leniently) so that the user id may come from the event
   * body; msg_type's own errors are reported after the user id's. */
  kmq_msg_str_t t = KMQ__ABSENT;
  json_t *tv = kmq__member(root, "msg_type");
  if (tv && json_is_string(tv)) {
    t.ptr = json_string_value(tv);
    t.len = json_string_length(tv);
  }
  if (!json_is_object(content))
    content = NULL;
  if (content && kmq_msg_type_from_str(t.ptr, t.len) == KMQ_MSG_EVENT) {
    event = kmq__member(content, "event");
    if (!json_is_object(event))
      event = NULL;
  }

  if ((err = kmq__resolve_ids(root, content, event, m, errstr, errstr_size)) ||
      (err = kmq__get_str(root, "", "message_id", 1, &m->message_id, errstr,
                          errstr_size)) ||
      (err = kmq__get_str(root, "", "msg_type", 1, &m->msg_type, errstr,
                          errstr_size)) ||
      (err = kmq__get_int(root, "", "timestamp", 0, &m->timestamp, errstr,
                          errstr_size)) ||
      (err = kmq__get_obj(root, "", "content", 1, &content, errstr,
                          errstr_size)))
    goto fail;
  m->type = kmq_msg_type_from_str(m->msg_type.ptr, m->msg_type.len);

  if ((err = kmq__get_str(content, "content", "msgtype", 0, &ctype, errstr,
                          errstr_size)))
    goto fail;
  if (ctype.len && !kmq__str_eq(ctype, m->msg_type)) {
    char qa[KMQ__QUOTE_MAX * 4 + 8], qb[KMQ__QUOTE_MAX * 4 + 8];
    kmq__quote(qa, sizeof(qa), m->msg_type.ptr, m->msg_type.len);
    kmq__quote(qb, sizeof(qb), ctype.ptr, ctype.len);
    kmq__errset(errstr, errstr_size,
                "msg_type %s differs from content.msgtype %s", qa, qb);
    err = KMQ_ERR_BAD_FIELD;
    goto fail;
  }
  if ((err = kmq__get_int(content, "content", "send_time", 0, &m->send_time,
                          errstr, errstr_size)) ||
      (err = kmq__get_int(content, "content", "origin", 0, &origin, errstr,
                          errstr_size)) ||
      (err = kmq__get_str(content, "content", "servicer_userid", 0,
                          &m->servicer_userid, errstr, errstr_size)))
    goto fail;
  if (origin < INT_MIN || origin > INT_MAX) {
    kmq__errset(errstr, errstr_size, "content.origin %lld is out of range",
                (long long)origin);
    err = KMQ_ERR_BAD_FIELD;
    goto fail;
  }
  m->origin = (int)origin;

  kmq__msg_body_reset(m);
  if (m->type != KMQ_MSG_UNKNOWN) {
    char where[32];
    json_t *b;
    snprintf(where, sizeof(where), "content.%s", kmq_msg_type_name(m->type));
    if ((err = kmq__get_obj(content, "content", kmq_msg_type_name(m->type), 1,
                            &b, errstr, errstr_size)) ||
        (err = kmq__msg_extract_body(b, where, m, errstr, errstr_size)))
      goto fail;
  }
  m->content = content;
  return KMQ_OK;

fail:
  kmq__msg_reset(m);
  return err;
}

/* ---- decode ------------------------------------------------------------- */

kmq_err_t kmq_msg_decode(kmq_msg_decoder_t *d, const void *buf, size_t len,
                         kmq_chat_msg_t *out, char *errstr,
                         size_t errstr_size) {
  json_error_t je;
  json_t *root;
  kmq_err_t err;

  if (!out) {
    kmq__errset(errstr, errstr_size, "no output message");
    return KMQ_ERR_INVALID_ARG;
  }
  kmq__msg_reset(out);
  if (!d || (!buf && len)) {
    kmq__errset(errstr, errstr_size, "no decoder or no buffer");
    return KMQ_ERR_INVALID_ARG;
  }
  /* Before reading a byte: a huge value costs nothing to reject. */
  if (len > d->max_bytes) {
    kmq__errset(errstr, errstr_size,
                "value is %zu bytes, larger than kmq.msg.max.bytes=%zu", len,
                d->max_bytes);
    return KMQ_ERR_TOO_LARGE;
  }
  if (!len) {
    kmq__errset(errstr, errstr_size, "%s",
                buf ? "empty value (0 bytes)" : "null value (tombstone)");
    return KMQ_ERR_BAD_JSON;
  }
  /* jansson rejects bad UTF-8 too, but only as "unable to decode byte";
   * this says which byte and why. */
  if (kmq__utf8_check(buf, len, errstr, errstr_size))
    return KMQ_ERR_BAD_UTF8;

  /* Duplicate keys are rejected: {"external_user_id":"a",
   * "external_user_id":"b"} must not mean different users to different
   * readers. \u0000 is rejected (no JSON_ALLOW_NUL) so strings are C
   * strings. */
  root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    if (json_error_code(&je) == json_error_out_of_memory) {
      kmq__errset(errstr, errstr_size, "out of memory parsing %zu bytes", len);
      return KMQ_ERR_NOMEM;
    }
    /* jansson quotes the offending token, cut at any byte: keep the reason
     * valid UTF-8 and printable (it goes into DLQ JSON and headers). */
    kmq__utf8_scrub(je.text);
    kmq__errset(errstr, errstr_size,
                "invalid JSON at line %d column %d (byte %d): %s", je.line,
                je.column, je.position, je.text);
    return KMQ_ERR_BAD_JSON;
  }
  if (!json_is_object(root)) {
    kmq__errset(errstr, errstr_size,
                "top-level JSON value is %s, expected an object",
                kmq__json_type(root));
    json_decref(root);
    return KMQ_ERR_BAD_JSON;
  }
  if ((err = kmq__msg_extract(root, out, errstr, errstr_size))) {
    json_decref(root);
    return err;
  }
  out->_root = root;
  return KMQ_OK;
}

void kmq_chat_msg_clear(kmq_chat_msg_t *msg) {
  if (!msg)
    return;
  json_decref(msg->_root);
  kmq__msg_reset(msg);
}

bool kmq_msg_key_matches(const kmq_chat_msg_t *msg, const void *key,
                         size_t keylen) {
  if (!msg || !key || !msg->external_user_id.len)
    return false;
  return keylen == msg->external_user_id.len &&
         !memcmp(key, msg->external_user_id.ptr, keylen);
}
