/* Processor registry (see include/kmq/processor.h). Mutable until frozen,
 * immutable after: lookups read plain fields without locks. */
#include "kmq/processor.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "processors/msg_internal.h"

typedef struct {
  kmq_proc_entry_t e; /* e.msg_type is owned (strdup) */
  size_t len;
} kmq__custom_t;

struct kmq_proc_registry_s {
  kmq_proc_entry_t builtin[KMQ_MSG_UNKNOWN]; /* cb NULL: none registered */
  kmq__custom_t *custom;
  size_t ncustom, custom_size;
  kmq_proc_entry_t def; /* cb NULL: no default */
  kmq_proc_entry_t raw; /* cb NULL: none; else exclusive, see the header */
  atomic_bool frozen;
};

kmq_proc_registry_t *kmq_proc_registry_new(char *errstr, size_t errstr_size) {
  kmq_proc_registry_t *reg = calloc(1, sizeof(*reg));
  if (!reg) {
    kmq__errset(errstr, errstr_size, "out of memory creating a registry");
    return NULL;
  }
  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++)
    reg->builtin[t].msg_type = kmq_msg_type_name((kmq_msg_type_t)t);
  reg->def.msg_type = "*";
  reg->raw.msg_type = "raw";
  atomic_init(&reg->frozen, false);
  return reg;
}

void kmq_proc_registry_destroy(kmq_proc_registry_t *reg) {
  if (!reg)
    return;
  for (size_t i = 0; i < reg->ncustom; i++)
    free((char *)reg->custom[i].e.msg_type);
  free(reg->custom);
  free(reg);
}

/* Relaxed: registration and freeze happen on the configuring thread; the
 * flag only rejects late registrations, it publishes nothing (thread
 * creation does, see kmq_proc_registry_freeze). */
static bool kmq__frozen(const kmq_proc_registry_t *reg) {
  return atomic_load_explicit(&reg->frozen, memory_order_relaxed);
}

static kmq__custom_t *kmq__custom_find(const kmq_proc_registry_t *reg,
                                       const char *s, size_t len) {
  for (size_t i = 0; i < reg->ncustom; i++)
    if (reg->custom[i].len == len &&
        !memcmp(reg->custom[i].e.msg_type, s, len))
      return &reg->custom[i];
  return NULL;
}

kmq_err_t kmq_proc_register(kmq_proc_registry_t *reg, const char *msg_type,
                            kmq_proc_cb cb, void *opaque) {
  if (!reg || !cb || !msg_type || !*msg_type)
    return KMQ_ERR_INVALID_ARG;
  if (kmq__frozen(reg) || reg->raw.cb)
    return KMQ_ERR_STATE;
  size_t len = strlen(msg_type);
  kmq_msg_type_t t = kmq_msg_type_from_str(msg_type, len);
  if (t != KMQ_MSG_UNKNOWN) {
    if (reg->builtin[t].cb)
      return KMQ_ERR_DUPLICATE;
    reg->builtin[t].cb = cb;
    reg->builtin[t].opaque = opaque;
    return KMQ_OK;
  }
  if (kmq__custom_find(reg, msg_type, len))
    return KMQ_ERR_DUPLICATE;
  if (reg->ncustom == reg->custom_size) {
    size_t ns = reg->custom_size ? reg->custom_size * 2 : 8;
    kmq__custom_t *n = realloc(reg->custom, ns * sizeof(*n));
    if (!n)
      return KMQ_ERR_NOMEM;
    reg->custom = n;
    reg->custom_size = ns;
  }
  char *name = strdup(msg_type);
  if (!name)
    return KMQ_ERR_NOMEM;
  reg->custom[reg->ncustom++] =
      (kmq__custom_t){{cb, opaque, name}, len};
  return KMQ_OK;
}

kmq_err_t kmq_proc_set_default(kmq_proc_registry_t *reg, kmq_proc_cb cb,
                               void *opaque) {
  if (!reg || !cb)
    return KMQ_ERR_INVALID_ARG;
  if (kmq__frozen(reg) || reg->raw.cb)
    return KMQ_ERR_STATE;
  reg->def.cb = cb;
  reg->def.opaque = opaque;
  return KMQ_OK;
}

static bool kmq__has_typed(const kmq_proc_registry_t *reg) {
  if (reg->def.cb || reg->ncustom)
    return true;
  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++)
    if (reg->builtin[t].cb)
      return true;
  return false;
}

kmq_err_t kmq_proc_set_raw(kmq_proc_registry_t *reg, kmq_proc_cb cb,
                           void *opaque) {
  if (!reg || !cb)
    return KMQ_ERR_INVALID_ARG;
  if (kmq__frozen(reg) || kmq__has_typed(reg))
    return KMQ_ERR_STATE;
  reg->raw.cb = cb;
  reg->raw.opaque = opaque;
  return KMQ_OK;
}

const kmq_proc_entry_t *kmq_proc_raw(const kmq_proc_registry_t *reg) {
  return reg && reg->raw.cb ? &reg->raw : NULL;
}

void kmq_proc_registry_freeze(kmq_proc_registry_t *reg) {
  /* Release is belt and braces: readers on other threads are ordered after
   * the registrations by the creation of (or hand-off to) those threads,
   * which happens after this call. */
  atomic_store_explicit(&reg->frozen, true, memory_order_release);
}

int kmq_proc_registry_frozen(const kmq_proc_registry_t *reg) {
  return kmq__frozen(reg);
}

static const kmq_proc_entry_t *kmq__or_default(const kmq_proc_registry_t *reg,
                                               const kmq_proc_entry_t *e) {
  if (e && e->cb)
    return e;
  return reg->def.cb ? &reg->def : NULL;
}

const kmq_proc_entry_t *kmq_proc_lookup_type(const kmq_proc_registry_t *reg,
                                             const char *msg_type,
                                             size_t len) {
  kmq_msg_type_t t = kmq_msg_type_from_str(msg_type, len);
  if (t != KMQ_MSG_UNKNOWN)
    return kmq__or_default(reg, &reg->builtin[t]);
  const kmq__custom_t *c = msg_type ? kmq__custom_find(reg, msg_type, len)
                                    : NULL;
  return kmq__or_default(reg, c ? &c->e : NULL);
}

const kmq_proc_entry_t *kmq_proc_lookup(const kmq_proc_registry_t *reg,
                                        const kmq_chat_msg_t *msg) {
  /* Built-in types never compare strings: the decoder already did. */
  if ((unsigned)msg->type < KMQ_MSG_UNKNOWN)
    return kmq__or_default(reg, &reg->builtin[msg->type]);
  const kmq__custom_t *c =
      msg->msg_type.ptr
          ? kmq__custom_find(reg, msg->msg_type.ptr, msg->msg_type.len)
          : NULL;
  return kmq__or_default(reg, c ? &c->e : NULL);
}
