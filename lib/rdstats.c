/* librdkafka statistics: parse, publish, read (lib/rdstats.h). */
#include "lib/rdstats.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kmq__rdstats_init(kmq__rdstats_t *st) {
  memset(st, 0, sizeof(*st));
  pthread_mutex_init(&st->lock, NULL);
}

void kmq__rdstats_free(kmq__rdstats_t *st) {
  pthread_mutex_destroy(&st->lock);
}

/* librdkafka reports latencies in microseconds. */
static double kmq__avg_s(json_t *win) {
  json_t *avg = json_object_get(win, "avg");
  return json_is_number(avg) ? json_number_value(avg) / 1e6 : 0.0;
}

static void kmq__brokers(kmq__rdstats_snap_t *w, json_t *brokers) {
  const char *name;
  json_t *b;
  json_object_foreach(brokers, name, b) {
    /* "logical" brokers (the group coordinator's alias) repeat a real one;
     * bootstrap entries (nodeid -1) carry no traffic worth a series. */
    json_t *src = json_object_get(b, "source");
    json_int_t nodeid = json_integer_value(json_object_get(b, "nodeid"));
    if ((json_is_string(src) && !strcmp(json_string_value(src), "logical")) ||
        nodeid < 0)
      continue;
    if (w->nbrokers >= KMQ__RDSTATS_BROKERS)
      break;
    kmq__rdstats_broker_t *o = &w->brokers[w->nbrokers++];
    snprintf(o->name, sizeof(o->name), "%s", name);
    o->nodeid = (int32_t)nodeid;
    o->rtt_avg_s = kmq__avg_s(json_object_get(b, "rtt"));
    o->int_latency_avg_s = kmq__avg_s(json_object_get(b, "int_latency"));
    o->outbuf_latency_avg_s = kmq__avg_s(json_object_get(b, "outbuf_latency"));
  }
}

static void kmq__topics(kmq__rdstats_snap_t *w, json_t *topics) {
  const char *tname, *pname;
  json_t *t, *p;
  json_object_foreach(topics, tname, t) {
    json_object_foreach(json_object_get(t, "partitions"), pname, p) {
      long part = strtol(pname, NULL, 10);
      json_int_t lag = json_integer_value(json_object_get(p, "consumer_lag"));
      /* -1: the internal UA partition; a lag of -1: not consumed here. */
      if (part < 0 || !json_is_integer(json_object_get(p, "consumer_lag")) ||
          lag < 0)
        continue;
      if (w->nparts >= KMQ__RDSTATS_PARTS)
        return;
      kmq__rdstats_part_t *o = &w->parts[w->nparts++];
      snprintf(o->topic, sizeof(o->topic), "%s", tname);
      o->partition = (int32_t)part;
      o->consumer_lag = lag;
    }
  }
}

int kmq__rdstats_update(kmq__rdstats_t *st, const char *json, size_t len) {
  json_t *root = json_loadb(json, len, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return -1;
  }
  kmq__rdstats_snap_t *w = &st->work;
  int64_t updates = w->updates + 1;
  memset(w, 0, sizeof(*w));
  w->updates = updates;
  w->txmsgs = json_integer_value(json_object_get(root, "txmsgs"));
  w->rxmsgs = json_integer_value(json_object_get(root, "rxmsgs"));
  kmq__brokers(w, json_object_get(root, "brokers"));
  kmq__topics(w, json_object_get(root, "topics"));
  json_decref(root);
  pthread_mutex_lock(&st->lock);
  st->pub = *w;
  pthread_mutex_unlock(&st->lock);
  return 0;
}

void kmq__rdstats_read(kmq__rdstats_t *st, kmq__rdstats_snap_t *out) {
  pthread_mutex_lock(&st->lock);
  *out = st->pub;
  pthread_mutex_unlock(&st->lock);
}
