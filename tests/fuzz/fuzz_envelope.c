/* libFuzzer target: kmq_msg_decode() on arbitrary bytes.
 *
 * Beyond "no crash, no leak, no UB" (ASan + UBSan) it checks the decoder's
 * contract on every input:
 *   - an error leaves the message empty, with a non-empty, valid UTF-8
 *     reason and one of the documented codes;
 *   - a success has a non-empty user id the key check accepts, C strings of
 *     the stated lengths, and survives encode -> decode field by field.
 *
 *   CC=clang cmake -S . -B build-fuzz -G Ninja -DKMQ_FUZZ=ON
 *   ninja -C build-fuzz fuzz_envelope
 *   build-fuzz/tests/fuzz_envelope -max_total_time=60 \
 *       tests/fuzz/corpus/envelope
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/message.h"
#include "processors/msg_internal.h" /* kmq__utf8_check */

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "contract violated: %s: ", #cond);                      \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* Harness state, created once per fuzzing process. */
static kmq_msg_decoder_t *dec, *dec_big;

static kmq_msg_decoder_t *decoder(const char *max_bytes) {
  char errstr[256];
  kmq_conf_t *conf = kmq_conf_new();
  CHECK(conf, "no conf");
  if (max_bytes)
    CHECK(kmq_conf_set(conf, "kmq.msg.max.bytes", max_bytes, errstr,
                       sizeof(errstr)) == KMQ_OK,
          "%s", errstr);
  kmq_msg_decoder_t *d = kmq_msg_decoder_new(conf, errstr, sizeof(errstr));
  CHECK(d, "%s", errstr);
  kmq_conf_destroy(conf);
  return d;
}

static void check_str(kmq_msg_str_t s, const char *field) {
  CHECK(s.ptr, "%s is NULL", field);
  CHECK(strlen(s.ptr) == s.len, "%s: strlen %zu != len %zu", field,
        strlen(s.ptr), s.len);
}

static void check_ok(const kmq_chat_msg_t *m) {
  check_str(m->message_id, "message_id");
  check_str(m->external_user_id, "external_user_id");
  check_str(m->open_kfid, "open_kfid");
  check_str(m->msg_type, "msg_type");
  check_str(m->servicer_userid, "servicer_userid");
  CHECK(m->message_id.len && m->msg_type.len && m->external_user_id.len,
        "required field empty");
  CHECK(kmq_msg_key_matches(m, m->external_user_id.ptr,
                            m->external_user_id.len),
        "key check rejects the user id");
  CHECK(kmq_msg_type_from_str(m->msg_type.ptr, m->msg_type.len) == m->type,
        "type %d for \"%s\"", (int)m->type, m->msg_type.ptr);
  CHECK(m->content && json_is_object(m->content) && m->_root,
        "content missing");
  if (m->type == KMQ_MSG_TEXT)
    check_str(m->body.text.content, "text.content");
  if (m->type == KMQ_MSG_EVENT)
    check_str(m->body.event.event_type, "event.event_type");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dec) {
    dec = decoder(NULL);
    dec_big = decoder("1073741824");
  }
  kmq_chat_msg_t m, again;
  char errstr[512], why[256];
  errstr[0] = '\0';
  kmq_err_t err = kmq_msg_decode(dec, data, size, &m, errstr, sizeof(errstr));
  if (err) {
    CHECK(err == KMQ_ERR_TOO_LARGE || err == KMQ_ERR_BAD_UTF8 ||
              err == KMQ_ERR_BAD_JSON || err == KMQ_ERR_MISSING_USER ||
              err == KMQ_ERR_BAD_FIELD,
          "unexpected %s: %s", kmq_err_name(err), errstr);
    CHECK(errstr[0], "empty reason for %s", kmq_err_name(err));
    CHECK(!kmq__utf8_check(errstr, strlen(errstr), why, sizeof(why)),
          "reason not UTF-8: %s", why);
    CHECK(!m.content && !m._root, "error left a tree behind");
    kmq_chat_msg_clear(&m);
    return 0;
  }
  check_ok(&m);

  /* Round trip: what was accepted is written back and reads the same. */
  char *wire = NULL;
  size_t len = 0;
  err = kmq_msg_encode(&m, &wire, &len, errstr, sizeof(errstr));
  CHECK(err == KMQ_OK, "re-encode: %s: %s", kmq_err_name(err), errstr);
  err = kmq_msg_decode(dec_big, wire, len, &again, errstr, sizeof(errstr));
  CHECK(err == KMQ_OK, "re-decode: %s: %s\n%s", kmq_err_name(err), errstr,
        wire);
  check_ok(&again);
  CHECK(kmq_chat_msg_equal(&m, &again), "round trip differs:\n%.*s\n%s",
        (int)size, (const char *)data, wire);
  kmq_chat_msg_clear(&again);
  free(wire);
  kmq_chat_msg_clear(&m);
  return 0;
}
