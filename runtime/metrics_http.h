/*
 * The metrics endpoint's HTTP server (libmicrohttpd, one internal thread).
 * It serves GET requests for a fixed set of paths; each response body is
 * rendered on that thread by the path's render callback into a fresh
 * buffer, which the server frees after sending. Nothing here touches the
 * hot path: render callbacks read atomics and mutex-protected snapshots.
 */
#ifndef KMQ_RUNTIME_METRICS_HTTP_H
#define KMQ_RUNTIME_METRICS_HTTP_H

#include <stddef.h>

#include "lib/log.h"
#include "runtime/metrics_expo.h"

typedef struct kmq__http_s kmq__http_t;

typedef struct {
  const char *path;         /* exact match, e.g. "/metrics" */
  const char *content_type; /* e.g. "text/plain; version=0.0.4" */
  /* Writes the body into sb. @locality the HTTP thread */
  void (*render)(kmq__sb_t *sb, void *opaque);
} kmq__http_route_t;

/* Listens on `listen` ("host:port" with an IPv4 address or a host name
 * resolving to one, or "[ipv6]:port"; port 0 picks a free one) and serves
 * routes (n of them; the array and opaque must outlive the server). Logs
 * libmicrohttpd's errors through log. Returns NULL with errstr filled when
 * the address does not parse or cannot be bound. */
kmq__http_t *kmq__http_start(const char *listen, const kmq__http_route_t *routes,
                             size_t n, void *opaque,
                             const kmq__log_sink_t *log, char *errstr,
                             size_t errstr_size);

/* The port bound (the one picked when listen asked for 0). */
int kmq__http_port(const kmq__http_t *h);

/* Stops serving (joins the HTTP thread: no render runs after it returns)
 * and frees. No-op on NULL. */
void kmq__http_stop(kmq__http_t *h);

#endif
