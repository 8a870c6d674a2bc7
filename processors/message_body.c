/* Typed views of the WeCom bodies (content.<msgtype>) of a ChatMessage: what
 * is required per type, and the empty view of each type. */
#include <string.h>

#include "processors/msg_internal.h"

static kmq_err_t kmq__extract_event(const json_t *b, kmq_msg_event_t *e,
                                    char *errstr, size_t errstr_size) {
  static const char *w = "content.event";
  kmq_err_t err;
  struct {
    const char *key;
    kmq_msg_str_t *dst;
  } strs[] = {
      {"open_kfid", &e->open_kfid},
      {"external_userid", &e->external_userid},
      {"servicer_userid", &e->servicer_userid},
      {"scene", &e->scene},
      {"scene_param", &e->scene_param},
      {"welcome_code", &e->welcome_code},
      {"fail_msgid", &e->fail_msgid},
      {"old_servicer_userid", &e->old_servicer_userid},
      {"new_servicer_userid", &e->new_servicer_userid},
      {"msg_code", &e->msg_code},
      {"recall_msgid", &e->recall_msgid},
  };
  struct {
    const char *key;
    int64_t *dst;
  } ints[] = {{"fail_type", &e->fail_type},
              {"status", &e->status},
              {"stop_type", &e->stop_type},
              {"change_type", &e->change_type}};
  if ((err = kmq__get_str(b, w, "event_type", 1, &e->event_type, errstr,
                          errstr_size)))
    return err;
  for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
    if ((err = kmq__get_str(b, w, strs[i].key, 0, strs[i].dst, errstr,
                            errstr_size)))
      return err;
  for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
    if ((err = kmq__get_int(b, w, ints[i].key, -1, ints[i].dst, errstr,
                            errstr_size)))
      return err;
  return KMQ_OK;
}

/* b is content.<msgtype>, an object; where is "content.<msgtype>". */
kmq_err_t kmq__msg_extract_body(const json_t *b, const char *where,
                                   kmq_chat_msg_t *m, char *errstr,
                                   size_t errstr_size) {
  kmq_err_t err = KMQ_OK;
  char *es = errstr;
  size_t en = errstr_size;
#define KMQ__S(key, req, dst)                                                  \
  if ((err = kmq__get_str(b, where, key, req, dst, es, en)))                   \
  return err
  switch (m->type) {
  case KMQ_MSG_TEXT:
    KMQ__S("content", 1, &m->body.text.content);
    KMQ__S("menu_id", 0, &m->body.text.menu_id);
    break;
  case KMQ_MSG_IMAGE:
  case KMQ_MSG_VOICE:
  case KMQ_MSG_VIDEO:
  case KMQ_MSG_FILE:
    KMQ__S("media_id", 1, &m->body.media.media_id);
    break;
  case KMQ_MSG_LOCATION:
    if ((err = kmq__get_num(b, where, "latitude", &m->body.location.latitude,
                            es, en)) ||
        (err = kmq__get_num(b, where, "longitude", &m->body.location.longitude,
                            es, en)))
      return err;
    KMQ__S("name", 0, &m->body.location.name);
    KMQ__S("address", 0, &m->body.location.address);
    break;
  case KMQ_MSG_LINK:
    KMQ__S("url", 1, &m->body.link.url);
    KMQ__S("title", 0, &m->body.link.title);
    KMQ__S("desc", 0, &m->body.link.desc);
    KMQ__S("pic_url", 0, &m->body.link.pic_url);
    break;
  case KMQ_MSG_BUSINESS_CARD:
    KMQ__S("userid", 1, &m->body.business_card.userid);
    break;
  case KMQ_MSG_MINIPROGRAM:
    KMQ__S("appid", 1, &m->body.miniprogram.appid);
    KMQ__S("title", 0, &m->body.miniprogram.title);
    KMQ__S("pagepath", 0, &m->body.miniprogram.pagepath);
    KMQ__S("thumb_media_id", 0, &m->body.miniprogram.thumb_media_id);
    break;
  case KMQ_MSG_MSGMENU: {
    KMQ__S("head_content", 0, &m->body.msgmenu.head_content);
    KMQ__S("tail_content", 0, &m->body.msgmenu.tail_content);
    json_t *l = kmq__member(b, "list");
    if (l && !json_is_array(l)) {
      kmq__errset(es, en, "%s.list: expected an array, got %s", where,
                  kmq__json_type(l));
      return KMQ_ERR_BAD_FIELD;
    }
    m->body.msgmenu.list = l;
    break;
  }
  case KMQ_MSG_EVENT:
    return kmq__extract_event(b, &m->body.event, es, en);
  default:
    break;
  }
#undef KMQ__S
  return KMQ_OK;
}

void kmq__msg_body_reset(kmq_chat_msg_t *m) {
  const kmq_msg_str_t a = KMQ__ABSENT;
  memset(&m->body, 0, sizeof(m->body));
  switch (m->type) {
  case KMQ_MSG_TEXT:
    m->body.text.content = m->body.text.menu_id = a;
    break;
  case KMQ_MSG_IMAGE:
  case KMQ_MSG_VOICE:
  case KMQ_MSG_VIDEO:
  case KMQ_MSG_FILE:
    m->body.media.media_id = a;
    break;
  case KMQ_MSG_LOCATION:
    m->body.location.name = m->body.location.address = a;
    break;
  case KMQ_MSG_LINK: {
    kmq_msg_link_t *l = &m->body.link;
    l->title = l->desc = l->url = l->pic_url = a;
    break;
  }
  case KMQ_MSG_BUSINESS_CARD:
    m->body.business_card.userid = a;
    break;
  case KMQ_MSG_MINIPROGRAM: {
    kmq_msg_miniprogram_t *p = &m->body.miniprogram;
    p->title = p->appid = p->pagepath = p->thumb_media_id = a;
    break;
  }
  case KMQ_MSG_MSGMENU:
    m->body.msgmenu.head_content = m->body.msgmenu.tail_content = a;
    break;
  case KMQ_MSG_EVENT: {
    kmq_msg_event_t *e = &m->body.event;
    e->event_type = e->open_kfid = e->external_userid = e->servicer_userid = a;
    e->scene = e->scene_param = e->welcome_code = e->fail_msgid = a;
    e->old_servicer_userid = e->new_servicer_userid = e->msg_code = a;
    e->recall_msgid = a;
    e->fail_type = e->status = e->stop_type = e->change_type = -1;
    break;
  }
  default:
    break;
  }
}
