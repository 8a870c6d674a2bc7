/* Typed, validating access to JSON members for the message decoder: every
 * failure is a KMQ_ERR_BAD_FIELD whose reason names the field's full path. */
#include <string.h>

#include "processors/msg_internal.h"

const char *kmq__json_type(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "an object";
  case JSON_ARRAY:
    return "an array";
  case JSON_STRING:
    return "a string";
  case JSON_INTEGER:
    return "an integer";
  case JSON_REAL:
    return "a real number";
  case JSON_TRUE:
    return "true";
  case JSON_FALSE:
    return "false";
  case JSON_NULL:
    return "null";
  }
  return "?";
}


/* A present, non-null member of obj, or NULL. JSON null reads as absent. */
json_t *kmq__member(const json_t *obj, const char *key) {
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  return v && !json_is_null(v) ? v : NULL;
}


/* Reads a string member into *out ("" when absent). required: absent or
 * empty is an error. */
kmq_err_t kmq__get_str(const json_t *obj, const char *where,
                              const char *key, int required,
                              kmq_msg_str_t *out, char *errstr,
                              size_t errstr_size) {
  json_t *v = kmq__member(obj, key);
  *out = KMQ__ABSENT;
  if (!v) {
    if (!required)
      return KMQ_OK;
    kmq__errset(errstr, errstr_size, "%s%s%s is missing", KMQ__F(where, key));
    return KMQ_ERR_BAD_FIELD;
  }
  if (!json_is_string(v)) {
    kmq__errset(errstr, errstr_size, "%s%s%s: expected a string, got %s",
                KMQ__F(where, key), kmq__json_type(v));
    return KMQ_ERR_BAD_FIELD;
  }
  out->ptr = json_string_value(v);
  out->len = json_string_length(v);
  /* Only reachable through kmq_msg_encode(): the parser rejects \u0000. */
  if (memchr(out->ptr, '\0', out->len)) {
    *out = KMQ__ABSENT;
    kmq__errset(errstr, errstr_size, "%s%s%s contains a NUL character",
                KMQ__F(where, key));
    return KMQ_ERR_BAD_FIELD;
  }
  if (required && !out->len) {
    kmq__errset(errstr, errstr_size, "%s%s%s is empty", KMQ__F(where, key));
    return KMQ_ERR_BAD_FIELD;
  }
  return KMQ_OK;
}

kmq_err_t kmq__get_int(const json_t *obj, const char *where,
                              const char *key, int64_t absent, int64_t *out,
                              char *errstr, size_t errstr_size) {
  json_t *v = kmq__member(obj, key);
  *out = absent;
  if (!v)
    return KMQ_OK;
  if (!json_is_integer(v)) {
    kmq__errset(errstr, errstr_size, "%s%s%s: expected an integer, got %s",
                KMQ__F(where, key), kmq__json_type(v));
    return KMQ_ERR_BAD_FIELD;
  }
  *out = (int64_t)json_integer_value(v);
  return KMQ_OK;
}

kmq_err_t kmq__get_num(const json_t *obj, const char *where,
                              const char *key, double *out, char *errstr,
                              size_t errstr_size) {
  json_t *v = kmq__member(obj, key);
  *out = 0;
  if (!v) {
    kmq__errset(errstr, errstr_size, "%s%s%s is missing", KMQ__F(where, key));
    return KMQ_ERR_BAD_FIELD;
  }
  if (!json_is_number(v)) {
    kmq__errset(errstr, errstr_size, "%s%s%s: expected a number, got %s",
                KMQ__F(where, key), kmq__json_type(v));
    return KMQ_ERR_BAD_FIELD;
  }
  *out = json_number_value(v);
  return KMQ_OK;
}

/* An object member; NULL in *out when absent and not required. */
kmq_err_t kmq__get_obj(const json_t *obj, const char *where,
                              const char *key, int required, json_t **out,
                              char *errstr, size_t errstr_size) {
  json_t *v = kmq__member(obj, key);
  *out = NULL;
  if (!v) {
    if (!required)
      return KMQ_OK;
    kmq__errset(errstr, errstr_size, "%s%s%s is missing", KMQ__F(where, key));
    return KMQ_ERR_BAD_FIELD;
  }
  if (!json_is_object(v)) {
    kmq__errset(errstr, errstr_size, "%s%s%s: expected an object, got %s",
                KMQ__F(where, key), kmq__json_type(v));
    return KMQ_ERR_BAD_FIELD;
  }
  *out = v;
  return KMQ_OK;
}
