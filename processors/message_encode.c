/* ChatMessage encoding, builders and comparison (see include/kmq/message.h).
 * Not on the consume path: producers and tools call these. */
#include "kmq/message.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "processors/msg_internal.h"

void kmq_chat_msg_init(kmq_chat_msg_t *msg, kmq_msg_type_t type) {
  kmq__msg_reset(msg);
  msg->type = (unsigned)type < KMQ_MSG_TYPE_CNT ? type : KMQ_MSG_UNKNOWN;
  if (msg->type != KMQ_MSG_UNKNOWN)
    msg->msg_type = kmq_msg_str(kmq_msg_type_name(msg->type));
  kmq__msg_body_reset(msg);
}

/* ---- JSON building ------------------------------------------------------ */

/* Adds key: s to obj when s is set. where/key name the field in reasons. */
static kmq_err_t kmq__put_str(json_t *obj, const char *where, const char *key,
                              kmq_msg_str_t s, char *errstr,
                              size_t errstr_size) {
  if (!s.ptr || !s.len)
    return KMQ_OK;
  /* json_stringn fails alike on bad UTF-8 and on no memory: tell apart. */
  char why[160];
  if (kmq__utf8_check(s.ptr, s.len, why, sizeof(why))) {
    kmq__errset(errstr, errstr_size, "%s%s%s: %s", where, *where ? "." : "",
                key, why);
    return KMQ_ERR_BAD_UTF8;
  }
  if (json_object_set_new(obj, key, json_stringn(s.ptr, s.len))) {
    kmq__errset(errstr, errstr_size, "out of memory encoding %s", key);
    return KMQ_ERR_NOMEM;
  }
  return KMQ_OK;
}

static kmq_err_t kmq__put_int(json_t *obj, const char *key, int64_t v,
                              char *errstr, size_t errstr_size) {
  if (json_object_set_new(obj, key, json_integer((json_int_t)v))) {
    kmq__errset(errstr, errstr_size, "out of memory encoding %s", key);
    return KMQ_ERR_NOMEM;
  }
  return KMQ_OK;
}

static kmq_err_t kmq__put_real(json_t *obj, const char *where, const char *key,
                               double v, char *errstr, size_t errstr_size) {
  if (!isfinite(v)) {
    kmq__errset(errstr, errstr_size, "%s.%s is not a finite number", where,
                key);
    return KMQ_ERR_INVALID_ARG;
  }
  if (json_object_set_new(obj, key, json_real(v))) {
    kmq__errset(errstr, errstr_size, "out of memory encoding %s", key);
    return KMQ_ERR_NOMEM;
  }
  return KMQ_OK;
}

static kmq_err_t kmq__build_body(const kmq_chat_msg_t *m, json_t *b,
                                 const char *w, char *es, size_t en) {
  kmq_err_t err = KMQ_OK;
#define KMQ__S(key, val)                                                       \
  if ((err = kmq__put_str(b, w, key, val, es, en)))                            \
  return err
  switch (m->type) {
  case KMQ_MSG_TEXT:
    KMQ__S("content", m->body.text.content);
    KMQ__S("menu_id", m->body.text.menu_id);
    break;
  case KMQ_MSG_IMAGE:
  case KMQ_MSG_VOICE:
  case KMQ_MSG_VIDEO:
  case KMQ_MSG_FILE:
    KMQ__S("media_id", m->body.media.media_id);
    break;
  case KMQ_MSG_LOCATION:
    if ((err = kmq__put_real(b, w, "latitude", m->body.location.latitude, es,
                             en)) ||
        (err = kmq__put_real(b, w, "longitude", m->body.location.longitude,
                             es, en)))
      return err;
    KMQ__S("name", m->body.location.name);
    KMQ__S("address", m->body.location.address);
    break;
  case KMQ_MSG_LINK:
    KMQ__S("title", m->body.link.title);
    KMQ__S("desc", m->body.link.desc);
    KMQ__S("url", m->body.link.url);
    KMQ__S("pic_url", m->body.link.pic_url);
    break;
  case KMQ_MSG_BUSINESS_CARD:
    KMQ__S("userid", m->body.business_card.userid);
    break;
  case KMQ_MSG_MINIPROGRAM:
    KMQ__S("title", m->body.miniprogram.title);
    KMQ__S("appid", m->body.miniprogram.appid);
    KMQ__S("pagepath", m->body.miniprogram.pagepath);
    KMQ__S("thumb_media_id", m->body.miniprogram.thumb_media_id);
    break;
  case KMQ_MSG_MSGMENU:
    KMQ__S("head_content", m->body.msgmenu.head_content);
    /* json_object_set takes its own reference: the caller's list stays
     * theirs. jansson's API is not const-correct, hence the cast. */
    if (m->body.msgmenu.list &&
        json_object_set(b, "list", (json_t *)m->body.msgmenu.list)) {
      kmq__errset(es, en, "out of memory encoding list");
      return KMQ_ERR_NOMEM;
    }
    KMQ__S("tail_content", m->body.msgmenu.tail_content);
    break;
  case KMQ_MSG_EVENT: {
    const kmq_msg_event_t *e = &m->body.event;
    KMQ__S("event_type", e->event_type);
    KMQ__S("open_kfid", e->open_kfid);
    KMQ__S("external_userid", e->external_userid);
    KMQ__S("servicer_userid", e->servicer_userid);
    KMQ__S("scene", e->scene);
    KMQ__S("scene_param", e->scene_param);
    KMQ__S("welcome_code", e->welcome_code);
    KMQ__S("fail_msgid", e->fail_msgid);
    KMQ__S("old_servicer_userid", e->old_servicer_userid);
    KMQ__S("new_servicer_userid", e->new_servicer_userid);
    KMQ__S("msg_code", e->msg_code);
    KMQ__S("recall_msgid", e->recall_msgid);
    const struct {
      const char *key;
      int64_t v;
    } ints[] = {{"fail_type", e->fail_type},
                {"status", e->status},
                {"stop_type", e->stop_type},
                {"change_type", e->change_type}};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
      if (ints[i].v != -1 &&
          (err = kmq__put_int(b, ints[i].key, ints[i].v, es, en)))
        return err;
    break;
  }
  default:
    break;
  }
#undef KMQ__S
  return KMQ_OK;
}

/* The WeCom object for a message being built: common fields, then the body
 * under its msgtype, in WeCom's order. */
static kmq_err_t kmq__build_content(const kmq_chat_msg_t *m, json_t **outp,
                                    char *es, size_t en) {
  kmq_err_t err;
  json_t *c = json_object(), *b = NULL;
  if (!c)
    goto fail_nomem;
  if ((err = kmq__put_str(c, "content", "msgid", m->message_id, es, en)) ||
      (err = kmq__put_str(c, "content", "open_kfid", m->open_kfid, es, en)) ||
      (err = kmq__put_str(c, "content", "external_userid",
                          m->external_user_id, es, en)) ||
      (m->send_time &&
       (err = kmq__put_int(c, "send_time", m->send_time, es, en))) ||
      (m->origin && (err = kmq__put_int(c, "origin", m->origin, es, en))) ||
      (err = kmq__put_str(c, "content", "servicer_userid", m->servicer_userid,
                          es, en)) ||
      (err = kmq__put_str(c, "content", "msgtype", m->msg_type, es, en)))
    goto fail;
  if (m->type != KMQ_MSG_UNKNOWN) {
    char where[32];
    const char *name = kmq_msg_type_name(m->type);
    snprintf(where, sizeof(where), "content.%s", name);
    if (!(b = json_object()))
      goto fail_nomem;
    if ((err = kmq__build_body(m, b, where, es, en)))
      goto fail;
    if (json_object_set_new(c, name, b)) {
      b = NULL; /* json_object_set_new releases it even on failure */
      goto fail_nomem;
    }
    b = NULL;
  }
  *outp = c;
  return KMQ_OK;

fail_nomem:
  err = KMQ_ERR_NOMEM;
  kmq__errset(es, en, "out of memory encoding content");
fail:
  json_decref(b);
  json_decref(c);
  return err;
}

kmq_err_t kmq_msg_encode(const kmq_chat_msg_t *m, char **outp, size_t *lenp,
                         char *errstr, size_t errstr_size) {
  kmq_err_t err;
  json_t *root = NULL, *content = NULL;
  kmq_chat_msg_t check;
  char *buf = NULL;

  if (outp)
    *outp = NULL;
  if (lenp)
    *lenp = 0;
  if (!m || !outp) {
    kmq__errset(errstr, errstr_size, "no message or no output pointer");
    return KMQ_ERR_INVALID_ARG;
  }
  if ((unsigned)m->type >= KMQ_MSG_TYPE_CNT ||
      kmq_msg_type_from_str(m->msg_type.ptr, m->msg_type.len) != m->type) {
    char q[KMQ__QUOTE_MAX * 4 + 8];
    kmq__quote(q, sizeof(q), m->msg_type.ptr ? m->msg_type.ptr : "",
               m->msg_type.ptr ? m->msg_type.len : 0);
    kmq__errset(errstr, errstr_size,
                "msg_type %s does not match type %s (%d)", q,
                kmq_msg_type_name(m->type), (int)m->type);
    return KMQ_ERR_INVALID_ARG;
  }

  if (!(root = json_object())) {
    err = KMQ_ERR_NOMEM;
    kmq__errset(errstr, errstr_size, "out of memory encoding the envelope");
    goto fail;
  }
  if ((err = kmq__put_str(root, "", "message_id", m->message_id, errstr,
                          errstr_size)) ||
      (err = kmq__put_str(root, "", "external_user_id", m->external_user_id,
                          errstr, errstr_size)) ||
      (err = kmq__put_str(root, "", "open_kfid", m->open_kfid, errstr,
                          errstr_size)) ||
      (err = kmq__put_str(root, "", "msg_type", m->msg_type, errstr,
                          errstr_size)))
    goto fail;
  if (m->content) {
    content = json_incref(m->content);
  } else if ((err = kmq__build_content(m, &content, errstr, errstr_size))) {
    goto fail;
  }
  if (json_object_set_new(root, "content", content)) {
    err = KMQ_ERR_NOMEM;
    kmq__errset(errstr, errstr_size, "out of memory encoding the envelope");
    goto fail;
  }
  if ((err = kmq__put_int(root, "timestamp", m->timestamp, errstr,
                          errstr_size)))
    goto fail;

  /* The decoder's own rules, on the tree about to be written. */
  if ((err = kmq__msg_extract(root, &check, errstr, errstr_size)))
    goto fail;

  size_t n = json_dumpb(root, NULL, 0, JSON_COMPACT);
  if (!n || !(buf = malloc(n + 1)) ||
      json_dumpb(root, buf, n, JSON_COMPACT) != n) {
    err = KMQ_ERR_NOMEM;
    kmq__errset(errstr, errstr_size, "out of memory serialising %zu bytes", n);
    goto fail;
  }
  buf[n] = '\0';
  json_decref(root);
  *outp = buf;
  if (lenp)
    *lenp = n;
  return KMQ_OK;

fail:
  free(buf);
  json_decref(root);
  return err;
}

kmq_err_t kmq_msg_build_text(const char *external_user_id,
                             const char *open_kfid, const char *msgid,
                             const char *text, int64_t send_time, char **outp,
                             size_t *lenp, char *errstr, size_t errstr_size) {
  kmq_chat_msg_t m;
  kmq_chat_msg_init(&m, KMQ_MSG_TEXT);
  m.message_id = kmq_msg_str(msgid);
  m.external_user_id = kmq_msg_str(external_user_id);
  m.open_kfid = kmq_msg_str(open_kfid);
  m.timestamp = send_time * 1000;
  m.send_time = send_time;
  m.origin = KMQ_MSG_ORIGIN_CUSTOMER;
  m.body.text.content = kmq_msg_str(text);
  return kmq_msg_encode(&m, outp, lenp, errstr, errstr_size);
}

/* ---- comparison --------------------------------------------------------- */

static int kmq__body_eq(const kmq_chat_msg_t *a, const kmq_chat_msg_t *b) {
#define EQ(f) kmq__str_eq(a->body.f, b->body.f)
  switch (a->type) {
  case KMQ_MSG_TEXT:
    return EQ(text.content) && EQ(text.menu_id);
  case KMQ_MSG_IMAGE:
  case KMQ_MSG_VOICE:
  case KMQ_MSG_VIDEO:
  case KMQ_MSG_FILE:
    return EQ(media.media_id);
  case KMQ_MSG_LOCATION:
    return a->body.location.latitude == b->body.location.latitude &&
           a->body.location.longitude == b->body.location.longitude &&
           EQ(location.name) && EQ(location.address);
  case KMQ_MSG_LINK:
    return EQ(link.title) && EQ(link.desc) && EQ(link.url) &&
           EQ(link.pic_url);
  case KMQ_MSG_BUSINESS_CARD:
    return EQ(business_card.userid);
  case KMQ_MSG_MINIPROGRAM:
    return EQ(miniprogram.title) && EQ(miniprogram.appid) &&
           EQ(miniprogram.pagepath) && EQ(miniprogram.thumb_media_id);
  case KMQ_MSG_MSGMENU: {
    const json_t *la = a->body.msgmenu.list, *lb = b->body.msgmenu.list;
    return EQ(msgmenu.head_content) && EQ(msgmenu.tail_content) &&
           ((!la && !lb) || (la && lb && json_equal(la, lb)));
  }
  case KMQ_MSG_EVENT: {
    const kmq_msg_event_t *x = &a->body.event, *y = &b->body.event;
    return EQ(event.event_type) && EQ(event.open_kfid) &&
           EQ(event.external_userid) && EQ(event.servicer_userid) &&
           EQ(event.scene) && EQ(event.scene_param) &&
           EQ(event.welcome_code) && EQ(event.fail_msgid) &&
           EQ(event.old_servicer_userid) && EQ(event.new_servicer_userid) &&
           EQ(event.msg_code) && EQ(event.recall_msgid) &&
           x->fail_type == y->fail_type && x->status == y->status &&
           x->stop_type == y->stop_type && x->change_type == y->change_type;
  }
  default:
    return 1;
  }
#undef EQ
}

bool kmq_chat_msg_equal(const kmq_chat_msg_t *a, const kmq_chat_msg_t *b) {
  if (a == b)
    return true;
  if (!a || !b)
    return false;
  if (a->type != b->type || !kmq__str_eq(a->message_id, b->message_id) ||
      !kmq__str_eq(a->external_user_id, b->external_user_id) ||
      !kmq__str_eq(a->open_kfid, b->open_kfid) ||
      !kmq__str_eq(a->msg_type, b->msg_type) || a->timestamp != b->timestamp ||
      a->send_time != b->send_time || a->origin != b->origin ||
      !kmq__str_eq(a->servicer_userid, b->servicer_userid) ||
      !kmq__body_eq(a, b))
    return false;
  if (a->content && b->content)
    return json_equal(a->content, b->content);
  return true;
}
