#include "traffic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kmq_traffic_user(int u, char *buf, size_t size) {
  snprintf(buf, size, "wm%06d", u);
}

int kmq_traffic_envelope(int u, int seq, char *buf, size_t size) {
  char user[16], id[48], body[256];
  const char *type;
  kmq_traffic_user(u, user, sizeof(user));
  snprintf(id, sizeof(id), "m-%d-%d", u, seq);
  switch (seq % 6) {
  case 0:
    type = "text";
    snprintf(body, sizeof(body), "{\"content\":\"您好，我想咨询订单 %d\"}", seq);
    break;
  case 1:
    type = "image";
    snprintf(body, sizeof(body), "{\"media_id\":\"MEDIA_%d_%d\"}", u, seq);
    break;
  case 2:
    type = "event";
    snprintf(body, sizeof(body),
             "{\"event_type\":\"enter_session\",\"open_kfid\":\"wkDEMO\","
             "\"external_userid\":\"%s\",\"scene\":\"demo\"}",
             user);
    break;
  case 3:
    type = "location";
    snprintf(body, sizeof(body),
             "{\"latitude\":23.1,\"longitude\":113.3,\"name\":\"广州塔\","
             "\"address\":\"广州市海珠区\"}");
    break;
  case 4:
    type = "link";
    snprintf(body, sizeof(body),
             "{\"title\":\"t\",\"desc\":\"d\",\"url\":\"https://example.com/%d\","
             "\"pic_url\":\"https://example.com/p.png\"}",
             seq);
    break;
  default:
    type = "voice";
    snprintf(body, sizeof(body), "{\"media_id\":\"VOICE_%d\"}", seq);
    break;
  }
  long long t = 1700000000LL + seq;
  return snprintf(buf, size,
                  "{\"message_id\":\"%s\",\"external_user_id\":\"%s\","
                  "\"open_kfid\":\"wkDEMO\",\"msg_type\":\"%s\","
                  "\"content\":{\"msgid\":\"%s\",\"open_kfid\":\"wkDEMO\","
                  "\"external_userid\":\"%s\",\"send_time\":%lld,"
                  "\"origin\":%d,\"msgtype\":\"%s\",\"%s\":%s},"
                  "\"timestamp\":%lld}",
                  id, user, type, id, user, t, strcmp(type, "event") ? 3 : 4,
                  type, type, body, t * 1000);
}

int kmq_traffic_parse_id(const char *id, size_t len, int *u, int *seq) {
  char buf[64];
  if (len >= sizeof(buf))
    return -1;
  memcpy(buf, id, len);
  buf[len] = '\0';
  return sscanf(buf, "m-%d-%d", u, seq) == 2 ? 0 : -1;
}

void kmq_traffic_bad(int k, size_t max_bytes, kmq_traffic_bad_t *bad) {
  memset(bad, 0, sizeof(*bad));
  snprintf(bad->key, sizeof(bad->key), "wmBAD%02d", k);
  bad->key_len = strlen(bad->key);
  char tmp[1024];
  switch (k) {
  case 0:
    bad->name = "malformed JSON";
    bad->reason = "bad_json";
    bad->value = strdup("{\"message_id\":\"x\",\"external_user_id\":");
    break;
  case 1:
    bad->name = "missing user id";
    bad->reason = "missing_user";
    kmq_traffic_envelope(0, 0, tmp, sizeof(tmp));
    /* The same envelope with both user id fields emptied. */
    {
      char *s = strdup(tmp), *p;
      while ((p = strstr(s, "wm000000")))
        memmove(p, p + 8, strlen(p + 8) + 1);
      bad->value = s;
    }
    break;
  case 2:
    bad->name = "oversized message";
    bad->reason = "too_large";
    bad->value = malloc(max_bytes + 2);
    memset(bad->value, 'x', max_bytes + 1);
    bad->value[max_bytes + 1] = '\0';
    break;
  case 3:
    bad->name = "record without a key";
    bad->reason = "missing_user";
    bad->key_len = 0;
    kmq_traffic_envelope(1, 0, tmp, sizeof(tmp));
    bad->value = strdup(tmp);
    break;
  case 4:
    bad->name = "invalid UTF-8";
    bad->reason = "bad_utf8";
    bad->value = strdup("{\"message_id\":\"\xff\xfe\"}");
    break;
  default:
    bad->name = "key differs from external_user_id";
    bad->reason = "key_mismatch";
    kmq_traffic_envelope(2, 0, tmp, sizeof(tmp));
    bad->value = strdup(tmp);
    break;
  }
  bad->value_len = strlen(bad->value);
}

int kmq_traffic_msg_id(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                       int *u, int *seq) {
  if (!kmq_traffic_parse_id(msg->message_id.ptr, msg->message_id.len, u, seq))
    return 0;
  kmq_proc_ctx_set_reason(ctx, "message_id \"%.*s\" is not traffic",
                          (int)msg->message_id.len, msg->message_id.ptr);
  return -1;
}
