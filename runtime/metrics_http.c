/* Metrics endpoint HTTP server on libmicrohttpd (runtime/metrics_http.h). */
#include "runtime/metrics_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct kmq__http_s {
  struct MHD_Daemon *d;
  const kmq__http_route_t *routes;
  size_t n;
  void *opaque;
  const kmq__log_sink_t *log;
  int port;
};

static enum MHD_Result kmq__reply(struct MHD_Connection *conn,
                                  unsigned int status, const char *type,
                                  char *body, size_t len) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result kmq__handle(void *cls, struct MHD_Connection *conn,
                                   const char *url, const char *method,
                                   const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls) {
  (void)version;
  (void)upload;
  (void)upload_size;
  (void)con_cls;
  kmq__http_t *h = cls;
  kmq__sb_t sb = {0};
  if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
    kmq__sb_printf(&sb, "only GET\n");
    return sb.oom ? MHD_NO
                  : kmq__reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                               "text/plain", sb.buf, sb.len);
  }
  for (size_t i = 0; i < h->n; i++) {
    if (strcmp(url, h->routes[i].path))
      continue;
    h->routes[i].render(&sb, h->opaque);
    if (sb.oom) {
      free(sb.buf);
      return MHD_NO; /* closes the connection: the scraper sees a failure */
    }
    return kmq__reply(conn, MHD_HTTP_OK, h->routes[i].content_type, sb.buf,
                      sb.len);
  }
  kmq__sb_printf(&sb, "not found: try /metrics or /stuck\n");
  return sb.oom ? MHD_NO
                : kmq__reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", sb.buf,
                             sb.len);
}

static void kmq__mhd_log(void *cls, const char *fmt, va_list ap) {
  kmq__http_t *h = cls;
  char msg[512];
  vsnprintf(msg, sizeof(msg), fmt, ap);
  size_t l = strlen(msg);
  while (l && msg[l - 1] == '\n')
    msg[--l] = '\0';
  kmq__log_to(h->log, "WARN", "metrics", "http: %s", msg);
}

/* "host:port" or "[v6]:port" into a socket address. */
static int kmq__parse_listen(const char *listen, struct sockaddr_storage *ss,
                             socklen_t *sl, char *errstr, size_t errstr_size) {
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen || !colon[1])
    goto bad;
  size_t hl = (size_t)(colon - listen);
  const char *h = listen;
  if (listen[0] == '[') {
    if (hl < 3 || listen[hl - 1] != ']')
      goto bad;
    h++;
    hl -= 2;
  }
  if (hl >= sizeof(host))
    goto bad;
  memcpy(host, h, hl);
  host[hl] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535)
    goto bad;
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    *sl = sizeof(*v4);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *sl = sizeof(*v6);
    return 0;
  }
  /* A host name: its first IPv4 address (bound exactly there). */
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
  struct addrinfo *ai = NULL;
  if (getaddrinfo(host, NULL, &hints, &ai) || !ai) {
    snprintf(errstr, errstr_size, "kmq.metrics.listen: cannot resolve \"%s\"",
             host);
    return -1;
  }
  memcpy(v4, ai->ai_addr, sizeof(*v4));
  v4->sin_port = htons((uint16_t)port);
  *sl = sizeof(*v4);
  freeaddrinfo(ai);
  return 0;
bad:
  snprintf(errstr, errstr_size, "kmq.metrics.listen: \"%s\" is not host:port "
           "or [ipv6]:port", listen);
  return -1;
}

kmq__http_t *kmq__http_start(const char *listen, const kmq__http_route_t *routes,
                             size_t n, void *opaque,
                             const kmq__log_sink_t *log, char *errstr,
                             size_t errstr_size) {
  struct sockaddr_storage ss;
  socklen_t sl = 0;
  if (kmq__parse_listen(listen, &ss, &sl, errstr, errstr_size))
    return NULL;
  kmq__http_t *h = calloc(1, sizeof(*h));
  if (!h) {
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  h->routes = routes;
  h->n = n;
  h->opaque = opaque;
  h->log = log;
  unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (ss.ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  /* One thread, a few connections: a scraper, kmqctl, a curl by hand. */
  h->d = MHD_start_daemon(flags, 0, NULL, NULL, kmq__handle, h,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned int)16,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                          MHD_OPTION_EXTERNAL_LOGGER, kmq__mhd_log, h,
                          MHD_OPTION_END);
  if (!h->d) {
    snprintf(errstr, errstr_size, "kmq.metrics.listen: cannot listen on %s",
             listen);
    free(h);
    return NULL;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  h->port = di ? di->port : 0;
  (void)sl;
  return h;
}

int kmq__http_port(const kmq__http_t *h) { return h ? h->port : 0; }

void kmq__http_stop(kmq__http_t *h) {
  if (!h)
    return;
  MHD_stop_daemon(h->d);
  free(h);
}
