/* Dead letters: the JSON envelope, full or truncated to fit the DLQ
 * producer's message.max.bytes (include/kmq/dlq.h states the format). Pure
 * functions of their arguments, any thread; they allocate, which is fine on
 * this failure path. */
#include "kmq/dlq.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

/* Sets o[k] = v (stealing v). Returns -1 when v is NULL (an allocation
 * failed) or the set failed, so that a letter never silently lacks a field. */
static int kmq__put(json_t *o, const char *k, json_t *v) {
  return v && !json_object_set_new(o, k, v) ? 0 : -1;
}

/* Every field of the envelope up to "key", with key cut to key_len bytes.
 * NULL when out of memory. */
static json_t *kmq__envelope_head(const kmq_dlq_record_t *rec, int64_t now_ms,
                                  size_t key_len) {
  char ts[40];
  kmq__rfc3339(now_ms, ts, sizeof(ts));
  json_t *o = json_object();
  if (!o)
    return NULL;
  int bad = kmq__put(o, "version", json_integer(1));
  bad |= kmq__put(o, "original_topic", rec->original_topic
                                           ? json_string(rec->original_topic)
                                           : json_null());
  bad |= kmq__put(o, "original_partition",
                  rec->original_partition >= 0
                      ? json_integer(rec->original_partition)
                      : json_null());
  bad |= kmq__put(o, "original_offset",
                  rec->original_offset >= 0 ? json_integer(rec->original_offset)
                                            : json_null());
  bad |= kmq__put(o, "reason",
                  json_string(rec->reason ? rec->reason : "unknown"));
  bad |= kmq__put(o, "error",
                  rec->error ? json_string(rec->error) : json_null());
  bad |= kmq__put(o, "kafka_error",
                  rec->kafka_err ? json_string(rd_kafka_err2name(rec->kafka_err))
                                 : json_null());
  bad |= kmq__put(o, "failed_at", json_string(ts));
  bad |= kmq__put(o, "source",
                  json_string(rec->source ? rec->source : "unknown"));
  /* The key is the user id: readable when it is UTF-8, null otherwise. */
  json_t *k = rec->key ? json_stringn(rec->key, key_len) : NULL;
  bad |= kmq__put(o, "key", k ? k : json_null());
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

/* 1 when the n bytes at p are UTF-8 that jansson accepts as a string: the
 * test that chooses "payload" over "payload_base64". */
static int kmq__is_text(const void *p, size_t n) {
  json_t *j = json_stringn(p ? p : "", p ? n : 0);
  if (!j)
    return 0; /* also NULL out of memory: then base64, still correct */
  json_decref(j);
  return 1;
}

char *kmq_dlq_envelope(const kmq_dlq_record_t *rec, int64_t now_ms,
                       size_t *len) {
  json_t *o = kmq__envelope_head(rec, now_ms, rec->key ? rec->key_len : 0);
  if (!o)
    return NULL;
  /* The payload is arbitrary bytes: text when it is valid UTF-8 (jansson
   * refuses anything else), base64 otherwise, so nothing is altered. */
  json_t *p = json_stringn(rec->payload ? rec->payload : "",
                           rec->payload ? rec->payload_len : 0);
  int bad;
  if (p) {
    bad = kmq__put(o, "payload", p);
  } else {
    char *b64 = kmq__base64(rec->payload, rec->payload_len, NULL);
    bad = kmq__put(o, "payload_base64", b64 ? json_string(b64) : NULL);
    free(b64);
  }
  char *s = bad ? NULL : json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (s && len)
    *len = strlen(s);
  return s;
}

/* Lower-case hex SHA-256 of p[0..n) into hex (65 bytes). 0, or -1 when
 * libcrypto failed (out of memory). */
static int kmq__sha256_hex(const void *p, size_t n, char hex[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (!EVP_Digest(p ? p : "", p ? n : 0, md, &mdlen, EVP_sha256(), NULL) ||
      mdlen != 32)
    return -1;
  for (unsigned i = 0; i < mdlen; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
  return 0;
}

/* Bytes that jansson's json_dumps (no JSON_ENSURE_ASCII, no
 * JSON_ESCAPE_SLASH) writes for the character that starts with byte c:
 * \" \\ \b \f \n \r \t take 2, other control characters \u00XX take 6,
 * anything else is copied. */
static size_t kmq__json_cost(unsigned char c, size_t seq_len) {
  switch (c) {
  case '"': case '\\': case '\b': case '\f': case '\n': case '\r': case '\t':
    return 2;
  default:
    return c < 0x20 ? 6 : seq_len;
  }
}

/* Length of the longest prefix of the valid UTF-8 text s[0..len) that ends
 * on a character boundary and takes at most room bytes once escaped. */
static size_t kmq__text_prefix(const unsigned char *s, size_t len,
                               size_t room) {
  size_t i = 0, used = 0;
  while (i < len) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    size_t cost = kmq__json_cost(c, n);
    if (n > len - i || used + cost > room)
      break;
    used += cost;
    i += n;
  }
  return i;
}

/* Backs n off to the start of the UTF-8 character it would cut. */
static size_t kmq__utf8_back(const unsigned char *s, size_t n) {
  while (n > 0 && (s[n] & 0xC0) == 0x80)
    n--;
  return n;
}

/* Upper bound of what librdkafka counts for headers h at produce time:
 * name, value and two length varints (at most 5 bytes each) per header. */
static size_t kmq__headers_size(const rd_kafka_headers_t *h, size_t *count) {
  const char *name;
  const void *val;
  size_t size, total = 0, i = 0;
  for (; h && !rd_kafka_header_get_all(h, i, &name, &val, &size); i++)
    total += strlen(name) + size + 10;
  if (count)
    *count = i;
  return total;
}

/* The DLQ record's headers: the originals (when keep) plus the DLQ's own.
 * librdkafka aborts rather than fail an allocation here. */
static rd_kafka_headers_t *kmq__letter_headers(const kmq_dlq_record_t *rec,
                                               int64_t now_ms, int keep) {
  rd_kafka_headers_t *h = keep && rec->headers
                              ? rd_kafka_headers_copy(rec->headers)
                              : rd_kafka_headers_new(3);
  char nowbuf[24];
  snprintf(nowbuf, sizeof(nowbuf), "%lld", (long long)now_ms);
  rd_kafka_header_add(h, "dlq_timestamp", -1, nowbuf, -1);
  rd_kafka_header_add(h, "dlq_source", -1,
                      rec->source ? rec->source : "unknown", -1);
  rd_kafka_header_add(h, "dlq_reason", -1,
                      rec->reason ? rec->reason : "unknown", -1);
  return h;
}

void kmq_dlq_letter_clear(kmq_dlq_letter_t *out) {
  if (!out)
    return;
  free(out->value);
  if (out->headers)
    rd_kafka_headers_destroy(out->headers);
  memset(out, 0, sizeof(*out));
}

/* The truncated envelope's value for a value budget of vroom bytes, into
 * out->value. The payload prefix is sized from the escaping cost counted
 * above, then the real dump is measured; should jansson ever write more
 * than counted, the room shrinks by the excess and the prefix is cut
 * again, so the result fits whatever the counting got wrong. */
static kmq_err_t kmq__truncated_value(const kmq_dlq_record_t *rec,
                                      int64_t now_ms, size_t key_len,
                                      size_t headers_dropped, size_t vroom,
                                      kmq_dlq_letter_t *out, char *errstr,
                                      size_t errstr_size) {
  const unsigned char *pl = rec->payload ? rec->payload : (const void *)"";
  size_t plen = rec->payload ? rec->payload_len : 0;
  size_t klen = rec->key ? rec->key_len : 0;
  int text = kmq__is_text(pl, plen);
  const char *field = text ? "payload" : "payload_base64";
  char psha[65], ksha[65];
  if (kmq__sha256_hex(pl, plen, psha) ||
      (key_len < klen && kmq__sha256_hex(rec->key, klen, ksha))) {
    snprintf(errstr, errstr_size, "SHA-256 failed (out of memory)");
    return KMQ_ERR_NOMEM;
  }
  json_t *o = kmq__envelope_head(rec, now_ms, key_len);
  if (!o)
    goto nomem;
  /* Measured with an empty payload and "false" (one byte longer than
   * "true"), so that what is left is the room for the payload's text. */
  int bad = kmq__put(o, field, json_string(""));
  bad |= kmq__put(o, "payload_truncated", json_false());
  bad |= kmq__put(o, "payload_size", json_integer((json_int_t)plen));
  bad |= kmq__put(o, "payload_sha256", json_string(psha));
  if (key_len < klen) {
    bad |= kmq__put(o, "key_truncated", json_true());
    bad |= kmq__put(o, "key_size", json_integer((json_int_t)klen));
    bad |= kmq__put(o, "key_sha256", json_string(ksha));
  }
  if (headers_dropped)
    bad |= kmq__put(o, "headers_dropped",
                    json_integer((json_int_t)headers_dropped));
  char *s = bad ? NULL : json_dumps(o, JSON_COMPACT);
  if (!s)
    goto nomem_o;
  size_t len0 = strlen(s);
  free(s);
  if (len0 > vroom) {
    snprintf(errstr, errstr_size,
             "an envelope without payload takes %zu bytes, %zu left by "
             "message.max.bytes",
             len0, vroom);
    json_decref(o);
    return KMQ_ERR_TOO_LARGE;
  }
  size_t room = vroom - len0;
  for (;;) {
    size_t n;
    json_t *pv;
    if (text) {
      n = kmq__text_prefix(pl, plen, room);
      pv = json_stringn_nocheck((const char *)pl, n);
    } else {
      n = room / 4 * 3; /* base64 takes 4 bytes per 3, never escaped */
      if (n > plen)
        n = plen;
      char *b64 = kmq__base64(pl, n, NULL);
      pv = b64 ? json_string(b64) : NULL;
      free(b64);
    }
    if (kmq__put(o, field, pv) ||
        kmq__put(o, "payload_truncated", json_boolean(n < plen)))
      goto nomem_o;
    s = json_dumps(o, JSON_COMPACT);
    if (!s)
      goto nomem_o;
    size_t len = strlen(s);
    if (len <= vroom) {
      out->value = s;
      out->value_len = len;
      json_decref(o);
      return KMQ_OK;
    }
    free(s);
    if (n == 0 || len - vroom > room)
      break; /* cannot happen: the empty payload fitted */
    room -= len - vroom;
  }
  snprintf(errstr, errstr_size, "cannot fit the payload prefix");
  json_decref(o);
  return KMQ_ERR_TOO_LARGE;
nomem_o:
  json_decref(o);
nomem:
  snprintf(errstr, errstr_size, "out of memory");
  return KMQ_ERR_NOMEM;
}

kmq_err_t kmq_dlq_letter_build(const kmq_dlq_record_t *rec, int64_t now_ms,
                               size_t max_bytes, kmq_dlq_letter_t *out,
                               char *errstr, size_t errstr_size) {
  memset(out, 0, sizeof(*out));
  if (!rec) {
    snprintf(errstr, errstr_size, "no record");
    return KMQ_ERR_INVALID_ARG;
  }
  size_t room =
      max_bytes > KMQ_DLQ_RECORD_OVERHEAD ? max_bytes - KMQ_DLQ_RECORD_OVERHEAD
                                          : 0;
  size_t plen = rec->payload ? rec->payload_len : 0;
  size_t klen = rec->key ? rec->key_len : 0;
  out->key = rec->key;
  out->key_len = klen;
  out->headers = kmq__letter_headers(rec, now_ms, 1);
  size_t hsz = kmq__headers_size(out->headers, NULL);

  /* The full letter, when it can fit. Its value is at least as long as the
   * payload (escaping and base64 only add), so a longer payload is not even
   * encoded: a 10 MB record is never expanded to 60 MB here. */
  if (klen + hsz + plen <= room) {
    out->value = kmq_dlq_envelope(rec, now_ms, &out->value_len);
    if (!out->value) {
      kmq_dlq_letter_clear(out);
      snprintf(errstr, errstr_size, "out of memory");
      return KMQ_ERR_NOMEM;
    }
    if (klen + hsz + out->value_len <= room)
      return KMQ_OK;
    free(out->value);
    out->value = NULL;
  }

  /* Truncated. Headers worth a quarter of the limit are dropped rather
   * than squeezing the payload out of the letter. */
  out->truncated = 1;
  size_t dropped = 0, orig = kmq__headers_size(rec->headers, &dropped);
  if (orig > max_bytes / 4) {
    rd_kafka_headers_destroy(out->headers);
    out->headers = kmq__letter_headers(rec, now_ms, 0);
    hsz = kmq__headers_size(out->headers, NULL);
  } else {
    dropped = 0;
  }
  if (klen > KMQ_DLQ_KEY_MAX)
    out->key_len = kmq__is_text(rec->key, klen)
                       ? kmq__utf8_back(rec->key, KMQ_DLQ_KEY_MAX)
                       : KMQ_DLQ_KEY_MAX;
  kmq_err_t err = KMQ_ERR_TOO_LARGE;
  if (out->key_len + hsz >= room)
    snprintf(errstr, errstr_size,
             "key (%zu bytes) and headers (%zu) leave no room for a value "
             "in message.max.bytes=%zu",
             out->key_len, hsz, max_bytes);
  else
    err = kmq__truncated_value(rec, now_ms, out->key_len, dropped,
                               room - out->key_len - hsz, out, errstr,
                               errstr_size);
  if (err)
    kmq_dlq_letter_clear(out);
  return err;
}
