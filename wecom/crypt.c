/* WeCom callback crypto: keys, signature, AES-256-CBC with the padding by
 * hand, base64 (algorithm and order of the checks: include/kmq/wecom.h). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wecom/wecom_int.h"

#define KMQ__AES_KEY_CHARS 43
#define KMQ__BLOCK 32 /* PKCS#7 block of the official library, not AES's 16 */
#define KMQ__RANDOM 16

struct kmq_wecom_crypt_s {
  char token[KMQ_WECOM_MAX_PARAM + 1];
  unsigned char key[32];
  char receive_id[KMQ_WECOM_MAX_FIELD + 1];
  size_t receive_id_len;
  int max_skew_s;
};

static const struct {
  kmq_wecom_err_t err;
  const char *name, *desc;
} kmq__wecom_errs[] = {
#define KMQ_WECOM__ROW(name, value, desc) {KMQ_WECOM_ERR_##name, #name, desc},
    KMQ_WECOM_ERR_LIST(KMQ_WECOM__ROW)
#undef KMQ_WECOM__ROW
};

const char *kmq_wecom_err_name(kmq_wecom_err_t err) {
  for (size_t i = 0; i < sizeof(kmq__wecom_errs) / sizeof(*kmq__wecom_errs);
       i++)
    if (kmq__wecom_errs[i].err == err)
      return kmq__wecom_errs[i].name;
  return "UNKNOWN";
}

const char *kmq_wecom_err2str(kmq_wecom_err_t err) {
  for (size_t i = 0; i < sizeof(kmq__wecom_errs) / sizeof(*kmq__wecom_errs);
       i++)
    if (kmq__wecom_errs[i].err == err)
      return kmq__wecom_errs[i].desc;
  return "Unknown error";
}

static int kmq__b64_val(unsigned char ch) {
  if (ch >= 'A' && ch <= 'Z')
    return ch - 'A';
  if (ch >= 'a' && ch <= 'z')
    return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9')
    return ch - '0' + 52;
  if (ch == '+')
    return 62;
  if (ch == '/')
    return 63;
  return -1;
}

long kmq__wecom_b64_decode(const char *in, size_t len, unsigned char *out) {
  if (len % 4)
    return -1;
  size_t pad = 0;
  if (len && in[len - 1] == '=')
    pad++;
  if (len > 1 && in[len - 2] == '=')
    pad++;
  long n = 0;
  for (size_t i = 0; i < len; i += 4) {
    uint32_t v = 0;
    for (size_t j = 0; j < 4; j++) {
      int d = 0;
      if (i + j >= len - pad) {
        if (i + 4 != len) /* '=' only in the last group */
          return -1;
      } else if ((d = kmq__b64_val((unsigned char)in[i + j])) < 0) {
        return -1;
      }
      v = v << 6 | (uint32_t)d;
    }
    size_t bytes = i + 4 == len ? 3 - pad : 3;
    for (size_t j = 0; j < bytes; j++)
      out[n++] = (unsigned char)(v >> (16 - 8 * j));
  }
  return n;
}

/* Printable ASCII without spaces: what fits in a query string and in the
 * XML we generate without escaping. */
static bool kmq__printable(const char *s, size_t max) {
  size_t n = strnlen(s, max + 1);
  if (n == 0 || n > max)
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
      return false;
  return true;
}

kmq_wecom_crypt_t *kmq_wecom_crypt_new(const char *token,
                                       const char *encoding_aes_key,
                                       const char *receive_id, int max_skew_s,
                                       kmq_wecom_err_t *err, char *errstr,
                                       size_t errstr_size) {
  kmq_wecom_err_t e = KMQ_WECOM_ERR_ILLEGAL_BUFFER;
  kmq_wecom_crypt_t *c = NULL;
  unsigned char key[33 + 3];
  if (!token || !kmq__printable(token, KMQ_WECOM_MAX_PARAM)) {
    snprintf(errstr, errstr_size,
             "token must be 1..%d printable ASCII chars without spaces",
             KMQ_WECOM_MAX_PARAM);
    goto fail;
  }
  if (!receive_id || !kmq__printable(receive_id, KMQ_WECOM_MAX_FIELD)) {
    snprintf(errstr, errstr_size,
             "receive id must be 1..%d printable ASCII chars without spaces",
             KMQ_WECOM_MAX_FIELD);
    goto fail;
  }
  if (max_skew_s < 0) {
    snprintf(errstr, errstr_size, "max skew %d s is negative", max_skew_s);
    goto fail;
  }
  e = KMQ_WECOM_ERR_ILLEGAL_AES_KEY;
  char padded[KMQ__AES_KEY_CHARS + 2];
  if (!encoding_aes_key ||
      strnlen(encoding_aes_key, KMQ__AES_KEY_CHARS + 1) != KMQ__AES_KEY_CHARS) {
    snprintf(errstr, errstr_size, "EncodingAESKey must be %d chars",
             KMQ__AES_KEY_CHARS);
    goto fail;
  }
  memcpy(padded, encoding_aes_key, KMQ__AES_KEY_CHARS);
  padded[KMQ__AES_KEY_CHARS] = '=';
  padded[KMQ__AES_KEY_CHARS + 1] = '\0';
  long n = kmq__wecom_b64_decode(padded, KMQ__AES_KEY_CHARS + 1, key);
  OPENSSL_cleanse(padded, sizeof(padded));
  if (n != 32) {
    snprintf(errstr, errstr_size,
             "EncodingAESKey is not base64 of a 32-byte key");
    goto fail;
  }
  e = KMQ_WECOM_ERR_NOMEM;
  if (!(c = calloc(1, sizeof(*c)))) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  memcpy(c->key, key, 32);
  strcpy(c->token, token);
  strcpy(c->receive_id, receive_id);
  c->receive_id_len = strlen(receive_id);
  c->max_skew_s = max_skew_s;
  OPENSSL_cleanse(key, sizeof(key));
  if (err)
    *err = KMQ_WECOM_OK;
  return c;
fail:
  OPENSSL_cleanse(key, sizeof(key));
  if (err)
    *err = e;
  return NULL;
}

void kmq_wecom_crypt_destroy(kmq_wecom_crypt_t *c) {
  if (!c)
    return;
  OPENSSL_cleanse(c, sizeof(*c));
  free(c);
}

int kmq_wecom_crypt_max_skew(const kmq_wecom_crypt_t *c) {
  return c->max_skew_s;
}

static int kmq__strcmp_p(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

kmq_wecom_err_t kmq_wecom_sign(const kmq_wecom_crypt_t *c,
                               const char *timestamp, const char *nonce,
                               const char *data, char out[41]) {
  out[0] = '\0';
  if (strnlen(timestamp, KMQ_WECOM_MAX_PARAM + 1) > KMQ_WECOM_MAX_PARAM ||
      strnlen(nonce, KMQ_WECOM_MAX_PARAM + 1) > KMQ_WECOM_MAX_PARAM ||
      strnlen(data, KMQ_WECOM_MAX_BODY + 1) > KMQ_WECOM_MAX_BODY)
    return KMQ_WECOM_ERR_ILLEGAL_BUFFER;
  const char *parts[4] = {c->token, timestamp, nonce, data};
  qsort(parts, 4, sizeof(*parts), kmq__strcmp_p);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
  for (int i = 0; ok && i < 4; i++)
    ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]));
  ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 20;
  EVP_MD_CTX_free(ctx);
  if (!ok)
    return KMQ_WECOM_ERR_COMPUTE_SIGNATURE;
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 20; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  out[40] = '\0';
  return KMQ_WECOM_OK;
}

bool kmq__wecom_parse_ts(const char *s, int64_t *out) {
  size_t n = strnlen(s, 19);
  if (n == 0 || n > 18)
    return false;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

kmq_wecom_err_t kmq__wecom_authenticate(const kmq_wecom_crypt_t *c,
                                        const char *msg_signature,
                                        const char *timestamp,
                                        const char *nonce, const char *data,
                                        int64_t now, char *errstr,
                                        size_t errstr_size) {
  if (!msg_signature || !timestamp || !nonce || !data) {
    snprintf(errstr, errstr_size,
             "missing msg_signature, timestamp, nonce or data");
    return KMQ_WECOM_ERR_VALIDATE_SIGNATURE;
  }
  char want[41];
  kmq_wecom_err_t err = kmq_wecom_sign(c, timestamp, nonce, data, want);
  if (err == KMQ_WECOM_ERR_ILLEGAL_BUFFER) {
    snprintf(errstr, errstr_size, "timestamp or nonce over %d bytes or data "
             "over %d", KMQ_WECOM_MAX_PARAM, KMQ_WECOM_MAX_BODY);
    return err;
  }
  if (err) {
    snprintf(errstr, errstr_size, "SHA1 failed");
    return err;
  }
  /* The length is public; the contents are compared in constant time so a
   * forger learns nothing from the timing of a refusal. */
  if (strnlen(msg_signature, 41) != 40 ||
      CRYPTO_memcmp(msg_signature, want, 40)) {
    snprintf(errstr, errstr_size, "msg_signature does not match");
    return KMQ_WECOM_ERR_VALIDATE_SIGNATURE;
  }
  if (c->max_skew_s) {
    int64_t ts;
    if (!kmq__wecom_parse_ts(timestamp, &ts)) {
      snprintf(errstr, errstr_size, "timestamp is not decimal Unix seconds");
      return KMQ_WECOM_ERR_STALE_TIMESTAMP;
    }
    int64_t d = ts > now ? ts - now : now - ts;
    if (d > c->max_skew_s) {
      snprintf(errstr, errstr_size,
               "timestamp %lld is %lld s away from now (max %d)",
               (long long)ts, (long long)d, c->max_skew_s);
      return KMQ_WECOM_ERR_STALE_TIMESTAMP;
    }
  }
  return KMQ_WECOM_OK;
}

/* AES-256-CBC with the padding done by hand (32-byte PKCS#7). */
static bool kmq__aes(const kmq_wecom_crypt_t *c, int enc,
                     const unsigned char *in, size_t len, unsigned char *out) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int n1 = 0, n2 = 0;
  bool ok = ctx &&
            EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL, c->key, c->key,
                              enc) &&
            EVP_CIPHER_CTX_set_padding(ctx, 0) &&
            EVP_CipherUpdate(ctx, out, &n1, in, (int)len) &&
            EVP_CipherFinal_ex(ctx, out + n1, &n2) &&
            (size_t)(n1 + n2) == len;
  EVP_CIPHER_CTX_free(ctx);
  return ok;
}

kmq_wecom_err_t kmq__wecom_decrypt_b64(const kmq_wecom_crypt_t *c,
                                       const char *b64, char **out,
                                       size_t *out_len, char *errstr,
                                       size_t errstr_size) {
  *out = NULL;
  size_t blen = strnlen(b64, KMQ_WECOM_MAX_BODY + 1);
  if (blen > KMQ_WECOM_MAX_BODY) {
    snprintf(errstr, errstr_size, "ciphertext over %d bytes",
             KMQ_WECOM_MAX_BODY);
    return KMQ_WECOM_ERR_ILLEGAL_BUFFER;
  }
  kmq_wecom_err_t err = KMQ_WECOM_ERR_NOMEM;
  unsigned char *raw = malloc(blen / 4 * 3 + 1);
  unsigned char *plain = malloc(blen / 4 * 3 + 1);
  char *msg = NULL;
  if (!raw || !plain) {
    snprintf(errstr, errstr_size, "out of memory");
    goto done;
  }
  long n = kmq__wecom_b64_decode(b64, blen, raw);
  if (n < 0) {
    snprintf(errstr, errstr_size, "ciphertext is not base64");
    err = KMQ_WECOM_ERR_DECODE_BASE64;
    goto done;
  }
  err = KMQ_WECOM_ERR_DECRYPT_AES;
  if (n < KMQ__BLOCK || n % 16) {
    snprintf(errstr, errstr_size,
             "ciphertext of %ld bytes is not whole AES blocks of at least %d",
             n, KMQ__BLOCK);
    goto done;
  }
  if (!kmq__aes(c, 0, raw, (size_t)n, plain)) {
    snprintf(errstr, errstr_size, "AES-256-CBC decryption failed");
    goto done;
  }
  size_t pad = plain[n - 1];
  bool pad_ok = pad >= 1 && pad <= KMQ__BLOCK;
  for (size_t i = 1; pad_ok && i <= pad; i++)
    pad_ok = plain[n - i] == pad;
  if (!pad_ok) {
    snprintf(errstr, errstr_size, "bad PKCS#7 padding");
    goto done;
  }
  err = KMQ_WECOM_ERR_ILLEGAL_BUFFER;
  size_t content = (size_t)n - pad;
  if (content < KMQ__RANDOM + 4) {
    snprintf(errstr, errstr_size, "plaintext too short for its length field");
    goto done;
  }
  const unsigned char *p = plain + KMQ__RANDOM;
  size_t mlen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 |
                (size_t)p[3];
  size_t room = content - KMQ__RANDOM - 4;
  if (mlen > room) {
    snprintf(errstr, errstr_size, "length field %zu beyond the %zu bytes left",
             mlen, room);
    goto done;
  }
  size_t rid_len = room - mlen;
  if (rid_len != c->receive_id_len ||
      memcmp(p + 4 + mlen, c->receive_id, rid_len)) {
    snprintf(errstr, errstr_size,
             "receive id (%zu bytes) is not the configured one", rid_len);
    err = KMQ_WECOM_ERR_VALIDATE_CORPID;
    goto done;
  }
  err = KMQ_WECOM_ERR_NOMEM;
  if (!(msg = malloc(mlen + 1))) {
    snprintf(errstr, errstr_size, "out of memory");
    goto done;
  }
  memcpy(msg, p + 4, mlen);
  msg[mlen] = '\0';
  *out = msg;
  if (out_len)
    *out_len = mlen;
  err = KMQ_WECOM_OK;
done:
  if (plain)
    OPENSSL_cleanse(plain, blen / 4 * 3 + 1);
  free(plain);
  free(raw);
  return err;
}

kmq_wecom_err_t kmq_wecom_encrypt_b64(const kmq_wecom_crypt_t *c,
                                      const void *plaintext, size_t len,
                                      char **b64_out, size_t *b64_len,
                                      char *errstr, size_t errstr_size) {
  *b64_out = NULL;
  if (len > KMQ_WECOM_MAX_BODY / 2) {
    snprintf(errstr, errstr_size, "plaintext of %zu bytes over the %d bound",
             len, KMQ_WECOM_MAX_BODY / 2);
    return KMQ_WECOM_ERR_ILLEGAL_BUFFER;
  }
  size_t content = KMQ__RANDOM + 4 + len + c->receive_id_len;
  size_t pad = KMQ__BLOCK - content % KMQ__BLOCK; /* 1..32, never 0 */
  size_t total = content + pad;
  kmq_wecom_err_t err = KMQ_WECOM_ERR_NOMEM;
  unsigned char *plain = malloc(total), *raw = malloc(total);
  char *b64 = malloc(total / 3 * 4 + 5);
  if (!plain || !raw || !b64) {
    snprintf(errstr, errstr_size, "out of memory");
    goto fail;
  }
  err = KMQ_WECOM_ERR_ENCRYPT_AES;
  if (RAND_bytes(plain, KMQ__RANDOM) != 1) {
    snprintf(errstr, errstr_size, "RAND_bytes failed");
    goto fail;
  }
  unsigned char *p = plain + KMQ__RANDOM;
  p[0] = (unsigned char)(len >> 24);
  p[1] = (unsigned char)(len >> 16);
  p[2] = (unsigned char)(len >> 8);
  p[3] = (unsigned char)len;
  if (len)
    memcpy(p + 4, plaintext, len);
  memcpy(p + 4 + len, c->receive_id, c->receive_id_len);
  memset(plain + content, (int)pad, pad);
  if (!kmq__aes(c, 1, plain, total, raw)) {
    snprintf(errstr, errstr_size, "AES-256-CBC encryption failed");
    goto fail;
  }
  int n = EVP_EncodeBlock((unsigned char *)b64, raw, (int)total);
  if (n <= 0) {
    snprintf(errstr, errstr_size, "base64 encoding failed");
    err = KMQ_WECOM_ERR_ENCODE_BASE64;
    goto fail;
  }
  OPENSSL_cleanse(plain, total);
  free(plain);
  free(raw);
  *b64_out = b64;
  if (b64_len)
    *b64_len = (size_t)n;
  return KMQ_WECOM_OK;
fail:
  if (plain)
    OPENSSL_cleanse(plain, total);
  free(plain);
  free(raw);
  free(b64);
  return err;
}
