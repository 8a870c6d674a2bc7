/* The YAML configuration file (kmq_conf_load_file, include/kmq/conf.h):
 * libyaml's document API, so that every error can name the line and column
 * of the node it is about. Any thread; allocates (start-up path). */
#include "kmq/conf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

typedef struct {
  yaml_document_t *doc;
  const char *path;
  kmq_conf_t *conf;
  char *errstr;
  size_t errstr_size;
} kmq__yctx_t;

/* "<path>:<line>:<column>: " before the message, as compilers do. */
static kmq_err_t kmq__yerr(kmq__yctx_t *y, const yaml_node_t *n, kmq_err_t err,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kmq_err_t kmq__yerr(kmq__yctx_t *y, const yaml_node_t *n, kmq_err_t err,
                           const char *fmt, ...) {
  char msg[1280];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  snprintf(y->errstr, y->errstr_size, "%s:%zu:%zu: %s", y->path,
           n ? n->start_mark.line + 1 : 0, n ? n->start_mark.column + 1 : 0,
           msg);
  return err;
}

/* Expands ${VAR}, ${VAR:default} and $$ in s into a new string (*out, the
 * caller frees). NULL *out and a message in why when a variable is unset
 * without a default or a ${ is not closed. */
static void kmq__subst(const char *s, char **out, char *why, size_t why_size) {
  size_t cap = strlen(s) + 64, len = 0;
  char *o = malloc(cap);
  *out = NULL;
  if (!o) {
    snprintf(why, why_size, "out of memory");
    return;
  }
  for (const char *p = s; *p;) {
    const char *add = p;
    size_t addn = 1;
    if (p[0] == '$' && p[1] == '$') {
      p += 2;
    } else if (p[0] == '$' && p[1] == '{') {
      const char *end = strchr(p, '}');
      if (!end) {
        snprintf(why, why_size, "unclosed \"${\" in \"%s\"", s);
        free(o);
        return;
      }
      const char *colon = memchr(p + 2, ':', (size_t)(end - p - 2));
      size_t nlen = (size_t)((colon ? colon : end) - (p + 2));
      char var[128];
      if (nlen == 0 || nlen >= sizeof(var)) {
        snprintf(why, why_size, "bad variable name in \"%s\"", s);
        free(o);
        return;
      }
      memcpy(var, p + 2, nlen);
      var[nlen] = '\0';
      const char *v = getenv(var);
      if (v) {
        add = v;
        addn = strlen(v);
      } else if (colon) {
        add = colon + 1;
        addn = (size_t)(end - colon - 1);
      } else {
        snprintf(why, why_size,
                 "environment variable %s is not set (write ${%s:default} "
                 "for a default)",
                 var, var);
        free(o);
        return;
      }
      p = end + 1;
    } else {
      p++;
    }
    if (len + addn + 1 > cap) {
      cap = (len + addn + 1) * 2;
      char *n = realloc(o, cap);
      if (!n) {
        snprintf(why, why_size, "out of memory");
        free(o);
        return;
      }
      o = n;
    }
    memcpy(o + len, add, addn);
    len += addn;
  }
  o[len] = '\0';
  *out = o;
}

static const char *kmq__scalar(const yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value
                                          : NULL;
}

/* Sets prefix + key = value (substituted) through kmq_conf_set. */
static kmq_err_t kmq__set(kmq__yctx_t *y, const char *key, yaml_node_t *vn) {
  const char *raw = kmq__scalar(vn);
  if (!raw)
    return kmq__yerr(y, vn, KMQ_ERR_BAD_FIELD,
                     "%s: expected a value, found a list or map", key);
  char why[1024], *val;
  kmq__subst(raw, &val, why, sizeof(why));
  if (!val)
    return kmq__yerr(y, vn, KMQ_ERR_BAD_FIELD, "%s: %s", key, why);
  char err[512];
  kmq_err_t e = kmq_conf_set(y->conf, key, val, err, sizeof(err));
  free(val);
  if (e)
    /* kmq_conf_set's text names the key, not a secret's value: librdkafka
     * does not validate (so never echoes) string properties. */
    return kmq__yerr(y, vn, e, "%s: %s", key, err);
  return KMQ_OK;
}

/* Sets every leaf of map n as <prefix><dotted path>; nested maps add their
 * key and a dot. */
static kmq_err_t kmq__set_map(kmq__yctx_t *y, yaml_node_t *n,
                              const char *prefix) {
  if (n->type != YAML_MAPPING_NODE)
    return kmq__yerr(y, n, KMQ_ERR_BAD_FIELD, "%s: expected a map", prefix);
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
       p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = yaml_document_get_node(y->doc, p->key);
    yaml_node_t *vn = yaml_document_get_node(y->doc, p->value);
    const char *k = kmq__scalar(kn);
    if (!k)
      return kmq__yerr(y, kn, KMQ_ERR_BAD_FIELD, "%s: a key must be a scalar",
                       prefix);
    char full[512];
    if ((size_t)snprintf(full, sizeof(full), "%s%s", prefix, k) >=
        sizeof(full))
      return kmq__yerr(y, kn, KMQ_ERR_BAD_FIELD, "%s: key too long", k);
    kmq_err_t e;
    if (vn->type == YAML_MAPPING_NODE) {
      strcat(full, ".");
      e = kmq__set_map(y, vn, full);
    } else {
      e = kmq__set(y, full, vn);
    }
    if (e)
      return e;
  }
  return KMQ_OK;
}

/* The sections that map onto conf keys, with the prefix each adds. "topic"
 * and "dlq" are meant for profiles but harmless at top level. */
static const char *kmq__section_prefix(const char *name) {
  static const char *const map[][2] = {
      {"kafka", ""},       {"producer", "producer."}, {"consumer", "consumer."},
      {"kmq", "kmq."},     {"topic", "kmq.topic."},  {"dlq", "kmq.dlq."},
  };
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
    if (!strcmp(name, map[i][0]))
      return map[i][1];
  return NULL;
}

/* Applies the sections of map n; in_profile: "profile"/"profiles" are not
 * allowed there. */
static kmq_err_t kmq__sections(kmq__yctx_t *y, yaml_node_t *n, int in_profile) {
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
       p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = yaml_document_get_node(y->doc, p->key);
    yaml_node_t *vn = yaml_document_get_node(y->doc, p->value);
    const char *k = kmq__scalar(kn);
    const char *prefix = k ? kmq__section_prefix(k) : NULL;
    if (prefix) {
      kmq_err_t e = kmq__set_map(y, vn, prefix);
      if (e)
        return e;
    } else if (in_profile || !k ||
               (strcmp(k, "profile") && strcmp(k, "profiles"))) {
      return kmq__yerr(y, kn, KMQ_ERR_CONF_UNKNOWN,
                       "unknown section \"%s\" (kafka, producer, consumer, "
                       "kmq, topic, dlq%s)",
                       k ? k : "?", in_profile ? "" : ", profile, profiles");
    }
  }
  return KMQ_OK;
}

static yaml_node_t *kmq__get(yaml_document_t *doc, yaml_node_t *map,
                             const char *key) {
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
       p < map->data.mapping.pairs.top; p++) {
    const char *k = kmq__scalar(yaml_document_get_node(doc, p->key));
    if (k && !strcmp(k, key))
      return yaml_document_get_node(doc, p->value);
  }
  return NULL;
}

/* The profile section named `name` or its canonical/alias counterpart. */
static yaml_node_t *kmq__profile_node(kmq__yctx_t *y, yaml_node_t *profiles,
                                      const char *name) {
  if (!profiles || profiles->type != YAML_MAPPING_NODE)
    return NULL;
  const char *canon = kmq_conf_profile_name(name);
  for (yaml_node_pair_t *p = profiles->data.mapping.pairs.start;
       p < profiles->data.mapping.pairs.top; p++) {
    const char *k = kmq__scalar(yaml_document_get_node(y->doc, p->key));
    if (k && (!strcmp(k, name) ||
              (canon && kmq_conf_profile_name(k) == canon)))
      return yaml_document_get_node(y->doc, p->value);
  }
  return NULL;
}

static kmq_err_t kmq__apply(kmq__yctx_t *y, const char *profile) {
  yaml_node_t *root = yaml_document_get_root_node(y->doc);
  if (!root) /* an empty file: nothing to set */
    return profile ? kmq_conf_set_profile(y->conf, profile, y->errstr,
                                          y->errstr_size)
                   : KMQ_OK;
  if (root->type != YAML_MAPPING_NODE)
    return kmq__yerr(y, root, KMQ_ERR_BAD_FIELD,
                     "expected a map of sections");
  kmq_err_t e = kmq__sections(y, root, 0);
  if (e)
    return e;
  yaml_node_t *profiles = kmq__get(y->doc, root, "profiles");
  if (profiles && profiles->type != YAML_MAPPING_NODE)
    return kmq__yerr(y, profiles, KMQ_ERR_BAD_FIELD,
                     "profiles: expected a map of profiles");
  yaml_node_t *pn = kmq__get(y->doc, root, "profile");
  char *fromfile = NULL;
  if (!profile && pn) {
    char why[1024];
    if (!kmq__scalar(pn))
      return kmq__yerr(y, pn, KMQ_ERR_BAD_FIELD,
                       "profile: expected a name");
    kmq__subst(kmq__scalar(pn), &fromfile, why, sizeof(why));
    if (!fromfile)
      return kmq__yerr(y, pn, KMQ_ERR_BAD_FIELD, "profile: %s", why);
    profile = fromfile;
  }
  if (profile && *profile) {
    yaml_node_t *sec = kmq__profile_node(y, profiles, profile);
    if (kmq_conf_profile_name(profile))
      e = kmq_conf_set_profile(y->conf, profile, y->errstr, y->errstr_size);
    else if (!sec)
      e = kmq__yerr(y, profiles ? profiles : root, KMQ_ERR_BAD_FIELD,
                    "no profile \"%s\" in the file (nor built in: "
                    "development, production)",
                    profile);
    if (!e && sec)
      e = sec->type == YAML_MAPPING_NODE
              ? kmq__sections(y, sec, 1)
              : kmq__yerr(y, sec, KMQ_ERR_BAD_FIELD,
                          "profile \"%s\": expected a map", profile);
  }
  free(fromfile);
  return e;
}

kmq_err_t kmq_conf_load_file(kmq_conf_t *conf, const char *path,
                             const char *profile, char *errstr,
                             size_t errstr_size) {
  if (!conf || !path) {
    snprintf(errstr, errstr_size, "conf and path are required");
    return KMQ_ERR_INVALID_ARG;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
    return KMQ_ERR_IO;
  }
  yaml_parser_t parser;
  yaml_document_t doc;
  kmq_err_t err = KMQ_OK;
  if (!yaml_parser_initialize(&parser)) {
    fclose(f);
    snprintf(errstr, errstr_size, "out of memory");
    return KMQ_ERR_NOMEM;
  }
  yaml_parser_set_input_file(&parser, f);
  if (!yaml_parser_load(&parser, &doc)) {
    snprintf(errstr, errstr_size, "%s:%zu:%zu: %s%s%s", path,
             parser.problem_mark.line + 1, parser.problem_mark.column + 1,
             parser.problem ? parser.problem : "YAML error",
             parser.context ? " " : "", parser.context ? parser.context : "");
    err = parser.error == YAML_READER_ERROR ? KMQ_ERR_IO : KMQ_ERR_BAD_FIELD;
  } else {
    kmq__yctx_t y = {&doc, path, conf, errstr, errstr_size};
    err = kmq__apply(&y, profile);
    yaml_document_delete(&doc);
  }
  yaml_parser_delete(&parser);
  fclose(f);
  return err;
}
