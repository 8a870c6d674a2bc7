/* libFuzzer target: the WeCom callback decoder on outside input, the POST
 * body and the query parameters.
 *
 * Input: one mode byte, then "msg_signature\ntimestamp\nnonce\n", then the
 * body. Random bytes almost never carry a valid SHA1, so besides taking the
 * signature as given (mode 0, what an attacker controls), the harness can
 * sign what it received itself, to reach what only a token holder can:
 *   0  kmq_wecom_decrypt_msg with the signature as given
 *   1  the same, signed over the body's Encrypt field by the harness
 *   2  kmq_wecom_verify_url with the body as echostr, signed by the harness
 *   3  the inner-XML reader on the body directly
 * Beyond "no crash, no leak, no UB" it checks the contract: an error is
 * one of the documented codes, has a reason, leaves no output and never
 * quotes the token or key; a success decrypts to what re-encrypts and
 * decrypts to the same bytes.
 *
 *   CC=clang cmake -S . -B build-fuzz -G Ninja -DKMQ_FUZZ=ON
 *   ninja -C build-fuzz fuzz_wecom
 *   build-fuzz/tests/fuzz_wecom -max_total_time=60 tests/fuzz/corpus/wecom
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/wecom.h"
#include "wecom/wecom_int.h"

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "contract violated: %s: ", #cond);                      \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define TOKEN "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
#define AESKEY "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
#define NOW 1476416373

static kmq_wecom_crypt_t *crypt_;

static void check_err(kmq_wecom_err_t err, const char *errstr) {
  switch (err) {
  case KMQ_WECOM_ERR_VALIDATE_SIGNATURE:
  case KMQ_WECOM_ERR_PARSE_XML:
  case KMQ_WECOM_ERR_VALIDATE_CORPID:
  case KMQ_WECOM_ERR_DECRYPT_AES:
  case KMQ_WECOM_ERR_ILLEGAL_BUFFER:
  case KMQ_WECOM_ERR_DECODE_BASE64:
  case KMQ_WECOM_ERR_STALE_TIMESTAMP:
    break;
  default:
    CHECK(0, "unexpected %d %s: %s", (int)err, kmq_wecom_err_name(err),
          errstr);
  }
  CHECK(errstr[0], "no reason for %s", kmq_wecom_err_name(err));
  CHECK(!strstr(errstr, TOKEN) && !strstr(errstr, AESKEY), "secret in %s",
        errstr);
}

/* Plaintext that decrypted: encrypting it again must decrypt to it. */
static void round_trip(const char *plain, size_t len) {
  char *b64 = NULL, *again = NULL, sig[41], errstr[256];
  size_t alen = 0;
  if (len > KMQ_WECOM_MAX_BODY / 2)
    return;
  CHECK(!kmq_wecom_encrypt_b64(crypt_, plain, len, &b64, NULL, errstr,
                               sizeof(errstr)),
        "%s", errstr);
  CHECK(!kmq_wecom_sign(crypt_, "1476416373", "n", b64, sig), "sign");
  kmq_wecom_err_t err =
      kmq_wecom_verify_url(crypt_, sig, "1476416373", "n", b64, NOW, &again,
                           &alen, errstr, sizeof(errstr));
  CHECK(!err, "%s: %s", kmq_wecom_err_name(err), errstr);
  CHECK(alen == len && !memcmp(again, plain, len), "round trip differs");
  free(again);
  free(b64);
}

/* Next '\n'-terminated field of [*p, end) as a C string into out. */
static void field(const uint8_t **p, const uint8_t *end, char *out,
                  size_t size) {
  size_t n = 0;
  while (*p < end && **p != '\n') {
    if (n + 1 < size)
      out[n++] = (char)**p;
    (*p)++;
  }
  if (*p < end)
    (*p)++;
  out[n] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char errstr[256];
  if (!crypt_) {
    crypt_ = kmq_wecom_crypt_new(TOKEN, AESKEY, "ww1436e0e65a779aee", 300,
                                 NULL, errstr, sizeof(errstr));
    CHECK(crypt_, "%s", errstr);
  }
  if (!size)
    return 0;
  int mode = data[0] % 4;
  const uint8_t *p = data + 1, *end = data + size;
  char sig[KMQ_WECOM_MAX_PARAM + 8], ts[KMQ_WECOM_MAX_PARAM + 8],
      nonce[KMQ_WECOM_MAX_PARAM + 8];
  field(&p, end, sig, sizeof(sig));
  field(&p, end, ts, sizeof(ts));
  field(&p, end, nonce, sizeof(nonce));
  size_t blen = (size_t)(end - p);
  /* An exact-size heap copy, not NUL-terminated: ASan sees any over-read. */
  char *body = malloc(blen ? blen : 1);
  memcpy(body, p, blen);
  char *out = NULL;
  size_t olen = 0;
  kmq_wecom_err_t err = KMQ_WECOM_OK;
  errstr[0] = '\0';

  if (mode == 0 || mode == 1) {
    if (mode == 1) {
      char *enc = NULL;
      if (!kmq__wecom_outer_parse(body, blen, &enc, errstr, sizeof(errstr)))
        kmq_wecom_sign(crypt_, ts, nonce, enc, sig);
      free(enc);
    }
    kmq_wecom_callback_msg_t m;
    err = kmq_wecom_decrypt_msg(crypt_, sig, ts, nonce, body, blen, NOW, &m,
                                &out, &olen, errstr, sizeof(errstr));
    if (!err) {
      CHECK(out && strlen(out) <= olen, "inner XML");
      CHECK(strlen(m.msg_type) <= KMQ_WECOM_MAX_FIELD &&
                strlen(m.open_kfid) <= KMQ_WECOM_MAX_FIELD,
            "field over its bound");
    }
  } else if (mode == 2) {
    char *echo = malloc(blen + 1);
    memcpy(echo, body, blen);
    echo[blen] = '\0';
    kmq_wecom_sign(crypt_, ts, nonce, echo, sig);
    err = kmq_wecom_verify_url(crypt_, sig, ts, nonce, echo, NOW, &out, &olen,
                               errstr, sizeof(errstr));
    free(echo);
  } else {
    kmq_wecom_callback_msg_t m;
    err = kmq__wecom_inner_parse(body, blen, &m, errstr, sizeof(errstr));
    CHECK(err == KMQ_WECOM_OK || err == KMQ_WECOM_ERR_PARSE_XML, "%s",
          kmq_wecom_err_name(err));
    if (err)
      CHECK(!m.msg_type[0] && !m.open_kfid[0], "error left fields behind");
  }
  if (err && mode != 3) {
    check_err(err, errstr);
    CHECK(!out, "output on error");
  }
  if (!err && out)
    round_trip(out, olen);
  free(out);
  free(body);
  return 0;
}
