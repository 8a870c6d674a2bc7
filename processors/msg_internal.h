/*
 * Internals shared by the message decoder and encoder (kmq__ prefix: not
 * public API). All functions are reentrant and keep no state.
 */
#ifndef KMQ_PROCESSORS_MSG_INTERNAL_H
#define KMQ_PROCESSORS_MSG_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kmq/message.h"

/* Longest excerpt of a user-supplied string quoted in a reason, in bytes. */
#define KMQ__QUOTE_MAX 48

/* snprintf into errstr (NULL or size 0: nothing written). When the text is
 * cut, the cut backs off to a UTF-8 character boundary so that reasons stay
 * valid UTF-8 (they end up in DLQ JSON and headers). */
void kmq__errset(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void kmq__verrset(char *errstr, size_t errstr_size, const char *fmt,
                  va_list ap) __attribute__((format(printf, 3, 0)));

/* Backs a string of len bytes off to the last complete UTF-8 character;
 * returns the new length. s must be valid UTF-8 up to a possible cut. */
size_t kmq__utf8_trim(const char *s, size_t len);

/* Writes s (len bytes of valid UTF-8) into dst as a quoted, printable
 * excerpt: "abc", control characters as \xNN, cut after KMQ__QUOTE_MAX bytes
 * with "..." appended. dst_size >= KMQ__QUOTE_MAX * 4 + 8 never truncates. */
void kmq__quote(char *dst, size_t dst_size, const char *s, size_t len);

/* Strict UTF-8 check (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF). Returns 0, or -1 with errstr saying at which byte offset
 * and why, e.g. "invalid UTF-8 at byte 7: overlong 2-byte encoding of
 * U+002F (0xc0 0xaf)". */
int kmq__utf8_check(const void *buf, size_t len, char *errstr,
                    size_t errstr_size);

/* Makes a NUL-terminated string printable, valid UTF-8 in place: every byte
 * that does not start a valid character, and every control character,
 * becomes '?'. For text quoted from input by a library (jansson's "near
 * '...'" cuts tokens anywhere). */
void kmq__utf8_scrub(char *s);

/* The absent string of a decoded message: "" (never NULL). */
#define KMQ__ABSENT ((kmq_msg_str_t){"", 0})

/* ---- JSON member access (msg_field.c) ------------------------------------
 * `where` is the path of obj for reasons ("" for the envelope, "content",
 * "content.text"); failures are KMQ_ERR_BAD_FIELD. JSON null reads as
 * absent. Pointers stored are borrowed from obj's tree. */

/* "where.key" (or "key" when where is "") as three printf "%s" arguments. */
#define KMQ__F(where, key) (where), (*(where) ? "." : ""), (key)

/* "an object", "a string", "an integer", ...: for reasons. */
const char *kmq__json_type(const json_t *v);

/* obj's member key, or NULL when obj is NULL, key is absent or null. */
json_t *kmq__member(const json_t *obj, const char *key);

/* A string member into *out ("" when absent). required: absent or empty is
 * an error too. A string holding a NUL is an error. */
kmq_err_t kmq__get_str(const json_t *obj, const char *where, const char *key,
                       int required, kmq_msg_str_t *out, char *errstr,
                       size_t errstr_size);

/* An optional integer member; *out = absent when missing. */
kmq_err_t kmq__get_int(const json_t *obj, const char *where, const char *key,
                       int64_t absent, int64_t *out, char *errstr,
                       size_t errstr_size);

/* A required number (integer or real). */
kmq_err_t kmq__get_num(const json_t *obj, const char *where, const char *key,
                       double *out, char *errstr, size_t errstr_size);

/* An object member; *out NULL when absent and not required. */
kmq_err_t kmq__get_obj(const json_t *obj, const char *where, const char *key,
                       int required, json_t **out, char *errstr,
                       size_t errstr_size);

/* ---- message view -------------------------------------------------------- */

/* Fills m->body for m->type from b, the object content.<msgtype> whose path
 * is `where`; checks the type's required fields (message_body.c). */
kmq_err_t kmq__msg_extract_body(const json_t *b, const char *where,
                                kmq_chat_msg_t *m, char *errstr,
                                size_t errstr_size);

/* Empties a message without releasing anything: strings "", event integers
 * -1, type UNKNOWN, content and _root NULL. */
void kmq__msg_reset(kmq_chat_msg_t *msg);

/* Empties msg->body for msg->type: strings "", event integers -1,
 * msgmenu list NULL. */
void kmq__msg_body_reset(kmq_chat_msg_t *msg);

/* Byte equality of two message strings (absent == ""). */
static inline int kmq__str_eq(kmq_msg_str_t a, kmq_msg_str_t b) {
  return a.len == b.len && (!a.len || !memcmp(a.ptr, b.ptr, a.len));
}

/* Validates a parsed envelope object and fills msg's typed view with
 * pointers borrowed from root (msg->_root is left NULL: the caller decides
 * who owns root). On error msg is reset and errstr says why; the codes are
 * those of kmq_msg_decode() steps 4 and 5. */
kmq_err_t kmq__msg_extract(json_t *root, kmq_chat_msg_t *msg, char *errstr,
                           size_t errstr_size);

#endif /* KMQ_PROCESSORS_MSG_INTERNAL_H */
