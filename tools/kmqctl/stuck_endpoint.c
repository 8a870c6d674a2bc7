/* kmqctl stuck --endpoint: the live runtime's view (GET <URL>/stuck, JSON)
 * fetched with libcurl and printed next to the broker's. The shape:
 *   {"partitions":[{"topic","partition","committed","blocking_offset",
 *                   "user","blocked_seconds","attempts","state"}],
 *    "top_mailboxes":[{"user","depth"}]}
 * Unknown fields are ignored, missing ones print as "-": the endpoint is
 * built elsewhere and may grow. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "kmqctl.h"

/* Field f of o as text into buf ("-" when absent or null). */
static const char *field(json_t *o, const char *f, char *buf, size_t size) {
  json_t *v = json_object_get(o, f);
  if (json_is_string(v))
    snprintf(buf, size, "%s", json_string_value(v));
  else if (json_is_integer(v))
    snprintf(buf, size, "%lld", (long long)json_integer_value(v));
  else if (json_is_real(v))
    snprintf(buf, size, "%.1f", json_real_value(v));
  else
    snprintf(buf, size, "-");
  return buf;
}

int kmqctl_stuck_print_endpoint(const char *json, size_t len, FILE *out,
                                char *why, size_t why_size) {
  json_error_t jerr;
  json_t *root = json_loadb(json, len, 0, &jerr);
  if (!root) {
    snprintf(why, why_size, "not JSON: %s (line %d)", jerr.text, jerr.line);
    return -1;
  }
  json_t *parts = json_object_get(root, "partitions");
  json_t *mbox = json_object_get(root, "top_mailboxes");
  if (!json_is_object(root) || !json_is_array(parts) ||
      (mbox && !json_is_array(mbox))) {
    snprintf(why, why_size,
             "expected {\"partitions\":[...],\"top_mailboxes\":[...]}");
    json_decref(root);
    return -1;
  }
  char b[8][128];
  fprintf(out, "runtime: %zu blocked partition%s\n", json_array_size(parts),
          json_array_size(parts) == 1 ? "" : "s");
  fprintf(out, "  %-24s %9s %10s %10s %-20s %9s %8s %s\n", "topic",
          "partition", "committed", "blocking", "user", "blocked_s",
          "attempts", "state");
  size_t i;
  json_t *p;
  json_array_foreach(parts, i, p) {
    if (!json_is_object(p))
      continue;
    fprintf(out, "  %-24s %9s %10s %10s %-20s %9s %8s %s\n",
            field(p, "topic", b[0], sizeof(b[0])),
            field(p, "partition", b[1], sizeof(b[1])),
            field(p, "committed", b[2], sizeof(b[2])),
            field(p, "blocking_offset", b[3], sizeof(b[3])),
            field(p, "user", b[4], sizeof(b[4])),
            field(p, "blocked_seconds", b[5], sizeof(b[5])),
            field(p, "attempts", b[6], sizeof(b[6])),
            field(p, "state", b[7], sizeof(b[7])));
  }
  if (mbox && json_array_size(mbox)) {
    fprintf(out, "runtime: deepest mailboxes\n  %-24s %s\n", "user", "depth");
    json_array_foreach(mbox, i, p) {
      if (json_is_object(p))
        fprintf(out, "  %-24s %s\n", field(p, "user", b[0], sizeof(b[0])),
                field(p, "depth", b[1], sizeof(b[1])));
    }
  }
  int blocked = (int)json_array_size(parts);
  json_decref(root);
  return blocked;
}

typedef struct {
  char *buf;
  size_t len;
} body_t;

/* A /stuck answer is a few KB; 4 MB bounds a wrong URL's answer. */
#define KMQCTL_BODY_MAX (4u << 20)

static size_t body_cb(char *data, size_t size, size_t n, void *opaque) {
  body_t *b = opaque;
  size_t add = size * n;
  if (b->len + add > KMQCTL_BODY_MAX)
    return 0; /* makes curl fail with CURLE_WRITE_ERROR */
  char *nb = realloc(b->buf, b->len + add + 1);
  if (!nb)
    return 0;
  memcpy(nb + b->len, data, add);
  b->buf = nb;
  b->len += add;
  b->buf[b->len] = '\0';
  return add;
}

int kmqctl_stuck_endpoint(const kmqctl_t *ctl, const char *url) {
  char full[2048], why[512];
  size_t ul = strlen(url);
  snprintf(full, sizeof(full), "%s%sstuck", url,
           ul && url[ul - 1] == '/' ? "" : "/");
  CURL *h = curl_easy_init();
  if (!h)
    return kmqctl_fail(ctl, -1, "curl: cannot initialise");
  body_t b = {NULL, 0};
  curl_easy_setopt(h, CURLOPT_URL, full);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ctl->timeout_ms);
  curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  CURLcode cc = curl_easy_perform(h);
  curl_easy_cleanup(h);
  int ret = -1;
  if (cc != CURLE_OK) {
    kmqctl_fail(ctl, -1, "GET %s: %s", full, curl_easy_strerror(cc));
  } else if ((ret = kmqctl_stuck_print_endpoint(b.buf ? b.buf : "", b.len,
                                                stdout, why, sizeof(why))) <
             0) {
    kmqctl_fail(ctl, -1, "GET %s: %s", full, why);
  }
  free(b.buf);
  return ret;
}
