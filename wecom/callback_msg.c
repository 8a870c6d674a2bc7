/* The two WeCom callback shapes on top of the crypto of crypt.c: URL
 * verification (GET, the echostr) and message callbacks (POST, the outer
 * and inner XML), and the signed envelope of a reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wecom/wecom_int.h"

kmq_wecom_err_t kmq_wecom_verify_url(const kmq_wecom_crypt_t *c,
                                     const char *msg_signature,
                                     const char *timestamp, const char *nonce,
                                     const char *echostr, int64_t now,
                                     char **plain_out, size_t *plain_len,
                                     char *errstr, size_t errstr_size) {
  *plain_out = NULL;
  kmq_wecom_err_t err = kmq__wecom_authenticate(
      c, msg_signature, timestamp, nonce, echostr, now, errstr, errstr_size);
  if (err)
    return err;
  return kmq__wecom_decrypt_b64(c, echostr, plain_out, plain_len, errstr,
                                errstr_size);
}

kmq_wecom_err_t kmq__wecom_outer_parse(const char *body, size_t len,
                                       char **encrypt, char *errstr,
                                       size_t errstr_size) {
  *encrypt = NULL;
  if (len > KMQ_WECOM_MAX_BODY) {
    snprintf(errstr, errstr_size, "body of %zu bytes over the %d bound", len,
             KMQ_WECOM_MAX_BODY);
    return KMQ_WECOM_ERR_ILLEGAL_BUFFER;
  }
  char to[KMQ_WECOM_MAX_FIELD + 1];
  char *enc = malloc(len + 1);
  if (!enc) {
    snprintf(errstr, errstr_size, "out of memory");
    return KMQ_WECOM_ERR_NOMEM;
  }
  kmq__xml_field_t f[] = {
      {.name = "Encrypt", .buf = enc, .cap = len + 1, .required = true},
      {.name = "ToUserName", .buf = to, .cap = sizeof(to)},
  };
  kmq_wecom_err_t err =
      kmq__wecom_xml_parse(body, len, f, 2, errstr, errstr_size);
  if (err) {
    free(enc);
    return err;
  }
  *encrypt = enc;
  return KMQ_WECOM_OK;
}

kmq_wecom_err_t kmq__wecom_inner_parse(const char *xml, size_t len,
                                       kmq_wecom_callback_msg_t *m,
                                       char *errstr, size_t errstr_size) {
  char ct[32];
  memset(m, 0, sizeof(*m));
  kmq__xml_field_t f[] = {
      {.name = "ToUserName", .buf = m->to_user_name,
       .cap = sizeof(m->to_user_name)},
      {.name = "CreateTime", .buf = ct, .cap = sizeof(ct)},
      {.name = "MsgType", .buf = m->msg_type, .cap = sizeof(m->msg_type),
       .required = true},
      {.name = "Event", .buf = m->event, .cap = sizeof(m->event)},
      {.name = "Token", .buf = m->token, .cap = sizeof(m->token)},
      {.name = "OpenKfId", .buf = m->open_kfid, .cap = sizeof(m->open_kfid)},
  };
  kmq_wecom_err_t err = kmq__wecom_xml_parse(xml, len, f, sizeof(f) / sizeof(*f),
                                             errstr, errstr_size);
  if (!err && f[1].seen && !kmq__wecom_parse_ts(ct, &m->create_time)) {
    snprintf(errstr, errstr_size, "CreateTime is not decimal seconds");
    err = KMQ_WECOM_ERR_PARSE_XML;
  }
  if (err)
    memset(m, 0, sizeof(*m));
  return err;
}

kmq_wecom_err_t kmq_wecom_decrypt_msg(const kmq_wecom_crypt_t *c,
                                      const char *msg_signature,
                                      const char *timestamp, const char *nonce,
                                      const char *body, size_t body_len,
                                      int64_t now,
                                      kmq_wecom_callback_msg_t *msg,
                                      char **xml_out, size_t *xml_len,
                                      char *errstr, size_t errstr_size) {
  char *enc = NULL, *xml = NULL;
  size_t len = 0;
  if (xml_out)
    *xml_out = NULL;
  kmq_wecom_err_t err =
      kmq__wecom_outer_parse(body, body_len, &enc, errstr, errstr_size);
  if (!err)
    err = kmq__wecom_authenticate(c, msg_signature, timestamp, nonce, enc,
                                  now, errstr, errstr_size);
  if (!err)
    err = kmq__wecom_decrypt_b64(c, enc, &xml, &len, errstr, errstr_size);
  if (!err && msg)
    err = kmq__wecom_inner_parse(xml, len, msg, errstr, errstr_size);
  free(enc);
  if (err) {
    free(xml);
    return err;
  }
  if (xml_out) {
    *xml_out = xml;
    if (xml_len)
      *xml_len = len;
  } else {
    free(xml);
  }
  return KMQ_WECOM_OK;
}

static bool kmq__xml_safe(const char *s) {
  size_t n = strnlen(s, KMQ_WECOM_MAX_PARAM + 1);
  if (n == 0 || n > KMQ_WECOM_MAX_PARAM)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
          (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' || s[i] == '-'))
      return false;
  return true;
}

/* Base64 of our own, or an Encrypt value someone wants signed: nothing in
 * it may close the CDATA section. */
static bool kmq__b64_chars(const char *s) {
  for (; *s; s++)
    if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
          (*s >= 'A' && *s <= 'Z') || *s == '+' || *s == '/' || *s == '='))
      return false;
  return true;
}

kmq_wecom_err_t kmq_wecom_envelope(const kmq_wecom_crypt_t *c,
                                   const char *encrypt_b64,
                                   const char *timestamp, const char *nonce,
                                   char sig_out[41], char **xml_out,
                                   size_t *xml_len, char *errstr,
                                   size_t errstr_size) {
  *xml_out = NULL;
  sig_out[0] = '\0';
  if (!timestamp || !nonce || !kmq__xml_safe(timestamp) ||
      !kmq__xml_safe(nonce)) {
    snprintf(errstr, errstr_size, "timestamp and nonce must be 1..%d chars of "
             "[0-9A-Za-z_-]", KMQ_WECOM_MAX_PARAM);
    return KMQ_WECOM_ERR_GEN_RETURN_XML;
  }
  size_t blen = strnlen(encrypt_b64, KMQ_WECOM_MAX_BODY + 1);
  if (blen > KMQ_WECOM_MAX_BODY || !kmq__b64_chars(encrypt_b64)) {
    snprintf(errstr, errstr_size, "Encrypt is not base64 of at most %d bytes",
             KMQ_WECOM_MAX_BODY);
    return KMQ_WECOM_ERR_GEN_RETURN_XML;
  }
  kmq_wecom_err_t err = kmq_wecom_sign(c, timestamp, nonce, encrypt_b64,
                                       sig_out);
  if (err) {
    snprintf(errstr, errstr_size, "signing the envelope failed");
    return err;
  }
  static const char fmt[] =
      "<xml><Encrypt><![CDATA[%s]]></Encrypt>"
      "<MsgSignature><![CDATA[%s]]></MsgSignature>"
      "<TimeStamp>%s</TimeStamp><Nonce><![CDATA[%s]]></Nonce></xml>";
  size_t cap = sizeof(fmt) + blen + 40 + 2 * KMQ_WECOM_MAX_PARAM;
  char *xml = malloc(cap);
  int n = xml ? snprintf(xml, cap, fmt, encrypt_b64, sig_out, timestamp,
                         nonce)
              : -1;
  if (n < 0 || (size_t)n >= cap) {
    free(xml);
    snprintf(errstr, errstr_size, "could not build the envelope XML");
    return KMQ_WECOM_ERR_GEN_RETURN_XML;
  }
  *xml_out = xml;
  if (xml_len)
    *xml_len = (size_t)n;
  return KMQ_WECOM_OK;
}

kmq_wecom_err_t kmq_wecom_encrypt(const kmq_wecom_crypt_t *c,
                                  const void *plaintext, size_t len,
                                  const char *timestamp, const char *nonce,
                                  char **xml_out, size_t *xml_len,
                                  char *errstr, size_t errstr_size) {
  *xml_out = NULL;
  if (!timestamp || !nonce || !kmq__xml_safe(timestamp) ||
      !kmq__xml_safe(nonce)) {
    snprintf(errstr, errstr_size, "timestamp and nonce must be 1..%d chars of "
             "[0-9A-Za-z_-]", KMQ_WECOM_MAX_PARAM);
    return KMQ_WECOM_ERR_GEN_RETURN_XML;
  }
  char *b64 = NULL, sig[41];
  kmq_wecom_err_t err = kmq_wecom_encrypt_b64(c, plaintext, len, &b64, NULL,
                                              errstr, errstr_size);
  if (!err)
    err = kmq_wecom_envelope(c, b64, timestamp, nonce, sig, xml_out, xml_len,
                             errstr, errstr_size);
  free(b64);
  return err;
}
