/* Message model: round trips of every type, every bad input with its exact
 * code and reason, the user id rules, key matching and lifetimes. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/message.h"
#include "processors/msg_internal.h" /* kmq__utf8_check */
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static kmq_msg_decoder_t *dec_new(const char *max_bytes) {
  char errstr[256];
  kmq_conf_t *conf = NULL;
  if (max_bytes) {
    conf = kmq_conf_new();
    ck_assert_int_eq(kmq_conf_set(conf, "kmq.msg.max.bytes", max_bytes, errstr,
                                  sizeof(errstr)),
                     KMQ_OK);
  }
  kmq_msg_decoder_t *d = kmq_msg_decoder_new(conf, errstr, sizeof(errstr));
  ck_assert_msg(d, "decoder: %s", errstr);
  kmq_conf_destroy(conf);
  return d;
}

/* Decodes len bytes and checks the code and that the reason contains each
 * of the NULL-terminated needles. */
static void expect_n(const void *buf, size_t len, kmq_err_t want, ...) {
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  char errstr[512] = "";
  kmq_err_t err = kmq_msg_decode(d, buf, len, &m, errstr, sizeof(errstr));
  ck_assert_msg(err == want, "got %s (%s), want %s for: %.*s",
                kmq_err_name(err), errstr, kmq_err_name(want), (int)len,
                (const char *)buf);
  va_list ap;
  va_start(ap, want);
  for (const char *n; (n = va_arg(ap, const char *));)
    ck_assert_msg(strstr(errstr, n), "reason \"%s\" lacks \"%s\"", errstr, n);
  va_end(ap);
  if (err) {
    ck_assert_ptr_null(m.content);
    ck_assert_ptr_null(m._root);
  }
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
}
/* EXPECT(json, code, needle...) */
#define EXPECT(json, ...)                                                      \
  expect_n(json, strlen(json), __VA_ARGS__, (const char *)NULL)

/* Decodes json, which must succeed; clear *m afterwards. */
static void decode_ok(kmq_msg_decoder_t *d, const char *json,
                      kmq_chat_msg_t *m) {
  char errstr[512] = "";
  kmq_err_t err = kmq_msg_decode(d, json, strlen(json), m, errstr,
                                 sizeof(errstr));
  ck_assert_msg(err == KMQ_OK, "%s: %s for %s", kmq_err_name(err), errstr,
                json);
}

static void str_is(kmq_msg_str_t s, const char *want, const char *field) {
  ck_assert_msg(s.ptr, "%s: NULL pointer", field);
  ck_assert_msg(s.len == strlen(want) && !memcmp(s.ptr, want, s.len) &&
                    s.ptr[s.len] == '\0',
                "%s: got \"%.*s\" (%zu), want \"%s\"", field, (int)s.len,
                s.ptr, s.len, want);
}

static void str_same(kmq_msg_str_t a, kmq_msg_str_t b, const char *field) {
  size_t la = a.ptr ? a.len : 0, lb = b.ptr ? b.len : 0;
  ck_assert_msg(la == lb && (!la || !memcmp(a.ptr, b.ptr, la)),
                "%s: \"%.*s\" != \"%.*s\"", field, (int)la, la ? a.ptr : "",
                (int)lb, lb ? b.ptr : "");
}

/* Field by field, with the field's name on failure. */
static void assert_same(const kmq_chat_msg_t *a, const kmq_chat_msg_t *b) {
#define S(f) str_same(a->f, b->f, #f)
#define I(f) ck_assert_msg(a->f == b->f, #f ": %lld != %lld", \
                           (long long)a->f, (long long)b->f)
  ck_assert_int_eq(a->type, b->type);
  S(message_id);
  S(external_user_id);
  S(open_kfid);
  S(msg_type);
  I(timestamp);
  I(send_time);
  I(origin);
  S(servicer_userid);
  switch (a->type) {
  case KMQ_MSG_TEXT:
    S(body.text.content);
    S(body.text.menu_id);
    break;
  case KMQ_MSG_IMAGE:
  case KMQ_MSG_VOICE:
  case KMQ_MSG_VIDEO:
  case KMQ_MSG_FILE:
    S(body.media.media_id);
    break;
  case KMQ_MSG_LOCATION:
    ck_assert(a->body.location.latitude == b->body.location.latitude);
    ck_assert(a->body.location.longitude == b->body.location.longitude);
    S(body.location.name);
    S(body.location.address);
    break;
  case KMQ_MSG_LINK:
    S(body.link.title);
    S(body.link.desc);
    S(body.link.url);
    S(body.link.pic_url);
    break;
  case KMQ_MSG_BUSINESS_CARD:
    S(body.business_card.userid);
    break;
  case KMQ_MSG_MINIPROGRAM:
    S(body.miniprogram.title);
    S(body.miniprogram.appid);
    S(body.miniprogram.pagepath);
    S(body.miniprogram.thumb_media_id);
    break;
  case KMQ_MSG_MSGMENU:
    S(body.msgmenu.head_content);
    S(body.msgmenu.tail_content);
    ck_assert(json_equal(a->body.msgmenu.list, b->body.msgmenu.list));
    break;
  case KMQ_MSG_EVENT:
    S(body.event.event_type);
    S(body.event.open_kfid);
    S(body.event.external_userid);
    S(body.event.servicer_userid);
    S(body.event.scene);
    S(body.event.scene_param);
    S(body.event.welcome_code);
    S(body.event.fail_msgid);
    S(body.event.old_servicer_userid);
    S(body.event.new_servicer_userid);
    S(body.event.msg_code);
    S(body.event.recall_msgid);
    I(body.event.fail_type);
    I(body.event.status);
    I(body.event.stop_type);
    I(body.event.change_type);
    break;
  default:
    break;
  }
#undef S
#undef I
}

/* A message of type t with every field of its view set. list: a msgmenu list
 * the caller decrefs. */
static void fill(kmq_chat_msg_t *m, kmq_msg_type_t t, json_t **list) {
  kmq_chat_msg_init(m, t);
  if (t == KMQ_MSG_UNKNOWN)
    m->msg_type = kmq_msg_str("channels_shop_product");
  m->message_id = kmq_msg_str("msg-1");
  m->external_user_id = kmq_msg_str("wmAAAA_user");
  m->open_kfid = kmq_msg_str("wkBBBB");
  m->timestamp = 1700000000123;
  m->send_time = 1700000000;
  m->origin = t == KMQ_MSG_EVENT ? KMQ_MSG_ORIGIN_SYSTEM
                                 : KMQ_MSG_ORIGIN_CUSTOMER;
  *list = NULL;
  switch (t) {
  case KMQ_MSG_TEXT:
    m->body.text.content = kmq_msg_str("你好，我想咨询一下订单 #42");
    m->body.text.menu_id = kmq_msg_str("101");
    break;
  case KMQ_MSG_IMAGE:
  case KMQ_MSG_VOICE:
  case KMQ_MSG_VIDEO:
  case KMQ_MSG_FILE:
    m->body.media.media_id = kmq_msg_str("2iSLeVyqzk4e0XRGaJq0wDH");
    break;
  case KMQ_MSG_LOCATION:
    m->body.location.latitude = 23.106021881103501;
    m->body.location.longitude = -113.320503234863;
    m->body.location.name = kmq_msg_str("广州国际媒体港(广州市海珠区)");
    m->body.location.address = kmq_msg_str("广东省广州市海珠区滨江东路");
    break;
  case KMQ_MSG_LINK:
    m->body.link.title = kmq_msg_str("TITLE");
    m->body.link.desc = kmq_msg_str("DESC \"quoted\"\n");
    m->body.link.url = kmq_msg_str("https://example.com/a?b=c&d=e");
    m->body.link.pic_url = kmq_msg_str("https://example.com/p.png");
    break;
  case KMQ_MSG_BUSINESS_CARD:
    m->body.business_card.userid = kmq_msg_str("zhangsan");
    break;
  case KMQ_MSG_MINIPROGRAM:
    m->body.miniprogram.title = kmq_msg_str("小程序");
    m->body.miniprogram.appid = kmq_msg_str("wx123123123123123");
    m->body.miniprogram.pagepath = kmq_msg_str("pages/index?x=1");
    m->body.miniprogram.thumb_media_id = kmq_msg_str("THUMB");
    break;
  case KMQ_MSG_MSGMENU:
    m->body.msgmenu.head_content = kmq_msg_str("您对本次服务是否满意？");
    m->body.msgmenu.tail_content = kmq_msg_str("欢迎再次光临");
    *list = json_loads("[{\"type\":\"click\",\"click\":{\"id\":\"101\","
                       "\"content\":\"满意\"}},{\"type\":\"view\",\"view\":"
                       "{\"url\":\"https://x.y\",\"content\":\"看看\"}}]",
                       0, NULL);
    ck_assert_ptr_nonnull(*list);
    m->body.msgmenu.list = *list;
    break;
  case KMQ_MSG_EVENT: {
    kmq_msg_event_t *e = &m->body.event;
    e->event_type = kmq_msg_str("session_status_change");
    e->open_kfid = kmq_msg_str("wkBBBB");
    e->external_userid = kmq_msg_str("wmAAAA_user");
    e->servicer_userid = kmq_msg_str("servicer1");
    e->scene = kmq_msg_str("123");
    e->scene_param = kmq_msg_str("abc");
    e->welcome_code = kmq_msg_str("aaaaaa");
    e->fail_msgid = kmq_msg_str("FAILMSGID");
    e->old_servicer_userid = kmq_msg_str("OLD");
    e->new_servicer_userid = kmq_msg_str("NEW");
    e->msg_code = kmq_msg_str("MSG_CODE");
    e->recall_msgid = kmq_msg_str("RECALL");
    e->fail_type = 0; /* 0 is a real value: must survive */
    e->status = 1;
    e->stop_type = 2;
    e->change_type = 3;
    break;
  }
  default:
    break;
  }
}

static char *encode_ok(const kmq_chat_msg_t *m, size_t *lenp) {
  char errstr[512] = "", *out = NULL;
  kmq_err_t err = kmq_msg_encode(m, &out, lenp, errstr, sizeof(errstr));
  ck_assert_msg(err == KMQ_OK, "encode: %s: %s", kmq_err_name(err), errstr);
  ck_assert_ptr_nonnull(out);
  ck_assert_uint_eq(strlen(out), *lenp);
  return out;
}

/* ---- round trips -------------------------------------------------------- */

START_TEST(roundtrip_every_type) {
  kmq_msg_type_t t = (kmq_msg_type_t)_i;
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t x, y, z;
  json_t *list;
  size_t len, len2;
  char errstr[512];

  fill(&x, t, &list);
  char *wire = encode_ok(&x, &len);
  ck_assert_int_eq(kmq_msg_decode(d, wire, len, &y, errstr, sizeof(errstr)),
                   KMQ_OK);
  ck_assert_int_eq(y.type, t);
  assert_same(&x, &y);
  ck_assert(kmq_chat_msg_equal(&x, &y));
  ck_assert_ptr_nonnull(y.content);
  ck_assert(json_is_object(y.content));
  if (t != KMQ_MSG_UNKNOWN)
    ck_assert(json_is_object(json_object_get(y.content, kmq_msg_type_name(t))));

  /* Again from the decoded message: its content is written as-is. */
  char *wire2 = encode_ok(&y, &len2);
  ck_assert_int_eq(kmq_msg_decode(d, wire2, len2, &z, errstr, sizeof(errstr)),
                   KMQ_OK);
  assert_same(&y, &z);
  ck_assert(json_equal(y.content, z.content));
  ck_assert(kmq_chat_msg_equal(&y, &z));

  kmq_chat_msg_clear(&y);
  kmq_chat_msg_clear(&z);
  json_decref(list);
  free(wire);
  free(wire2);
  kmq_msg_decoder_destroy(d);
}
END_TEST

START_TEST(equal_sees_every_difference) {
  kmq_chat_msg_t a, b;
  json_t *la, *lb;
  fill(&a, KMQ_MSG_EVENT, &la);
  fill(&b, KMQ_MSG_EVENT, &lb);
  ck_assert(kmq_chat_msg_equal(&a, &b));
  b.body.event.fail_type = -1;
  ck_assert(!kmq_chat_msg_equal(&a, &b));
  fill(&b, KMQ_MSG_EVENT, &lb);
  b.body.event.recall_msgid = kmq_msg_str("RECALL2");
  ck_assert(!kmq_chat_msg_equal(&a, &b));
  fill(&b, KMQ_MSG_EVENT, &lb);
  b.external_user_id = kmq_msg_str("other");
  ck_assert(!kmq_chat_msg_equal(&a, &b));
  fill(&b, KMQ_MSG_EVENT, &lb);
  b.timestamp++;
  ck_assert(!kmq_chat_msg_equal(&a, &b));
  fill(&a, KMQ_MSG_MSGMENU, &la);
  fill(&b, KMQ_MSG_MSGMENU, &lb);
  ck_assert(kmq_chat_msg_equal(&a, &b));
  json_array_append_new(lb, json_string("x"));
  ck_assert(!kmq_chat_msg_equal(&a, &b));
  json_decref(la);
  json_decref(lb);
  fill(&a, KMQ_MSG_LOCATION, &la);
  fill(&b, KMQ_MSG_LOCATION, &lb);
  b.body.location.latitude += 1e-9;
  ck_assert(!kmq_chat_msg_equal(&a, &b));
}
END_TEST

/* A msg_list item as WeCom returns it, wrapped by a producer. */
static const char *wecom_text =
    "{\"message_id\":\"from_msgid_4622416642169452483\","
    "\"external_user_id\":\"wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw\","
    "\"open_kfid\":\"wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q\",\"msg_type\":\"text\","
    "\"timestamp\":1615387301000,\"content\":{"
    "\"msgid\":\"from_msgid_4622416642169452483\","
    "\"open_kfid\":\"wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q\","
    "\"external_userid\":\"wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw\","
    "\"send_time\":1615387301,\"origin\":3,\"msgtype\":\"text\","
    "\"text\":{\"content\":\"\xe4\xbd\xa0\xe5\xa5\xbd \\u4e16\\u754c "
    "\\ud83d\\ude00\",\"menu_id\":\"101\"}}}";

START_TEST(decode_wecom_text_chinese) {
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  decode_ok(d, wecom_text, &m);
  ck_assert_int_eq(m.type, KMQ_MSG_TEXT);
  str_is(m.msg_type, "text", "msg_type");
  str_is(m.message_id, "from_msgid_4622416642169452483", "message_id");
  str_is(m.external_user_id, "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw", "user");
  str_is(m.open_kfid, "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q", "open_kfid");
  ck_assert_int_eq(m.timestamp, 1615387301000);
  ck_assert_int_eq(m.send_time, 1615387301);
  ck_assert_int_eq(m.origin, KMQ_MSG_ORIGIN_CUSTOMER);
  str_is(m.servicer_userid, "", "servicer_userid");
  /* Raw UTF-8, \u escapes and a surrogate pair all end up as UTF-8. */
  str_is(m.body.text.content, "你好 世界 😀", "text.content");
  str_is(m.body.text.menu_id, "101", "menu_id");
  ck_assert_str_eq(
      json_string_value(json_object_get(m.content, "msgid")),
      "from_msgid_4622416642169452483");
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
}
END_TEST

START_TEST(decode_event_user_from_event_body) {
  /* WeCom puts the user of an event inside "event". */
  const char *j =
      "{\"message_id\":\"e1\",\"msg_type\":\"event\",\"content\":{"
      "\"msgid\":\"e1\",\"send_time\":1,\"origin\":4,\"msgtype\":\"event\","
      "\"event\":{\"event_type\":\"enter_session\",\"open_kfid\":\"wkX\","
      "\"external_userid\":\"wmEVENT\",\"scene\":\"123\","
      "\"scene_param\":\"abc\",\"welcome_code\":\"WC\"}}}";
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  decode_ok(d, j, &m);
  ck_assert_int_eq(m.type, KMQ_MSG_EVENT);
  str_is(m.external_user_id, "wmEVENT", "user");
  str_is(m.open_kfid, "wkX", "open_kfid");
  str_is(m.body.event.event_type, "enter_session", "event_type");
  str_is(m.body.event.welcome_code, "WC", "welcome_code");
  ck_assert_int_eq(m.body.event.fail_type, -1);
  ck_assert_int_eq(m.body.event.change_type, -1);
  ck_assert_int_eq(m.origin, KMQ_MSG_ORIGIN_SYSTEM);
  ck_assert(kmq_msg_key_matches(&m, "wmEVENT", 7));
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
}
END_TEST

START_TEST(unknown_type_decodes) {
  const char *j = "{\"message_id\":\"m\",\"external_user_id\":\"u\","
                  "\"msg_type\":\"channels_shop_product\",\"content\":{"
                  "\"msgtype\":\"channels_shop_product\","
                  "\"channels_shop_product\":{\"product_id\":\"p1\"}}}";
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  decode_ok(d, j, &m);
  ck_assert_int_eq(m.type, KMQ_MSG_UNKNOWN);
  str_is(m.msg_type, "channels_shop_product", "msg_type");
  json_t *p = json_object_get(m.content, "channels_shop_product");
  ck_assert_str_eq(json_string_value(json_object_get(p, "product_id")), "p1");
  kmq_chat_msg_clear(&m);
  /* Unknown types need no body; and "unknown" is just another string. */
  decode_ok(d,
            "{\"message_id\":\"m\",\"external_user_id\":\"u\","
            "\"msg_type\":\"unknown\",\"content\":{}}",
            &m);
  ck_assert_int_eq(m.type, KMQ_MSG_UNKNOWN);
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
}
END_TEST

/* ---- size --------------------------------------------------------------- */

START_TEST(too_large_not_parsed) {
  size_t n = 983040 + 1;
  /* 0xFF everywhere: any look at the bytes would say BAD_UTF8. */
  unsigned char *buf = malloc(n);
  memset(buf, 0xFF, n);
  kmq_msg_decoder_t *d = dec_new(NULL);
  ck_assert_uint_eq(kmq_msg_decoder_max_bytes(d), 983040);
  kmq_chat_msg_t m;
  char errstr[256];
  int64_t t0 = kt_now_ms();
  for (int i = 0; i < 1000; i++)
    ck_assert_int_eq(kmq_msg_decode(d, buf, n, &m, errstr, sizeof(errstr)),
                     KMQ_ERR_TOO_LARGE);
  /* 1000 x 960 KiB scanned would take far longer than this. */
  ck_assert_int_lt(kt_now_ms() - t0, 200);
  ck_assert_msg(strstr(errstr, "983041") && strstr(errstr, "983040") &&
                    strstr(errstr, "kmq.msg.max.bytes"),
                "%s", errstr);
  free(buf);

  /* Exactly the limit is accepted: a valid envelope padded with spaces. */
  char *ok = malloc(983040);
  size_t jl = strlen(wecom_text);
  memcpy(ok, wecom_text, jl);
  memset(ok + jl, ' ', 983040 - jl);
  ck_assert_int_eq(kmq_msg_decode(d, ok, 983040, &m, errstr, sizeof(errstr)),
                   KMQ_OK);
  kmq_chat_msg_clear(&m);
  free(ok);
  kmq_msg_decoder_destroy(d);

  /* The limit comes from the conf. */
  d = dec_new("100");
  char small[101];
  memset(small, ' ', sizeof(small));
  ck_assert_int_eq(
      kmq_msg_decode(d, small, sizeof(small), &m, errstr, sizeof(errstr)),
      KMQ_ERR_TOO_LARGE);
  ck_assert_msg(strstr(errstr, "101 bytes") && strstr(errstr, "=100"), "%s",
                errstr);
  ck_assert_int_eq(kmq_msg_decode(d, small, 100, &m, errstr, sizeof(errstr)),
                   KMQ_ERR_BAD_JSON); /* 100 spaces: parsed, not JSON */
  kmq_msg_decoder_destroy(d);
}
END_TEST

/* ---- bad JSON ----------------------------------------------------------- */

START_TEST(bad_json) {
  EXPECT("{\"message_id\":\"m1\",\"external_user_id\":\"u", KMQ_ERR_BAD_JSON,
         "invalid JSON at line 1", "premature end of input");
  EXPECT("{\"message_id\":\"m1\",\n\"external_user_id\":}", KMQ_ERR_BAD_JSON,
         "line 2 column", "near '}'");
  EXPECT("[1,2,3]", KMQ_ERR_BAD_JSON, "top-level JSON value is an array");
  EXPECT("[]", KMQ_ERR_BAD_JSON, "an array, expected an object");
  EXPECT("\"just a string\"", KMQ_ERR_BAD_JSON, "invalid JSON");
  EXPECT("42", KMQ_ERR_BAD_JSON, "invalid JSON");
  EXPECT("null", KMQ_ERR_BAD_JSON, "invalid JSON");
  EXPECT("not json at all", KMQ_ERR_BAD_JSON, "invalid JSON");
  EXPECT("{} trailing", KMQ_ERR_BAD_JSON, "end of file expected");
  EXPECT("{\"external_user_id\":\"a\",\"external_user_id\":\"b\"}",
         KMQ_ERR_BAD_JSON, "duplicate object key");
  EXPECT("{\"message_id\":\"a\\u0000b\"}", KMQ_ERR_BAD_JSON, "\\u0000");
  /* An escaped lone surrogate is a JSON error, not a UTF-8 one. */
  EXPECT("{\"message_id\":\"\\ud800\"}", KMQ_ERR_BAD_JSON, "invalid Unicode");
  EXPECT("{\"a\":1e999}", KMQ_ERR_BAD_JSON, "overflow");
  EXPECT("{\"a\":123456789012345678901234567890}", KMQ_ERR_BAD_JSON,
         "too big");
  /* A raw NUL byte inside the value. */
  expect_n("{\"a\":\"x\0y\"}", 11, KMQ_ERR_BAD_JSON, "invalid JSON",
           (const char *)NULL);
  expect_n("", 0, KMQ_ERR_BAD_JSON, "empty value", (const char *)NULL);
  expect_n(NULL, 0, KMQ_ERR_BAD_JSON, "tombstone", (const char *)NULL);
  /* A control character quoted by jansson is made printable. */
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  char errstr[256];
  ck_assert_int_eq(kmq_msg_decode(d, "{\"a\":\"x\x01\"}", 10, &m, errstr,
                                  sizeof(errstr)),
                   KMQ_ERR_BAD_JSON);
  for (const char *p = errstr; *p; p++)
    ck_assert_msg((unsigned char)*p >= 0x20, "control char in %s", errstr);
  /* jansson cuts its "near '...'" excerpt inside a character (found by
   * fuzz_envelope): the reason must stay valid UTF-8. */
  const char *cut = "{\"a\":\"\\u59\xc7\x9b\"}";
  ck_assert_int_eq(kmq_msg_decode(d, cut, strlen(cut), &m, errstr,
                                  sizeof(errstr)),
                   KMQ_ERR_BAD_JSON);
  char why[128];
  ck_assert_msg(!kmq__utf8_check(errstr, strlen(errstr), why, sizeof(why)),
                "%s: %s", errstr, why);
  ck_assert_ptr_nonnull(strstr(errstr, "invalid escape"));
  kmq_msg_decoder_destroy(d);
}
END_TEST

START_TEST(deep_nesting_rejected) {
  /* jansson caps depth (2048): no stack blow-up on hostile input. */
  size_t n = 100000;
  char *b = malloc(n * 2 + 1);
  memset(b, '[', n);
  memset(b + n, ']', n);
  expect_n(b, n * 2, KMQ_ERR_BAD_JSON, "maximum parsing depth",
           (const char *)NULL);
  free(b);
}
END_TEST

/* ---- bad UTF-8 ---------------------------------------------------------- */

static void expect_utf8(const char *bad, size_t badlen, const char *why,
                        const char *bytes) {
  /* The bad bytes sit inside a string value of an otherwise fine envelope,
   * at byte 15. */
  char buf[256];
  int pre = snprintf(buf, sizeof(buf), "{\"message_id\":\"");
  ck_assert_int_eq(pre, 15);
  memcpy(buf + pre, bad, badlen);
  size_t n = (size_t)pre + badlen;
  n += (size_t)snprintf(buf + n, sizeof(buf) - n,
                        "\",\"external_user_id\":\"u\",\"msg_type\":\"text\","
                        "\"content\":{\"text\":{\"content\":\"x\"}}}");
  expect_n(buf, n, KMQ_ERR_BAD_UTF8, "invalid UTF-8 at byte 15", why, bytes,
           (const char *)NULL);
}

START_TEST(bad_utf8) {
  expect_utf8("\xc0\xaf", 2, "overlong 2-byte encoding of U+002F",
              "0xc0 0xaf");
  expect_utf8("\xc1\xbf", 2, "overlong 2-byte", "0xc1 0xbf");
  expect_utf8("\xe0\x80\xaf", 3, "overlong 3-byte encoding of U+002F",
              "0xe0 0x80 0xaf");
  expect_utf8("\xf0\x80\x80\xaf", 4, "overlong 4-byte", "0xf0 0x80 0x80 0xaf");
  expect_utf8("\xed\xa0\x80", 3, "UTF-16 surrogate U+D800", "0xed 0xa0 0x80");
  expect_utf8("\xed\xbf\xbf", 3, "surrogate U+DFFF", "0xed 0xbf 0xbf");
  /* A CESU-8 style surrogate pair is two lone surrogates. */
  expect_utf8("\xed\xa0\xbd\xed\xb8\x80", 6, "surrogate U+D83D", "0xed");
  expect_utf8("\xff", 1, "byte 0xff never appears in UTF-8", "0xff");
  expect_utf8("\xfe", 1, "byte 0xfe never appears", "0xfe");
  expect_utf8("\x80", 1, "unexpected continuation byte 0x80", "0x80");
  expect_utf8("\xe4\x41", 2, "byte 0x41 does not continue the 3-byte",
              "0xe4 0x41");
  expect_utf8("\xf4\x90\x80\x80", 4, "U+110000 is above U+10FFFF",
              "0xf4 0x90 0x80 0x80");
  expect_utf8("\xf5\x80\x80\x80", 4, "above U+10FFFF", "0xf5");
  /* Truncated at the very end of the value. */
  expect_n("{\"a\":\"\xe4\xb8", 8, KMQ_ERR_BAD_UTF8, "at byte 6",
           "3-byte sequence truncated by the end of the value", "0xe4 0xb8",
           (const char *)NULL);
  /* The offset is right after a long ASCII run (the 8-byte fast path). */
  char buf[64];
  memset(buf, 'a', sizeof(buf));
  buf[37] = (char)0x80;
  expect_n(buf, sizeof(buf), KMQ_ERR_BAD_UTF8, "at byte 37",
           (const char *)NULL);
  /* Valid multi-byte text of every length passes. */
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  decode_ok(d,
            "{\"message_id\":\"\xc2\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xef\xbf"
            "\xbf\xf4\x8f\xbf\xbf\",\"external_user_id\":\"u\","
            "\"msg_type\":\"x\",\"content\":{}}",
            &m);
  str_is(m.message_id, "©中😀\xef\xbf\xbf\xf4\x8f\xbf\xbf", "message_id");
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
}
END_TEST

/* ---- user id ------------------------------------------------------------ */

#define ENV(user_part, content_part)                                           \
  "{\"message_id\":\"m\"," user_part "\"msg_type\":\"text\",\"content\":{"    \
  content_part "\"text\":{\"content\":\"hi\"}}}"

START_TEST(user_id_rules) {
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;

  EXPECT(ENV("", ""), KMQ_ERR_MISSING_USER,
         "no user id: external_user_id absent, content.external_userid "
         "absent");
  EXPECT(ENV("\"external_user_id\":\"\",", ""), KMQ_ERR_MISSING_USER,
         "external_user_id empty, content.external_userid absent");
  EXPECT(ENV("\"external_user_id\":null,", "\"external_userid\":\"\","),
         KMQ_ERR_MISSING_USER,
         "external_user_id absent, content.external_userid empty");
  /* Missing user wins over other missing fields: it is checked first. */
  EXPECT("{}", KMQ_ERR_MISSING_USER, "no user id");
  EXPECT("{\"content\":[]}", KMQ_ERR_MISSING_USER, "no user id");

  /* Fallback to content. */
  decode_ok(d, ENV("", "\"external_userid\":\"wmC\","), &m);
  str_is(m.external_user_id, "wmC", "user");
  kmq_chat_msg_clear(&m);
  decode_ok(d,
            ENV("\"external_user_id\":\"\",", "\"external_userid\":\"wmC\","),
            &m);
  str_is(m.external_user_id, "wmC", "user");
  kmq_chat_msg_clear(&m);
  /* Both, equal. */
  decode_ok(d,
            ENV("\"external_user_id\":\"wmC\",", "\"external_userid\":\"wmC\","),
            &m);
  str_is(m.external_user_id, "wmC", "user");
  kmq_chat_msg_clear(&m);

  /* Both, different: the envelope does not silently win. */
  EXPECT(ENV("\"external_user_id\":\"wmA\",", "\"external_userid\":\"wmB\","),
         KMQ_ERR_BAD_FIELD,
         "external_user_id \"wmA\" differs from content.external_userid "
         "\"wmB\"");
  EXPECT("{\"message_id\":\"m\",\"external_user_id\":\"wmA\",\"msg_type\":"
         "\"event\",\"content\":{\"event\":{\"event_type\":\"x\","
         "\"external_userid\":\"wmZ\"}}}",
         KMQ_ERR_BAD_FIELD,
         "external_user_id \"wmA\" differs from content.event.external_userid "
         "\"wmZ\"");
  EXPECT("{\"message_id\":\"m\",\"msg_type\":\"event\",\"content\":{\"event\":"
         "{\"event_type\":\"servicer_status_change\",\"servicer_userid\":"
         "\"s\"}}}",
         KMQ_ERR_MISSING_USER,
         "content.event.external_userid absent");
  /* Wrong JSON type. */
  EXPECT(ENV("\"external_user_id\":12345,", ""), KMQ_ERR_BAD_FIELD,
         "external_user_id: expected a string, got an integer");
  EXPECT(ENV("", "\"external_userid\":[\"a\"],"), KMQ_ERR_BAD_FIELD,
         "content.external_userid: expected a string, got an array");
  /* Chinese ids and control characters are quoted readably. */
  EXPECT(ENV("\"external_user_id\":\"用户甲\",",
             "\"external_userid\":\"a\\nb\","),
         KMQ_ERR_BAD_FIELD, "\"用户甲\" differs", "\"a\\x0ab\"");
  kmq_msg_decoder_destroy(d);
}
END_TEST

START_TEST(key_matches) {
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  decode_ok(d, ENV("\"external_user_id\":\"wmUser\",", ""), &m);
  ck_assert(kmq_msg_key_matches(&m, "wmUser", 6));
  ck_assert(!kmq_msg_key_matches(&m, "wmUse", 5));
  ck_assert(!kmq_msg_key_matches(&m, "wmUser2", 7));
  ck_assert(!kmq_msg_key_matches(&m, "wmUser", 7));
  ck_assert(!kmq_msg_key_matches(&m, "wmUsex", 6));
  ck_assert(!kmq_msg_key_matches(&m, NULL, 0));
  kmq_chat_msg_clear(&m);
  ck_assert(!kmq_msg_key_matches(&m, "", 0)); /* cleared: no user */
  kmq_msg_decoder_destroy(d);
}
END_TEST

/* ---- other fields ------------------------------------------------------- */

START_TEST(bad_fields) {
#define U "\"external_user_id\":\"u\","
  EXPECT("{" U "\"msg_type\":\"text\",\"content\":{}}", KMQ_ERR_BAD_FIELD,
         "message_id is missing");
  EXPECT("{" U "\"message_id\":\"\",\"msg_type\":\"text\",\"content\":{}}",
         KMQ_ERR_BAD_FIELD, "message_id is empty");
  EXPECT("{" U "\"message_id\":7,\"msg_type\":\"text\",\"content\":{}}",
         KMQ_ERR_BAD_FIELD, "message_id: expected a string, got an integer");
  EXPECT("{" U "\"message_id\":\"m\",\"content\":{}}", KMQ_ERR_BAD_FIELD,
         "msg_type is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":true,\"content\":{}}",
         KMQ_ERR_BAD_FIELD, "msg_type: expected a string, got true");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\"}",
         KMQ_ERR_BAD_FIELD, "content is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":\"x\"}",
         KMQ_ERR_BAD_FIELD, "content: expected an object, got a string");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"timestamp\":"
         "\"now\",\"content\":{}}",
         KMQ_ERR_BAD_FIELD, "timestamp: expected an integer, got a string");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":{"
         "\"msgtype\":\"image\",\"text\":{\"content\":\"x\"}}}",
         KMQ_ERR_BAD_FIELD,
         "msg_type \"text\" differs from content.msgtype \"image\"");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":{}}",
         KMQ_ERR_BAD_FIELD, "content.text is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":{"
         "\"text\":{}}}",
         KMQ_ERR_BAD_FIELD, "content.text.content is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":{"
         "\"text\":{\"content\":5}}}",
         KMQ_ERR_BAD_FIELD,
         "content.text.content: expected a string, got an integer");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"image\",\"content\":{"
         "\"image\":{\"media_id\":\"\"}}}",
         KMQ_ERR_BAD_FIELD, "content.image.media_id is empty");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"file\",\"content\":{"
         "\"file\":[]}}",
         KMQ_ERR_BAD_FIELD, "content.file: expected an object, got an array");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"location\",\"content\":{"
         "\"location\":{\"latitude\":\"23.1\",\"longitude\":1}}}",
         KMQ_ERR_BAD_FIELD,
         "content.location.latitude: expected a number, got a string");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"location\",\"content\":{"
         "\"location\":{\"latitude\":1}}}",
         KMQ_ERR_BAD_FIELD, "content.location.longitude is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"link\",\"content\":{"
         "\"link\":{\"title\":\"t\"}}}",
         KMQ_ERR_BAD_FIELD, "content.link.url is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"business_card\","
         "\"content\":{\"business_card\":{}}}",
         KMQ_ERR_BAD_FIELD, "content.business_card.userid is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"miniprogram\","
         "\"content\":{\"miniprogram\":{\"title\":\"t\"}}}",
         KMQ_ERR_BAD_FIELD, "content.miniprogram.appid is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"msgmenu\",\"content\":{"
         "\"msgmenu\":{\"list\":{}}}}",
         KMQ_ERR_BAD_FIELD, "content.msgmenu.list: expected an array, got an "
                            "object");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"event\",\"content\":{"
         "\"event\":{}}}",
         KMQ_ERR_BAD_FIELD, "content.event.event_type is missing");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"event\",\"content\":{"
         "\"event\":{\"event_type\":\"msg_send_fail\",\"fail_type\":\"4\"}}}",
         KMQ_ERR_BAD_FIELD,
         "content.event.fail_type: expected an integer, got a string");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":{"
         "\"send_time\":1.5,\"text\":{\"content\":\"x\"}}}",
         KMQ_ERR_BAD_FIELD,
         "content.send_time: expected an integer, got a real number");
  EXPECT("{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"content\":{"
         "\"origin\":9999999999,\"text\":{\"content\":\"x\"}}}",
         KMQ_ERR_BAD_FIELD, "content.origin 9999999999 is out of range");
  EXPECT("{" U "\"message_id\":\"m\",\"open_kfid\":\"wk1\",\"msg_type\":"
         "\"text\",\"content\":{\"open_kfid\":\"wk2\",\"text\":{\"content\":"
         "\"x\"}}}",
         KMQ_ERR_BAD_FIELD,
         "open_kfid \"wk1\" differs from content.open_kfid \"wk2\"");
  /* null reads as absent; unknown envelope keys are ignored. */
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  decode_ok(d,
            "{" U "\"message_id\":\"m\",\"msg_type\":\"text\",\"future\":[1],"
            "\"open_kfid\":null,\"content\":{\"text\":{\"content\":\"x\","
            "\"menu_id\":null}}}",
            &m);
  str_is(m.open_kfid, "", "open_kfid");
  str_is(m.body.text.menu_id, "", "menu_id");
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
#undef U
}
END_TEST

START_TEST(reason_truncation_keeps_utf8) {
  /* A conflict between two long Chinese ids, into small buffers. */
  const char *j = ENV("\"external_user_id\":\"甲甲甲甲甲甲甲甲甲甲甲甲甲甲甲甲甲"
                      "甲甲甲甲甲甲甲\",",
                      "\"external_userid\":\"乙\",");
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  for (size_t sz = 1; sz < 200; sz++) {
    char errstr[200];
    memset(errstr, 'X', sizeof(errstr));
    ck_assert_int_eq(kmq_msg_decode(d, j, strlen(j), &m, errstr, sz),
                     KMQ_ERR_BAD_FIELD);
    ck_assert_msg(memchr(errstr, '\0', sz), "not terminated at size %zu", sz);
    char why[128];
    ck_assert_msg(!kmq__utf8_check(errstr, strlen(errstr), why, sizeof(why)),
                  "size %zu: %s", sz, why);
  }
  /* The excerpt of a long id is cut at KMQ's quote limit with "...". */
  char errstr[512];
  kmq_msg_decode(d, j, strlen(j), &m, errstr, sizeof(errstr));
  ck_assert_msg(strstr(errstr, "...\" differs") || strstr(errstr, "\"..."),
                "%s", errstr);
  /* NULL errstr is fine. */
  ck_assert_int_eq(kmq_msg_decode(d, j, strlen(j), &m, NULL, 0),
                   KMQ_ERR_BAD_FIELD);
  kmq_msg_decoder_destroy(d);
}
END_TEST

/* ---- lifetimes and API edges --------------------------------------------- */

START_TEST(message_outlives_decoder) {
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t a, b, moved;
  decode_ok(d, wecom_text, &a);
  decode_ok(d, ENV("\"external_user_id\":\"second\",", ""), &b);
  kmq_msg_decoder_destroy(d);
  /* Moved by assignment, as the runtime hands it to an actor. */
  moved = a;
  str_is(moved.external_user_id, "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw", "a");
  str_is(moved.body.text.content, "你好 世界 😀", "a.text");
  str_is(b.external_user_id, "second", "b");
  kmq_chat_msg_clear(&moved);
  kmq_chat_msg_clear(&b);
  kmq_chat_msg_clear(&b); /* twice: no-op */
  kmq_chat_msg_clear(NULL);
}
END_TEST

START_TEST(api_edges) {
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  char errstr[128];
  ck_assert_int_eq(kmq_msg_decode(d, "{}", 2, NULL, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_msg_decode(NULL, "{}", 2, &m, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_msg_decode(d, NULL, 5, &m, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  kmq_chat_msg_clear(&m);
  kmq_msg_decoder_destroy(d);
  kmq_msg_decoder_destroy(NULL);

  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++) {
    const char *n = kmq_msg_type_name((kmq_msg_type_t)t);
    ck_assert_int_eq(kmq_msg_type_from_str(n, strlen(n)), t);
  }
  ck_assert_int_eq(kmq_msg_type_from_str("Text", 4), KMQ_MSG_UNKNOWN);
  ck_assert_int_eq(kmq_msg_type_from_str("textx", 4), KMQ_MSG_TEXT);
  ck_assert_int_eq(kmq_msg_type_from_str("text", 3), KMQ_MSG_UNKNOWN);
  ck_assert_int_eq(kmq_msg_type_from_str(NULL, 0), KMQ_MSG_UNKNOWN);
  ck_assert_str_eq(kmq_msg_type_name(KMQ_MSG_TYPE_CNT), "unknown");
  ck_assert_str_eq(kmq_msg_type_name((kmq_msg_type_t)-1), "unknown");

  ck_assert_str_eq(kmq_msg_reason(KMQ_ERR_TOO_LARGE), "too_large");
  ck_assert_str_eq(kmq_msg_reason(KMQ_ERR_BAD_UTF8), "bad_utf8");
  ck_assert_str_eq(kmq_msg_reason(KMQ_ERR_BAD_JSON), "bad_json");
  ck_assert_str_eq(kmq_msg_reason(KMQ_ERR_MISSING_USER), "missing_user");
  ck_assert_str_eq(kmq_msg_reason(KMQ_ERR_BAD_FIELD), "bad_field");
  ck_assert_str_eq(kmq_msg_reason(KMQ_ERR_NOMEM), "decode_failed");
}
END_TEST

/* ---- encoding ----------------------------------------------------------- */

START_TEST(build_text) {
  char *out, errstr[256];
  size_t len;
  ck_assert_int_eq(kmq_msg_build_text("wmU", "wkK", "mid1", "在吗？\"\\",
                                      1700000000, &out, &len, errstr,
                                      sizeof(errstr)),
                   KMQ_OK);
  kmq_msg_decoder_t *d = dec_new(NULL);
  kmq_chat_msg_t m;
  ck_assert_int_eq(kmq_msg_decode(d, out, len, &m, errstr, sizeof(errstr)),
                   KMQ_OK);
  str_is(m.external_user_id, "wmU", "user");
  str_is(m.open_kfid, "wkK", "open_kfid");
  str_is(m.message_id, "mid1", "message_id");
  str_is(m.body.text.content, "在吗？\"\\", "text");
  ck_assert_int_eq(m.send_time, 1700000000);
  ck_assert_int_eq(m.timestamp, 1700000000000);
  ck_assert_int_eq(m.origin, KMQ_MSG_ORIGIN_CUSTOMER);
  /* The WeCom object carries the same identity. */
  ck_assert_str_eq(json_string_value(json_object_get(m.content, "msgid")),
                   "mid1");
  ck_assert_str_eq(
      json_string_value(json_object_get(m.content, "external_userid")), "wmU");
  ck_assert_str_eq(json_string_value(json_object_get(m.content, "msgtype")),
                   "text");
  /* Compact and raw UTF-8 (no \u escapes). */
  ck_assert_ptr_nonnull(strstr(out, "在吗？"));
  ck_assert_ptr_null(strstr(out, ": "));
  kmq_chat_msg_clear(&m);
  free(out);
  kmq_msg_decoder_destroy(d);

  /* open_kfid may be NULL. */
  ck_assert_int_eq(kmq_msg_build_text("wmU", NULL, "mid1", "x", 1, &out, &len,
                                      errstr, sizeof(errstr)),
                   KMQ_OK);
  ck_assert_ptr_null(strstr(out, "open_kfid"));
  free(out);
}
END_TEST

START_TEST(encode_rejects) {
  char *out = (char *)1, errstr[256];
  size_t len = 99;
  kmq_chat_msg_t m;
  json_t *list;

  ck_assert_int_eq(kmq_msg_build_text("", "wk", "m", "x", 1, &out, &len,
                                      errstr, sizeof(errstr)),
                   KMQ_ERR_MISSING_USER);
  ck_assert_ptr_null(out);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(kmq_msg_build_text("u", "wk", NULL, "x", 1, &out, &len,
                                      errstr, sizeof(errstr)),
                   KMQ_ERR_BAD_FIELD);
  ck_assert_ptr_nonnull(strstr(errstr, "message_id is missing"));
  ck_assert_int_eq(kmq_msg_build_text("u", "wk", "m", "", 1, &out, &len,
                                      errstr, sizeof(errstr)),
                   KMQ_ERR_BAD_FIELD);
  ck_assert_ptr_nonnull(strstr(errstr, "content.text.content is missing"));
  ck_assert_int_eq(kmq_msg_build_text("u", "wk", "m", "bad \xff", 1, &out,
                                      &len, errstr, sizeof(errstr)),
                   KMQ_ERR_BAD_UTF8);
  ck_assert_msg(strstr(errstr, "content.text.content: invalid UTF-8 at byte 4"),
                "%s", errstr);

  fill(&m, KMQ_MSG_TEXT, &list);
  m.msg_type = kmq_msg_str("image");
  ck_assert_int_eq(kmq_msg_encode(&m, &out, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(errstr, "\"image\" does not match type text"));
  fill(&m, KMQ_MSG_UNKNOWN, &list);
  m.msg_type = kmq_msg_str("text");
  ck_assert_int_eq(kmq_msg_encode(&m, &out, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  fill(&m, KMQ_MSG_LOCATION, &list);
  m.body.location.latitude = NAN;
  ck_assert_int_eq(kmq_msg_encode(&m, &out, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(errstr, "latitude is not a finite number"));
  /* A NUL inside a string would not survive decoding: refused. */
  fill(&m, KMQ_MSG_TEXT, &list);
  m.body.text.content = (kmq_msg_str_t){"a\0b", 3};
  ck_assert_int_eq(kmq_msg_encode(&m, &out, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_BAD_FIELD);
  ck_assert_ptr_nonnull(strstr(errstr, "contains a NUL"));
  ck_assert_int_eq(kmq_msg_encode(NULL, &out, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_msg_encode(&m, NULL, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_INVALID_ARG);

  /* A caller-supplied content is validated like a decoded one. */
  fill(&m, KMQ_MSG_TEXT, &list);
  m.content = json_pack("{s:s, s:{s:s}}", "external_userid", "someone-else",
                        "text", "content", "x");
  ck_assert_int_eq(kmq_msg_encode(&m, &out, &len, errstr, sizeof(errstr)),
                   KMQ_ERR_BAD_FIELD);
  ck_assert_ptr_nonnull(strstr(errstr, "\"someone-else\""));
  json_decref(m.content);
}
END_TEST

static Suite *message_suite(void) {
  Suite *s = suite_create("message");
  TCase *tc = tcase_create("roundtrip");
  tcase_add_loop_test(tc, roundtrip_every_type, 0, KMQ_MSG_TYPE_CNT);
  tcase_add_test(tc, equal_sees_every_difference);
  tcase_add_test(tc, decode_wecom_text_chinese);
  tcase_add_test(tc, decode_event_user_from_event_body);
  tcase_add_test(tc, unknown_type_decodes);
  tcase_add_test(tc, build_text);
  tcase_add_test(tc, encode_rejects);
  suite_add_tcase(s, tc);

  tc = tcase_create("bad_input");
  tcase_add_test(tc, too_large_not_parsed);
  tcase_add_test(tc, bad_json);
  tcase_add_test(tc, deep_nesting_rejected);
  tcase_add_test(tc, bad_utf8);
  tcase_add_test(tc, user_id_rules);
  tcase_add_test(tc, bad_fields);
  tcase_add_test(tc, reason_truncation_keeps_utf8);
  suite_add_tcase(s, tc);

  tc = tcase_create("api");
  tcase_add_test(tc, key_matches);
  tcase_add_test(tc, message_outlives_decoder);
  tcase_add_test(tc, api_edges);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return kt_run(message_suite());
}
