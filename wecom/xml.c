/* The XML of WeCom callbacks, read with expat and nothing more than the
 * format needs: a root <xml> whose direct children hold text or CDATA.
 *
 * Why every DOCTYPE is refused: the only way to declare an entity is an
 * internal or external DTD subset, so with no DOCTYPE there is no entity to
 * expand (billion laughs) and none to load (XXE); WeCom never sends one.
 * The entity-declaration and external-entity handlers stop the parser too,
 * in case a later expat reaches them some other way. */
#include <expat.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "wecom/wecom_int.h"

#define KMQ__XML_MAX_DEPTH 8

typedef struct {
  XML_Parser p;
  kmq__xml_field_t *fields;
  size_t nfields;
  int depth;
  kmq__xml_field_t *cur; /* field whose text is being collected */
  bool in_field;         /* inside a collected field (depth >= 2) */
  const char *why;       /* our own reason to stop; NULL: expat's */
} kmq__xml_state_t;

static void kmq__xml_stop(kmq__xml_state_t *st, const char *why) {
  if (!st->why)
    st->why = why;
  XML_StopParser(st->p, XML_FALSE);
}

static void XMLCALL kmq__xml_start(void *ud, const XML_Char *name,
                                   const XML_Char **atts) {
  kmq__xml_state_t *st = ud;
  (void)atts;
  if (st->why)
    return;
  st->depth++;
  if (st->depth > KMQ__XML_MAX_DEPTH) {
    kmq__xml_stop(st, "elements nested too deep");
    return;
  }
  if (st->depth == 1) {
    if (strcmp(name, "xml"))
      kmq__xml_stop(st, "root element is not <xml>");
    return;
  }
  if (st->in_field) {
    /* Mixed content: which text would the signature have covered? */
    kmq__xml_stop(st, "element inside a field");
    return;
  }
  st->cur = NULL;
  if (st->depth != 2)
    return;
  for (size_t i = 0; i < st->nfields; i++) {
    kmq__xml_field_t *f = &st->fields[i];
    if (strcmp(name, f->name))
      continue;
    if (f->seen) {
      /* Two Encrypt fields: which one did the signature cover? */
      kmq__xml_stop(st, "duplicate field");
      return;
    }
    f->seen = true;
    f->len = 0;
    f->buf[0] = '\0';
    st->cur = f;
    st->in_field = true;
  }
}

static void XMLCALL kmq__xml_end(void *ud, const XML_Char *name) {
  kmq__xml_state_t *st = ud;
  (void)name;
  if (st->depth == 2)
    st->in_field = false;
  st->depth--;
  st->cur = NULL;
}

static void XMLCALL kmq__xml_text(void *ud, const XML_Char *s, int len) {
  kmq__xml_state_t *st = ud;
  kmq__xml_field_t *f = st->cur;
  if (!f || st->why || len <= 0)
    return;
  if ((size_t)len >= f->cap - f->len) {
    kmq__xml_stop(st, "field value too long");
    return;
  }
  memcpy(f->buf + f->len, s, (size_t)len);
  f->len += (size_t)len;
  f->buf[f->len] = '\0';
}

static void XMLCALL kmq__xml_doctype(void *ud, const XML_Char *name,
                                     const XML_Char *sysid,
                                     const XML_Char *pubid, int has_internal) {
  (void)name, (void)sysid, (void)pubid, (void)has_internal;
  kmq__xml_stop(ud, "DOCTYPE refused");
}

static void XMLCALL kmq__xml_entity(void *ud, const XML_Char *name, int pe,
                                    const XML_Char *value, int value_len,
                                    const XML_Char *base, const XML_Char *sysid,
                                    const XML_Char *pubid,
                                    const XML_Char *notation) {
  (void)name, (void)pe, (void)value, (void)value_len, (void)base, (void)sysid,
      (void)pubid, (void)notation;
  kmq__xml_stop(ud, "entity declaration refused");
}

static int XMLCALL kmq__xml_ext_entity(XML_Parser p, const XML_Char *context,
                                       const XML_Char *base,
                                       const XML_Char *sysid,
                                       const XML_Char *pubid) {
  (void)p, (void)context, (void)base, (void)sysid, (void)pubid;
  return XML_STATUS_ERROR; /* never load anything */
}

kmq_wecom_err_t kmq__wecom_xml_parse(const char *doc, size_t len,
                                     kmq__xml_field_t *fields, size_t nfields,
                                     char *errstr, size_t errstr_size) {
  if (len > (size_t)KMQ_WECOM_MAX_BODY) {
    snprintf(errstr, errstr_size, "XML of %zu bytes is over the %d bound", len,
             KMQ_WECOM_MAX_BODY);
    return KMQ_WECOM_ERR_PARSE_XML;
  }
  for (size_t i = 0; i < nfields; i++) {
    fields[i].seen = false;
    fields[i].len = 0;
    fields[i].buf[0] = '\0';
  }
  /* "UTF-8" overrides whatever encoding the document declares. */
  XML_Parser p = XML_ParserCreate("UTF-8");
  if (!p) {
    snprintf(errstr, errstr_size, "out of memory creating the XML parser");
    return KMQ_WECOM_ERR_PARSE_XML;
  }
  kmq__xml_state_t st = {.p = p, .fields = fields, .nfields = nfields};
  XML_SetUserData(p, &st);
  XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
  XML_SetElementHandler(p, kmq__xml_start, kmq__xml_end);
  XML_SetCharacterDataHandler(p, kmq__xml_text);
  XML_SetStartDoctypeDeclHandler(p, kmq__xml_doctype);
  XML_SetEntityDeclHandler(p, kmq__xml_entity);
  XML_SetExternalEntityRefHandler(p, kmq__xml_ext_entity);

  kmq_wecom_err_t err = KMQ_WECOM_OK;
  if (XML_Parse(p, doc, (int)len, XML_TRUE) != XML_STATUS_OK || st.why) {
    if (st.why)
      snprintf(errstr, errstr_size, "XML refused: %s", st.why);
    else
      snprintf(errstr, errstr_size, "XML: %s at line %lu column %lu",
               XML_ErrorString(XML_GetErrorCode(p)),
               (unsigned long)XML_GetCurrentLineNumber(p),
               (unsigned long)XML_GetCurrentColumnNumber(p));
    err = KMQ_WECOM_ERR_PARSE_XML;
  }
  for (size_t i = 0; !err && i < nfields; i++)
    if (fields[i].required && !fields[i].seen) {
      snprintf(errstr, errstr_size, "XML has no <%s>", fields[i].name);
      err = KMQ_WECOM_ERR_PARSE_XML;
    }
  XML_ParserFree(p);
  return err;
}
