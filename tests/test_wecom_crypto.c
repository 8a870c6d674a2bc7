/* WeCom callback crypto: Tencent's published vector, round trips under
 * random keys and sizes, and every refusal with its own code. Ciphertexts
 * the library would never produce (bad padding, a lying length field) are
 * crafted here with raw AES under the same key. */
#include <check.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/wecom.h"
#include "testutil.h"

#define TOKEN "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
#define AESKEY "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
#define CORPID "ww1436e0e65a779aee"
#define V_TS "1476416373"
#define V_NONCE "47744683"
#define V_ECHO                                                                 \
  "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzE"  \
  "tpbhnFyq6SVHyA=="
#define V_SIG "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"
#define NOW 1476416373

static const char inner_xml[] =
    "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>"
    "<CreateTime>1476416370</CreateTime>"
    "<MsgType><![CDATA[event]]></MsgType>"
    "<Event><![CDATA[kf_msg_or_event]]></Event>"
    "<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>"
    "<OpenKfId>wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw</OpenKfId></xml>";

static kmq_wecom_crypt_t *crypt_of(const char *token, const char *key,
                                   const char *rid, int skew) {
  char errstr[256];
  kmq_wecom_err_t err = -1;
  kmq_wecom_crypt_t *c =
      kmq_wecom_crypt_new(token, key, rid, skew, &err, errstr, sizeof(errstr));
  ck_assert_msg(c, "%s", errstr);
  ck_assert_int_eq(err, KMQ_WECOM_OK);
  return c;
}

/* A fresh random EncodingAESKey (43 chars). */
static void random_key(char out[44]) {
  unsigned char raw[32], b64[48];
  ck_assert_int_eq(RAND_bytes(raw, 32), 1);
  ck_assert_int_eq(EVP_EncodeBlock(b64, raw, 32), 44);
  memcpy(out, b64, 43);
  out[43] = '\0';
}

/* Raw AES-256-CBC of exactly len bytes (a multiple of 16) under the
 * EncodingAESKey, base64: what a forger holding the key could send. */
static char *raw_encrypt(const char *aeskey, const unsigned char *plain,
                         size_t len) {
  char padded[45];
  unsigned char key[48], *out = malloc(len + 16);
  snprintf(padded, sizeof(padded), "%s=", aeskey);
  ck_assert_int_eq(EVP_DecodeBlock(key, (unsigned char *)padded, 44), 33);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n1 = 0, n2 = 0;
  ck_assert(EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, key));
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  ck_assert(EVP_EncryptUpdate(ctx, out, &n1, plain, (int)len));
  ck_assert(EVP_EncryptFinal_ex(ctx, out + n1, &n2));
  ck_assert_int_eq(n1 + n2, (int)len);
  EVP_CIPHER_CTX_free(ctx);
  char *b64 = malloc(len / 3 * 4 + 8);
  EVP_EncodeBlock((unsigned char *)b64, out, (int)len);
  free(out);
  return b64;
}

/* verify_url on data signed with c: the code, and no secret in errstr. */
static kmq_wecom_err_t verify_signed(const kmq_wecom_crypt_t *c,
                                     const char *data, char **plain) {
  char sig[41], errstr[256] = "";
  ck_assert_int_eq(kmq_wecom_sign(c, "1700000000", "n1", data, sig),
                   KMQ_WECOM_OK);
  kmq_wecom_err_t err = kmq_wecom_verify_url(c, sig, "1700000000", "n1", data,
                                             1700000000, plain, NULL, errstr,
                                             sizeof(errstr));
  if (err) {
    ck_assert_ptr_null(*plain);
    ck_assert_msg(errstr[0], "no reason for %s", kmq_wecom_err_name(err));
    ck_assert_ptr_null(strstr(errstr, TOKEN));
    ck_assert_ptr_null(strstr(errstr, AESKEY));
  }
  return err;
}

START_TEST(test_vector) {
  kmq_wecom_crypt_t *c = crypt_of(TOKEN, AESKEY, CORPID, 0);
  char sig[41], *plain = NULL, errstr[256];
  size_t len = 0;
  ck_assert_int_eq(kmq_wecom_sign(c, V_TS, V_NONCE, V_ECHO, sig),
                   KMQ_WECOM_OK);
  ck_assert_str_eq(sig, V_SIG);
  /* Skew off: any now. */
  ck_assert_int_eq(kmq_wecom_verify_url(c, V_SIG, V_TS, V_NONCE, V_ECHO, 0,
                                        &plain, &len, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_str_eq(plain, "1288432023552776189");
  ck_assert_uint_eq(len, 19);
  free(plain);
  kmq_wecom_crypt_destroy(c);

  /* Skew on: fine at the vector's own time, stale 301 s later. */
  c = crypt_of(TOKEN, AESKEY, CORPID, 300);
  ck_assert_int_eq(kmq_wecom_verify_url(c, V_SIG, V_TS, V_NONCE, V_ECHO,
                                        NOW + 300, &plain, NULL, errstr,
                                        sizeof(errstr)),
                   KMQ_WECOM_OK);
  free(plain);
  ck_assert_int_eq(kmq_wecom_verify_url(c, V_SIG, V_TS, V_NONCE, V_ECHO,
                                        NOW + 301, &plain, NULL, errstr,
                                        sizeof(errstr)),
                   KMQ_WECOM_ERR_STALE_TIMESTAMP);
  ck_assert_int_eq(kmq_wecom_verify_url(c, V_SIG, V_TS, V_NONCE, V_ECHO,
                                        NOW - 301, &plain, NULL, errstr,
                                        sizeof(errstr)),
                   KMQ_WECOM_ERR_STALE_TIMESTAMP);
  ck_assert_ptr_null(plain);
  kmq_wecom_crypt_destroy(c);
}
END_TEST

START_TEST(test_bad_keys) {
  const char *bad[] = {
      "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhU",   /* 42 */
      "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUtt", /* 44 */
      "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqh!t",  /* not base64 */
      "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqh=t",  /* '=' inside */
      "",
  };
  char errstr[256];
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    kmq_wecom_err_t err = 0;
    ck_assert_ptr_null(kmq_wecom_crypt_new(TOKEN, bad[i], CORPID, 0, &err,
                                           errstr, sizeof(errstr)));
    ck_assert_int_eq(err, KMQ_WECOM_ERR_ILLEGAL_AES_KEY);
    ck_assert_ptr_null(strstr(errstr, "6qkdMrq68n"));
  }
  kmq_wecom_err_t err = 0;
  ck_assert_ptr_null(kmq_wecom_crypt_new(TOKEN, NULL, CORPID, 0, &err, errstr,
                                         sizeof(errstr)));
  ck_assert_int_eq(err, KMQ_WECOM_ERR_ILLEGAL_AES_KEY);
  ck_assert_ptr_null(kmq_wecom_crypt_new("", AESKEY, CORPID, 0, &err, errstr,
                                         sizeof(errstr)));
  ck_assert_int_eq(err, KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  ck_assert_ptr_null(kmq_wecom_crypt_new(TOKEN, AESKEY, "", 0, &err, errstr,
                                         sizeof(errstr)));
  ck_assert_int_eq(err, KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  ck_assert_ptr_null(kmq_wecom_crypt_new(TOKEN, AESKEY, CORPID, -1, &err,
                                         errstr, sizeof(errstr)));
  ck_assert_int_eq(err, KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  kmq_wecom_crypt_destroy(NULL);
}
END_TEST

static const size_t sizes[] = {0, 1, 31, 32, 33, 1000, KMQ_WECOM_MAX_BODY / 2};

START_TEST(test_round_trip_echostr) {
  char key[44], errstr[256];
  random_key(key);
  kmq_wecom_crypt_t *c = crypt_of("tok-en_1", key, "wwcorp", 300);
  for (size_t s = 0; s < sizeof(sizes) / sizeof(*sizes); s++) {
    size_t n = sizes[s];
    unsigned char *msg = malloc(n + 1);
    ck_assert_int_eq(RAND_bytes(msg, (int)n + 1), 1);
    char *b64 = NULL, *plain = NULL;
    size_t blen = 0, plen = 0;
    ck_assert_int_eq(kmq_wecom_encrypt_b64(c, msg, n, &b64, &blen, errstr,
                                           sizeof(errstr)),
                     KMQ_WECOM_OK);
    ck_assert_uint_eq(strlen(b64), blen);
    /* 16 + 4 + n + 6 padded to whole 32-byte blocks. */
    ck_assert_uint_eq(blen, ((16 + 4 + n + 6) / 32 + 1) * 32 / 3 * 4 +
                                (((16 + 4 + n + 6) / 32 + 1) * 32 % 3 ? 4 : 0));
    char sig[41];
    ck_assert_int_eq(kmq_wecom_sign(c, "1700000000", "abc", b64, sig), 0);
    ck_assert_int_eq(kmq_wecom_verify_url(c, sig, "1700000000", "abc", b64,
                                          1700000000, &plain, &plen, errstr,
                                          sizeof(errstr)),
                     KMQ_WECOM_OK);
    ck_assert_uint_eq(plen, n);
    ck_assert(!memcmp(plain, msg, n));
    ck_assert_int_eq(plain[n], '\0');
    free(plain);
    free(b64);
    free(msg);
  }
  /* One byte over the bound is refused, not truncated. */
  char *big = calloc(1, KMQ_WECOM_MAX_BODY / 2 + 1), *b64 = NULL;
  ck_assert_int_eq(kmq_wecom_encrypt_b64(c, big, KMQ_WECOM_MAX_BODY / 2 + 1,
                                         &b64, NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  ck_assert_ptr_null(b64);
  free(big);
  kmq_wecom_crypt_destroy(c);
}
END_TEST

/* A message callback body for plaintext, signed (msg_signature into sig). */
static char *signed_body(const kmq_wecom_crypt_t *c, const char *plain,
                         size_t len, const char *ts, const char *nonce,
                         char sig[41]) {
  char *xml = NULL, errstr[256];
  ck_assert_int_eq(kmq_wecom_encrypt(c, plain, len, ts, nonce, &xml, NULL,
                                     errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  const char *a = strstr(xml, "<MsgSignature><![CDATA[");
  ck_assert_ptr_nonnull(a);
  memcpy(sig, a + strlen("<MsgSignature><![CDATA["), 40);
  sig[40] = '\0';
  return xml;
}

START_TEST(test_round_trip_msg) {
  char key[44], sig[41], errstr[256];
  random_key(key);
  kmq_wecom_crypt_t *c = crypt_of(TOKEN, key, CORPID, 300);
  char *body = signed_body(c, inner_xml, strlen(inner_xml), "1700000000",
                           "nonce-1", sig);
  ck_assert_ptr_nonnull(strstr(body, "<TimeStamp>1700000000</TimeStamp>"));
  kmq_wecom_callback_msg_t m;
  char *xml = NULL;
  size_t xlen = 0;
  ck_assert_int_eq(kmq_wecom_decrypt_msg(c, sig, "1700000000", "nonce-1", body,
                                         strlen(body), 1700000100, &m, &xml,
                                         &xlen, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_str_eq(xml, inner_xml);
  ck_assert_uint_eq(xlen, strlen(inner_xml));
  ck_assert_str_eq(m.to_user_name, CORPID);
  ck_assert_int_eq(m.create_time, 1476416370);
  ck_assert_str_eq(m.msg_type, "event");
  ck_assert_str_eq(m.event, "kf_msg_or_event");
  ck_assert_str_eq(m.token, "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR");
  ck_assert_str_eq(m.open_kfid, "wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw");
  free(xml);

  /* A wrong signature is refused before anything is decrypted. */
  char orig = sig[0];
  sig[0] = orig == 'a' ? 'b' : 'a';
  ck_assert_int_eq(kmq_wecom_decrypt_msg(c, sig, "1700000000", "nonce-1", body,
                                         strlen(body), 1700000100, &m, &xml,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_VALIDATE_SIGNATURE);
  ck_assert_ptr_null(xml);
  ck_assert_ptr_null(strstr(errstr, TOKEN));
  /* Stale. */
  sig[0] = orig;
  ck_assert_int_eq(kmq_wecom_decrypt_msg(c, sig, "1700000000", "nonce-1", body,
                                         strlen(body), 1700000301, &m, NULL,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_STALE_TIMESTAMP);
  /* Other nonce than the one signed. */
  ck_assert_int_eq(kmq_wecom_decrypt_msg(c, sig, "1700000000", "nonce-2", body,
                                         strlen(body), 1700000000, &m, NULL,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_VALIDATE_SIGNATURE);
  free(body);

  /* The two-step envelope: its signature is the one inside, and it
   * decrypts like the one-step one. */
  char *enc = NULL, esig[41];
  ck_assert_int_eq(kmq_wecom_encrypt_b64(c, inner_xml, strlen(inner_xml), &enc,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_int_eq(kmq_wecom_envelope(c, enc, "1700000000", "n-2", esig, &body,
                                      NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  char inside[80];
  snprintf(inside, sizeof(inside), "<MsgSignature><![CDATA[%s]]>", esig);
  ck_assert_ptr_nonnull(strstr(body, inside));
  ck_assert_int_eq(kmq_wecom_decrypt_msg(c, esig, "1700000000", "n-2", body,
                                         strlen(body), 1700000000, &m, NULL,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_str_eq(m.open_kfid, "wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw");
  free(body);
  free(enc);
  /* What would close the CDATA section is not signed. */
  ck_assert_int_eq(kmq_wecom_envelope(c, "abc]]><x>", "1700000000", "n", esig,
                                      &body, NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_GEN_RETURN_XML);
  ck_assert_ptr_null(body);

  /* Reply XML with bad characters for an XML text node. */
  ck_assert_int_eq(kmq_wecom_encrypt(c, "x", 1, "17<", "n", &xml, NULL, errstr,
                                     sizeof(errstr)),
                   KMQ_WECOM_ERR_GEN_RETURN_XML);
  kmq_wecom_crypt_destroy(c);
}
END_TEST

START_TEST(test_signature_refusals) {
  kmq_wecom_crypt_t *c = crypt_of(TOKEN, AESKEY, CORPID, 0);
  char *plain = NULL, errstr[256];
  const char *sigs[] = {
      "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebec", /* last digit */
      "012BC692D0A58DD4B10F8DFE5C4AC00AE211EBEB", /* case */
      "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebe",  /* short */
      "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb0", /* long */
      "",
  };
  for (size_t i = 0; i < sizeof(sigs) / sizeof(*sigs); i++)
    ck_assert_int_eq(kmq_wecom_verify_url(c, sigs[i], V_TS, V_NONCE, V_ECHO, 0,
                                          &plain, NULL, errstr,
                                          sizeof(errstr)),
                     KMQ_WECOM_ERR_VALIDATE_SIGNATURE);
  ck_assert_int_eq(kmq_wecom_verify_url(c, NULL, V_TS, V_NONCE, V_ECHO, 0,
                                        &plain, NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_VALIDATE_SIGNATURE);
  /* Tampered ciphertext, signature not recomputed. */
  char echo[] = V_ECHO;
  echo[10] = echo[10] == 'A' ? 'B' : 'A';
  ck_assert_int_eq(kmq_wecom_verify_url(c, V_SIG, V_TS, V_NONCE, echo, 0,
                                        &plain, NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_VALIDATE_SIGNATURE);
  /* Oversized parameters are refused before hashing. */
  char big[KMQ_WECOM_MAX_PARAM + 2];
  memset(big, '7', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  ck_assert_int_eq(kmq_wecom_verify_url(c, V_SIG, big, V_NONCE, V_ECHO, 0,
                                        &plain, NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  kmq_wecom_crypt_destroy(c);
}
END_TEST

START_TEST(test_decrypt_refusals) {
  kmq_wecom_crypt_t *c = crypt_of(TOKEN, AESKEY, CORPID, 300);
  char *plain = NULL;
  /* Signed, but not base64. */
  ck_assert_int_eq(verify_signed(c, "abc!", &plain),
                   KMQ_WECOM_ERR_DECODE_BASE64);
  ck_assert_int_eq(verify_signed(c, "abc", &plain),
                   KMQ_WECOM_ERR_DECODE_BASE64);
  ck_assert_int_eq(verify_signed(c, "ab=c", &plain),
                   KMQ_WECOM_ERR_DECODE_BASE64);
  /* Base64 of 20 bytes: not whole AES blocks. */
  ck_assert_int_eq(verify_signed(c, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", &plain),
                   KMQ_WECOM_ERR_DECRYPT_AES);
  ck_assert_int_eq(verify_signed(c, "", &plain), KMQ_WECOM_ERR_DECRYPT_AES);

  unsigned char p[64];
  /* Good layout: 16 random, length 5, "hello", corp id, padding to 64. */
  memset(p, 'r', 16);
  p[16] = 0, p[17] = 0, p[18] = 0, p[19] = 5;
  memcpy(p + 20, "hello", 5);
  memcpy(p + 25, CORPID, 18);
  memset(p + 43, 21, 21);
  char *b64 = raw_encrypt(AESKEY, p, 64);
  ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_OK);
  ck_assert_str_eq(plain, "hello");
  free(plain);
  free(b64);

  /* Bad padding: last byte 0, 33, and a run that does not match. */
  const unsigned char last[] = {0, 33, 255};
  for (size_t i = 0; i < sizeof(last); i++) {
    unsigned char q[64];
    memcpy(q, p, 64);
    q[63] = last[i];
    b64 = raw_encrypt(AESKEY, q, 64);
    ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_ERR_DECRYPT_AES);
    free(b64);
  }
  unsigned char q[64];
  memcpy(q, p, 64);
  q[50] = 20; /* one byte of the 21-byte run differs */
  b64 = raw_encrypt(AESKEY, q, 64);
  ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_ERR_DECRYPT_AES);
  free(b64);

  /* Length field beyond the plaintext. */
  memcpy(q, p, 64);
  q[16] = 0xff;
  b64 = raw_encrypt(AESKEY, q, 64);
  ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  free(b64);
  memcpy(q, p, 64);
  q[19] = 24; /* 5 + 18 + 1: one byte past the corp id */
  b64 = raw_encrypt(AESKEY, q, 64);
  ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  free(b64);
  /* Padding eats into the length field: 32 bytes, pad 32, nothing left. */
  unsigned char tiny[32];
  memset(tiny, 32, 32);
  b64 = raw_encrypt(AESKEY, tiny, 32);
  ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  free(b64);

  /* Wrong receive id: a shorter corp id, then another of the same length. */
  memcpy(q, p, 64);
  q[19] = 6;
  b64 = raw_encrypt(AESKEY, q, 64);
  ck_assert_int_eq(verify_signed(c, b64, &plain),
                   KMQ_WECOM_ERR_VALIDATE_CORPID);
  free(b64);
  kmq_wecom_crypt_t *other = crypt_of(TOKEN, AESKEY, "ww1436e0e65a779aef", 0);
  char errstr[256];
  ck_assert_int_eq(kmq_wecom_encrypt_b64(other, "hi", 2, &b64, NULL, errstr,
                                         sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_int_eq(verify_signed(c, b64, &plain),
                   KMQ_WECOM_ERR_VALIDATE_CORPID);
  free(b64);
  kmq_wecom_crypt_destroy(other);

  /* Tampered ciphertext, re-signed (a forger with the token but not the
   * key): the last block's padding no longer checks. */
  b64 = raw_encrypt(AESKEY, p, 64);
  size_t n = strlen(b64);
  b64[n - 6] = b64[n - 6] == 'A' ? 'B' : 'A';
  ck_assert_int_eq(verify_signed(c, b64, &plain), KMQ_WECOM_ERR_DECRYPT_AES);
  free(b64);

  /* Another key altogether. */
  char key[44];
  random_key(key);
  kmq_wecom_crypt_t *k2 = crypt_of(TOKEN, key, CORPID, 0);
  ck_assert_int_eq(kmq_wecom_encrypt_b64(k2, "hi", 2, &b64, NULL, errstr,
                                         sizeof(errstr)),
                   KMQ_WECOM_OK);
  ck_assert_int_ne(verify_signed(c, b64, &plain), KMQ_WECOM_OK);
  free(b64);
  kmq_wecom_crypt_destroy(k2);
  kmq_wecom_crypt_destroy(c);
}
END_TEST

/* decrypt_msg on a body whose Encrypt is a real ciphertext of inner_xml. */
static kmq_wecom_err_t post(const kmq_wecom_crypt_t *c, const char *body) {
  char errstr[256] = "", *xml = NULL;
  kmq_wecom_callback_msg_t m;
  /* The Encrypt value, if any, is what the signature covers. */
  char sig[41] = "0000000000000000000000000000000000000000";
  const char *a = strstr(body, "<Encrypt>"), *b = strstr(body, "</Encrypt>");
  if (a && b && b > a) {
    char enc[4096];
    snprintf(enc, sizeof(enc), "%.*s", (int)(b - a - 9), a + 9);
    kmq_wecom_sign(c, "1700000000", "n", enc, sig);
  }
  kmq_wecom_err_t err =
      kmq_wecom_decrypt_msg(c, sig, "1700000000", "n", body, strlen(body),
                            1700000000, &m, &xml, NULL, errstr, sizeof(errstr));
  free(xml);
  if (err)
    ck_assert_msg(errstr[0], "no reason");
  return err;
}

START_TEST(test_xml_refusals) {
  kmq_wecom_crypt_t *c = crypt_of(TOKEN, AESKEY, CORPID, 0);
  char errstr[256], *enc = NULL, body[8192];
  ck_assert_int_eq(kmq_wecom_encrypt_b64(c, inner_xml, strlen(inner_xml), &enc,
                                         NULL, errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  /* Plain text and extra fields are fine. */
  snprintf(body, sizeof(body),
           "<?xml version=\"1.0\"?><xml><ToUserName>x</ToUserName>"
           "<AgentID>1</AgentID><Encrypt>%s</Encrypt></xml>",
           enc);
  ck_assert_int_eq(post(c, body), KMQ_WECOM_OK);
  const char *refused[] = {
      /* DOCTYPE with an internal entity, used and unused. */
      "<!DOCTYPE xml [<!ENTITY e \"%s\">]><xml><Encrypt>&e;</Encrypt></xml>",
      "<!DOCTYPE xml [<!ENTITY e \"x\">]><xml><Encrypt>%s</Encrypt></xml>",
      /* External entity (XXE) and an external DTD. */
      "<!DOCTYPE xml [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
      "<xml><Encrypt>%s&e;</Encrypt></xml>",
      "<!DOCTYPE xml SYSTEM \"http://127.0.0.1:1/x.dtd\"><xml><Encrypt>%s"
      "</Encrypt></xml>",
      /* Billion laughs, small. */
      "<!DOCTYPE xml [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>"
      "<xml><Encrypt>%s&b;</Encrypt></xml>",
      "<xml><Encrypt>%s</Encrypt><Encrypt>%s</Encrypt></xml>", /* twice */
      "<xml><Encrypt>%s<b/>%s</Encrypt></xml>",  /* mixed content */
      "<notxml><Encrypt>%s</Encrypt></notxml>",
      "<xml><Encrypt>%s</Encrypt>",                /* truncated */
      "<xml><Encrypt>%s</Encrypt></xml><xml/>",    /* two roots */
      "<xml><ToUserName>x</ToUserName></xml>%.0s", /* no Encrypt */
      "",
  };
  for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
    snprintf(body, sizeof(body), refused[i], enc, enc);
    ck_assert_msg(post(c, body) == KMQ_WECOM_ERR_PARSE_XML, "case %zu", i);
  }
  /* Over the size bound: refused before parsing. */
  char *big = malloc(KMQ_WECOM_MAX_BODY + 2);
  memset(big, ' ', KMQ_WECOM_MAX_BODY + 1);
  big[KMQ_WECOM_MAX_BODY + 1] = '\0';
  ck_assert_int_eq(post(c, big), KMQ_WECOM_ERR_ILLEGAL_BUFFER);
  free(big);
  free(enc);

  /* The inner XML goes through the same refusals. */
  const char *inner_bad[] = {
      "<!DOCTYPE xml [<!ENTITY e \"x\">]><xml><MsgType>&e;</MsgType></xml>",
      "<xml><MsgType>event</MsgType>", "<xml><Event>x</Event></xml>",
      "<xml><MsgType>event</MsgType><CreateTime>12x</CreateTime></xml>",
  };
  for (size_t i = 0; i < sizeof(inner_bad) / sizeof(*inner_bad); i++) {
    ck_assert_int_eq(kmq_wecom_encrypt_b64(c, inner_bad[i],
                                           strlen(inner_bad[i]), &enc, NULL,
                                           errstr, sizeof(errstr)),
                     KMQ_WECOM_OK);
    snprintf(body, sizeof(body), "<xml><Encrypt>%s</Encrypt></xml>",
             enc);
    kmq_wecom_err_t err = post(c, body);
    ck_assert_msg(err == KMQ_WECOM_ERR_PARSE_XML, "inner %zu: %s", i,
                  kmq_wecom_err_name(err));
    free(enc);
  }
  /* An inner field over KMQ_WECOM_MAX_FIELD. */
  char inner[1024];
  char longf[KMQ_WECOM_MAX_FIELD + 2];
  memset(longf, 'k', sizeof(longf) - 1);
  longf[sizeof(longf) - 1] = '\0';
  snprintf(inner, sizeof(inner),
           "<xml><MsgType>event</MsgType><OpenKfId>%s</OpenKfId></xml>", longf);
  ck_assert_int_eq(kmq_wecom_encrypt_b64(c, inner, strlen(inner), &enc, NULL,
                                         errstr, sizeof(errstr)),
                   KMQ_WECOM_OK);
  snprintf(body, sizeof(body), "<xml><Encrypt>%s</Encrypt></xml>", enc);
  ck_assert_int_eq(post(c, body), KMQ_WECOM_ERR_PARSE_XML);
  free(enc);
  kmq_wecom_crypt_destroy(c);
}
END_TEST

START_TEST(test_err_names) {
  const kmq_wecom_err_t all[] = {
#define ROW(name, value, desc) KMQ_WECOM_ERR_##name,
      KMQ_WECOM_ERR_LIST(ROW)
#undef ROW
  };
  size_t n = sizeof(all) / sizeof(*all);
  for (size_t i = 0; i < n; i++) {
    ck_assert_str_ne(kmq_wecom_err_name(all[i]), "UNKNOWN");
    for (size_t j = i + 1; j < n; j++) {
      ck_assert_int_ne(all[i], all[j]);
      ck_assert_str_ne(kmq_wecom_err_name(all[i]), kmq_wecom_err_name(all[j]));
    }
  }
  ck_assert_int_eq(KMQ_WECOM_ERR_VALIDATE_SIGNATURE, -40001);
  ck_assert_int_eq(KMQ_WECOM_ERR_GEN_RETURN_XML, -40011);
  ck_assert_str_eq(kmq_wecom_err_name(-40007), "DECRYPT_AES");
  ck_assert_str_eq(kmq_wecom_err_name(12345), "UNKNOWN");
}
END_TEST

int main(void) {
  Suite *s = suite_create("wecom_crypto");
  TCase *tc = tcase_create("crypto");
  tcase_add_test(tc, test_vector);
  tcase_add_test(tc, test_bad_keys);
  tcase_add_test(tc, test_round_trip_echostr);
  tcase_add_loop_test(tc, test_round_trip_msg, 0, 4);
  tcase_add_test(tc, test_signature_refusals);
  tcase_add_test(tc, test_decrypt_refusals);
  tcase_add_test(tc, test_xml_refusals);
  tcase_add_test(tc, test_err_names);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
