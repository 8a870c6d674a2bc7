/* Helpers of the WeCom broker tests: the in-process simulator whose
 * "callbacks" become sync requests on a fresh sync topic, a client on it,
 * kmq's topic (with its DLQ) and a puller factory. Every function asserts
 * (check) instead of returning an error. Test threads only. */
#ifndef KMQ_TESTS_WECOMUTIL_H
#define KMQ_TESTS_WECOMUTIL_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "kmq/conf.h"
#include "kmq/wecom_api.h"
#include "wecom_sim.h"

#define KT_WX_PARTS 4 /* partitions of the sync and the message topics */

typedef struct {
  kmq_wecom_sim_t *sim;
  kmq_wecom_client_t *cl;
  kmq_conf_t *kafka;        /* bootstrap, 6 s session timeout */
  rd_kafka_t *req_producer; /* the stand-in callback receiver; the test
                               creates it before adding messages */
  char sync_topic[128], out_topic[128], dlq_topic[160], group[128];
} kt_wx_t;

/* Topics, simulator (kfids open_kfids, pages of page_max, events on) and
 * client. The sync request of open_kfid k goes to partition
 * k % KT_WX_PARTS, so that a test knows which member owns it. */
void kt_wx_init(kt_wx_t *f, int kfids, int page_max);
/* Frees all of it (flushes req_producer). */
void kt_wx_done(kt_wx_t *f);
/* A puller of f->group on f's topics; 0 for the puller's defaults. */
kmq_wecom_puller_t *kt_wx_puller(kt_wx_t *f, kmq_wecom_client_t *cl,
                                 int max_pages, int max_failures,
                                 kmq_wecom_page_cb *on_page, void *opaque);
/* Adds messages to the simulator and flushes the requests it caused. */
void kt_wx_add(kt_wx_t *f, int customers, int per);
/* Records in topic now (sum of end - start over its partitions). */
int kt_wx_count(kt_wx_t *f, const char *topic);

/* A puller polled on a thread of its own until stopped. */
typedef struct {
  kmq_wecom_puller_t *p;
  atomic_int stop;
  pthread_t thread;
} kt_wx_runner_t;
/* Takes p; polls it until kt_wx_runner_stop(). */
void kt_wx_runner_start(kt_wx_runner_t *r, kmq_wecom_puller_t *p);
/* Joins the thread; r->p stays the caller's to read and destroy. */
void kt_wx_runner_stop(kt_wx_runner_t *r);

#endif
