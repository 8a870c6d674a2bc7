/* hello_kmq: the smallest application embedding an installed kmq.
 *
 * It builds a configuration, a processor registry with one processor (for
 * WeCom "text" messages) and a runtime, then runs the pipeline until SIGINT
 * or SIGTERM: every text message of the topic is printed, one user's
 * messages in order.
 *
 *   hello_kmq [--dry] [bootstrap.servers] [topic] [group.id]
 *
 * --dry creates everything and destroys it again without subscribing, so it
 * needs no broker (librdkafka connects lazily): this is how the install test
 * (tests/install.sh) checks that a program built against the installed
 * headers and library links and starts. Defaults: 127.0.0.1:9092,
 * wecom-kf, hello-kmq.
 *
 * Built two ways against an installed prefix: CMakeLists.txt
 * (find_package(kmq)) and Makefile (pkg-config kmq). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <kmq/kmq.h>

/* SIGINT and SIGTERM are blocked in every thread (kmq's and librdkafka's
 * threads inherit main's mask) and taken here with sigwait(): the runtime is
 * stopped from an ordinary thread, without a handler or a global. */
static void *stopper(void *arg) {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  int sig;
  sigwait(&sigs, &sig);
  kmq_runtime_stop(arg);
  return NULL;
}

/* Runs on a worker thread; one message per user at a time. */
static kmq_proc_result_t on_text(const kmq_chat_msg_t *msg, kmq_proc_ctx_t *ctx,
                                 void *opaque) {
  (void)ctx;
  (void)opaque;
  printf("%.*s: %.*s\n", (int)msg->external_user_id.len,
         msg->external_user_id.ptr, (int)msg->body.text.content.len,
         msg->body.text.content.ptr);
  return KMQ_PROC_OK;
}

static int set(kmq_conf_t *conf, const char *name, const char *value) {
  char errstr[512];
  if (kmq_conf_set(conf, name, value, errstr, sizeof(errstr)) == KMQ_OK)
    return 0;
  fprintf(stderr, "hello_kmq: %s: %s\n", name, errstr);
  return -1;
}

int main(int argc, char **argv) {
  int dry = argc > 1 && !strcmp(argv[1], "--dry");
  if (dry) {
    argc--;
    argv++;
  }
  const char *bootstrap = argc > 1 ? argv[1] : "127.0.0.1:9092";
  const char *topic = argc > 2 ? argv[2] : "wecom-kf";
  const char *group = argc > 3 ? argv[3] : "hello-kmq";
  char errstr[512];
  int status = 1;

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before any thread starts */

  /* The program compiled against one kmq and runs with another when the
   * shared library was replaced: say both. */
  printf("hello_kmq: kmq %s (built against %s)\n", kmq_version(),
         KMQ_VERSION_STRING);
  if (kmq_version_int() != KMQ_VERSION)
    fprintf(stderr, "hello_kmq: warning: header and library versions differ\n");

  kmq_conf_t *conf = kmq_conf_new();
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  if (!conf || !reg) {
    fprintf(stderr, "hello_kmq: %s\n", reg ? "out of memory" : errstr);
    goto fail;
  }
  /* group.id is a consumer property: "consumer." keeps it away from the
   * dead-letter producer (a bare key goes to every client kmq builds). */
  if (set(conf, "bootstrap.servers", bootstrap) ||
      set(conf, "consumer.group.id", group) || set(conf, "kmq.topic", topic) ||
      set(conf, "kmq.sched.workers", "2"))
    goto fail;
  if (kmq_proc_register(reg, "text", on_text, NULL) != KMQ_OK) {
    fprintf(stderr, "hello_kmq: cannot register the text processor\n");
    goto fail;
  }

  kmq_runtime_t *rt = kmq_runtime_new(conf, reg, NULL, NULL, errstr,
                                      sizeof(errstr));
  if (!rt) {
    fprintf(stderr, "hello_kmq: %s\n", errstr);
    goto fail;
  }
  status = 0;
  pthread_t th;
  if (!dry && pthread_create(&th, NULL, stopper, rt) == 0) {
    kmq_err_t err = kmq_runtime_run(rt);
    if (err != KMQ_OK) {
      fprintf(stderr, "hello_kmq: %s\n", kmq_err2str(err));
      status = 1;
    }
    pthread_kill(th, SIGTERM); /* wakes the stopper if run() ended alone */
    pthread_join(th, NULL);
  } else if (!dry) {
    fprintf(stderr, "hello_kmq: cannot start the signal thread\n");
    status = 1;
  }
  kmq_runtime_destroy(rt);
  printf("hello_kmq: %s\n", dry ? "created and destroyed (--dry)" : "stopped");
fail:
  kmq_proc_registry_destroy(reg);
  kmq_conf_destroy(conf);
  return status;
}
