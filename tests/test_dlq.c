/* Dead letters always fit: kmq_dlq_letter_build() against the DLQ
 * producer's message.max.bytes, with the worst payloads (10 MB of random
 * bytes, 10 MB of control characters that JSON escapes 6-fold, 1 MiB + 1 of
 * multibyte text), a huge key and huge headers; a letter that fits is byte
 * for byte the full envelope. */
#include <check.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/dlq.h"
#include "testutil.h"

#define MB10 (10 * 1000 * 1000)
#define MIB1 (1024 * 1024 + 1)
#define NOW 1700000000123LL

static void sha256_hex(const void *p, size_t n, char hex[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  ck_assert(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL));
  for (unsigned i = 0; i < mdlen; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* RFC 4648 decoding of padded base64; *len the bytes. NULL when invalid. */
static unsigned char *unb64(const char *s, size_t *len) {
  size_t n = strlen(s);
  if (n % 4)
    return NULL;
  unsigned char *out = malloc(n / 4 * 3 + 1);
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      char c = s[i + k];
      const char *tbl =
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      const char *p = c == '=' ? NULL : strchr(tbl, c);
      if (c == '=')
        pad++;
      else if (!p || !c || pad) {
        free(out);
        return NULL;
      }
      v = v << 6 | (uint32_t)(p ? p - tbl : 0);
    }
    out[o++] = (unsigned char)(v >> 16);
    if (pad < 2)
      out[o++] = (unsigned char)(v >> 8);
    if (pad < 1)
      out[o++] = (unsigned char)v;
  }
  *len = o;
  return out;
}

/* What librdkafka may count for the letter's headers at most. */
static size_t headers_size(const rd_kafka_headers_t *h) {
  const char *name;
  const void *val;
  size_t size, total = 0;
  for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &val, &size); i++)
    total += strlen(name) + size + 10;
  return total;
}

static kmq_dlq_record_t record(const void *payload, size_t len) {
  kmq_dlq_record_t r = {
      .original_topic = "wecom-kf",
      .original_partition = 3,
      .original_offset = 1234,
      .key = "wm000042",
      .key_len = 8,
      .payload = payload,
      .payload_len = len,
      .reason = "too_large",
      .error = "value of 10000000 bytes exceeds kmq.msg.max.bytes (1048576)",
      .source = "consumer",
  };
  return r;
}

/* Builds rec's letter under max_bytes and checks everything a reader may
 * rely on: the size bound, valid JSON, the envelope's fields, the truncation
 * fields, a prefix of the original that uses the room it had. */
static void check_truncated(const kmq_dlq_record_t *rec, size_t max_bytes,
                            const char *want_field) {
  char errstr[256];
  kmq_dlq_letter_t l;
  ck_assert_msg(kmq_dlq_letter_build(rec, NOW, max_bytes, &l, errstr,
                                     sizeof(errstr)) == KMQ_OK,
                "%s", errstr);
  ck_assert_int_eq(l.truncated, 1);
  size_t hsz = headers_size(l.headers);
  ck_assert_uint_le(l.key_len + l.value_len + hsz,
                    max_bytes - KMQ_DLQ_RECORD_OVERHEAD);
  ck_assert_uint_eq(strlen(l.value), l.value_len);

  json_error_t je;
  json_t *j = json_loadb(l.value, l.value_len, JSON_ALLOW_NUL, &je);
  ck_assert_msg(j, "letter is not JSON: %s", je.text);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "version")), 1);
  ck_assert_str_eq(json_string_value(json_object_get(j, "reason")),
                   rec->reason);
  ck_assert_str_eq(json_string_value(json_object_get(j, "original_topic")),
                   rec->original_topic);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "original_offset")),
                   rec->original_offset);
  ck_assert(json_is_true(json_object_get(j, "payload_truncated")));
  ck_assert_int_eq(json_integer_value(json_object_get(j, "payload_size")),
                   (json_int_t)rec->payload_len);
  char hex[65];
  sha256_hex(rec->payload, rec->payload_len, hex);
  ck_assert_str_eq(json_string_value(json_object_get(j, "payload_sha256")),
                   hex);
  const char *other =
      !strcmp(want_field, "payload") ? "payload_base64" : "payload";
  ck_assert_ptr_null(json_object_get(j, other));
  json_t *pv = json_object_get(j, want_field);
  ck_assert(json_is_string(pv));
  size_t n;
  unsigned char *dec = NULL;
  const void *prefix;
  if (!strcmp(want_field, "payload")) {
    prefix = json_string_value(pv);
    n = json_string_length(pv);
  } else {
    dec = unb64(json_string_value(pv), &n);
    ck_assert_ptr_nonnull(dec);
    prefix = dec;
  }
  ck_assert_uint_gt(n, 0);
  ck_assert_uint_lt(n, rec->payload_len);
  ck_assert_msg(!memcmp(prefix, rec->payload, n),
                "the payload is not a prefix of the original");
  /* Tight: what is left unused is less than one more escaped character or
   * base64 quantum (plus the byte of "true" against "false"). */
  size_t room = max_bytes - KMQ_DLQ_RECORD_OVERHEAD - l.key_len - hsz;
  ck_assert_uint_ge(l.value_len + 8, room);
  free(dec);
  json_decref(j);
  kmq_dlq_letter_clear(&l);
  ck_assert_ptr_null(l.value);
  ck_assert_ptr_null(l.headers);
}

static const size_t limits[] = {1000000, 64 * 1024, 8192};

START_TEST(ten_mb_random_bytes_fit_as_base64_prefix) {
  unsigned char *p = malloc(MB10);
  unsigned s = 12345;
  for (size_t i = 0; i < MB10; i++) {
    s = s * 1103515245u + 12345u;
    p[i] = (unsigned char)(s >> 16);
  }
  p[0] = 0xff; /* never UTF-8, whatever the generator did */
  kmq_dlq_record_t rec = record(p, MB10);
  for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
    check_truncated(&rec, limits[i], "payload_base64");
  free(p);
}
END_TEST

START_TEST(ten_mb_control_chars_fit_as_escaped_text_prefix) {
  /* Valid UTF-8, so text, and nearly every byte escapes to \u00XX. */
  char *p = malloc(MB10);
  for (size_t i = 0; i < MB10; i++)
    p[i] = (char)(i % 32);
  kmq_dlq_record_t rec = record(p, MB10);
  for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
    check_truncated(&rec, limits[i], "payload");
  free(p);
}
END_TEST

START_TEST(mib_plus_one_multibyte_text_cut_on_a_character) {
  /* "中" (3 bytes), "😀" (4), "a", "\"": cuts can fall inside a character. */
  static const char unit[] = "\xe4\xb8\xad\xf0\x9f\x98\x80" "a\"";
  size_t ulen = sizeof(unit) - 1;
  char *p = malloc(MIB1);
  /* Whole units, then ASCII: the value is valid UTF-8 as a whole. */
  size_t whole = MIB1 / ulen * ulen;
  for (size_t i = 0; i < MIB1; i++)
    p[i] = i < whole ? unit[i % ulen] : 'z';
  kmq_dlq_record_t rec = record(p, MIB1);
  for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
    for (size_t max = limits[i]; max < limits[i] + 4; max++)
      check_truncated(&rec, max, "payload"); /* each cut position */
  }
  free(p);
}
END_TEST

START_TEST(a_letter_that_fits_is_the_old_envelope) {
  const char *v = "{\"msg_type\":\"text\",\"x\":\"\\u0001\xe4\xb8\xad\"}";
  kmq_dlq_record_t rec = record(v, strlen(v));
  rd_kafka_headers_t *h = rd_kafka_headers_new(1);
  rd_kafka_header_add(h, "trace", -1, "abc", 3);
  rec.headers = h;
  size_t len;
  char *old = kmq_dlq_envelope(&rec, NOW, &len);
  char errstr[256];
  kmq_dlq_letter_t l;
  ck_assert_int_eq(
      kmq_dlq_letter_build(&rec, NOW, 1000000, &l, errstr, sizeof(errstr)),
      KMQ_OK);
  ck_assert_int_eq(l.truncated, 0);
  ck_assert_str_eq(l.value, old);
  ck_assert_uint_eq(l.value_len, len);
  ck_assert_ptr_eq(l.key, rec.key);
  ck_assert_uint_eq(l.key_len, rec.key_len);
  ck_assert_ptr_null(strstr(l.value, "truncated"));
  /* Originals kept, the DLQ's own added. */
  const void *hv;
  size_t hn;
  ck_assert_int_eq(rd_kafka_header_get_last(l.headers, "trace", &hv, &hn), 0);
  ck_assert_int_eq(
      rd_kafka_header_get_last(l.headers, "dlq_timestamp", &hv, &hn), 0);
  ck_assert_int_eq(rd_kafka_header_get_last(l.headers, "dlq_reason", &hv, &hn),
                   0);
  ck_assert_int_eq(rd_kafka_header_get_last(l.headers, "dlq_source", &hv, &hn),
                   0);
  kmq_dlq_letter_clear(&l);

  /* Exactly at the limit it is still the full one; a byte less truncates
   * (a payload large enough to pay for the truncation fields). */
  char big[5000];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (char)('a' + i % 26);
  rec.payload = big;
  rec.payload_len = sizeof(big);
  kmq_dlq_letter_build(&rec, NOW, 1000000, &l, errstr, sizeof(errstr));
  size_t exact = KMQ_DLQ_RECORD_OVERHEAD + l.key_len + l.value_len +
                 headers_size(l.headers);
  kmq_dlq_letter_clear(&l);
  ck_assert_int_eq(
      kmq_dlq_letter_build(&rec, NOW, exact, &l, errstr, sizeof(errstr)),
      KMQ_OK);
  ck_assert_int_eq(l.truncated, 0);
  kmq_dlq_letter_clear(&l);
  ck_assert_int_eq(
      kmq_dlq_letter_build(&rec, NOW, exact - 1, &l, errstr, sizeof(errstr)),
      KMQ_OK);
  ck_assert_int_eq(l.truncated, 1);
  ck_assert_uint_le(l.key_len + l.value_len + headers_size(l.headers),
                    exact - 1 - KMQ_DLQ_RECORD_OVERHEAD);
  kmq_dlq_letter_clear(&l);
  free(old);
  rd_kafka_headers_destroy(h);
}
END_TEST

START_TEST(huge_key_is_cut_and_said) {
  size_t klen = 2 * 1000 * 1000;
  char *k = malloc(klen);
  memset(k, 'k', klen);
  k[KMQ_DLQ_KEY_MAX - 1] = '\xc3'; /* "é" across the cut: backs off */
  k[KMQ_DLQ_KEY_MAX] = '\xa9';
  kmq_dlq_record_t rec = record("{}", 2);
  rec.key = k;
  rec.key_len = klen;
  char errstr[256];
  kmq_dlq_letter_t l;
  ck_assert_int_eq(
      kmq_dlq_letter_build(&rec, NOW, 1000000, &l, errstr, sizeof(errstr)),
      KMQ_OK);
  ck_assert_int_eq(l.truncated, 1);
  ck_assert_ptr_eq(l.key, k);
  ck_assert_uint_eq(l.key_len, KMQ_DLQ_KEY_MAX - 1);
  json_t *j = json_loadb(l.value, l.value_len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  ck_assert_uint_eq(json_string_length(json_object_get(j, "key")),
                    KMQ_DLQ_KEY_MAX - 1);
  ck_assert(json_is_true(json_object_get(j, "key_truncated")));
  ck_assert_int_eq(json_integer_value(json_object_get(j, "key_size")),
                   (json_int_t)klen);
  char hex[65];
  sha256_hex(k, klen, hex);
  ck_assert_str_eq(json_string_value(json_object_get(j, "key_sha256")), hex);
  /* The payload itself was whole. */
  ck_assert(json_is_false(json_object_get(j, "payload_truncated")));
  ck_assert_str_eq(json_string_value(json_object_get(j, "payload")), "{}");
  json_decref(j);
  kmq_dlq_letter_clear(&l);
  free(k);
}
END_TEST

START_TEST(huge_headers_are_dropped_and_said) {
  /* 1.2 MB of headers: the full letter cannot fit, and they take more
   * than a quarter of message.max.bytes. */
  size_t hlen = 400 * 1000;
  char *hv = calloc(1, hlen);
  rd_kafka_headers_t *h = rd_kafka_headers_new(3);
  rd_kafka_header_add(h, "big", -1, hv, (ssize_t)hlen);
  rd_kafka_header_add(h, "big2", -1, hv, (ssize_t)hlen);
  rd_kafka_header_add(h, "big3", -1, hv, (ssize_t)hlen);
  kmq_dlq_record_t rec = record("{}", 2);
  rec.headers = h;
  char errstr[256];
  kmq_dlq_letter_t l;
  ck_assert_int_eq(
      kmq_dlq_letter_build(&rec, NOW, 1000000, &l, errstr, sizeof(errstr)),
      KMQ_OK);
  ck_assert_int_eq(l.truncated, 1);
  const void *v;
  size_t n;
  ck_assert_int_ne(rd_kafka_header_get_last(l.headers, "big", &v, &n), 0);
  ck_assert_int_eq(rd_kafka_header_get_last(l.headers, "dlq_reason", &v, &n),
                   0);
  json_t *j = json_loadb(l.value, l.value_len, 0, NULL);
  ck_assert_ptr_nonnull(j);
  ck_assert_int_eq(json_integer_value(json_object_get(j, "headers_dropped")),
                   3);
  json_decref(j);
  kmq_dlq_letter_clear(&l);
  rd_kafka_headers_destroy(h);
  free(hv);
}
END_TEST

START_TEST(a_limit_too_small_for_any_envelope_is_too_large) {
  kmq_dlq_record_t rec = record("{}", 2);
  char errstr[256] = "";
  kmq_dlq_letter_t l;
  ck_assert_int_eq(
      kmq_dlq_letter_build(&rec, NOW, 700, &l, errstr, sizeof(errstr)),
      KMQ_ERR_TOO_LARGE);
  ck_assert_ptr_null(l.value);
  ck_assert_ptr_null(l.headers);
  ck_assert_str_ne(errstr, "");
}
END_TEST

int main(void) {
  Suite *s = suite_create("dlq");
  TCase *tc = tcase_create("letter");
  tcase_add_test(tc, ten_mb_random_bytes_fit_as_base64_prefix);
  tcase_add_test(tc, ten_mb_control_chars_fit_as_escaped_text_prefix);
  tcase_add_test(tc, mib_plus_one_multibyte_text_cut_on_a_character);
  tcase_add_test(tc, a_letter_that_fits_is_the_old_envelope);
  tcase_add_test(tc, huge_key_is_cut_and_said);
  tcase_add_test(tc, huge_headers_are_dropped_and_said);
  tcase_add_test(tc, a_limit_too_small_for_any_envelope_is_too_large);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
