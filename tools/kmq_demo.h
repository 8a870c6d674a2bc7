/* kmq demo's phases (tools/kmq_demo.c: options, the bulk phase and the
 * result; tools/kmq_demo_wecom.c: the WeCom path). Main's thread only. */
#ifndef KMQ_TOOLS_KMQ_DEMO_H
#define KMQ_TOOLS_KMQ_DEMO_H

typedef struct {
  const char *bootstrap;
  int customers, messages; /* each customer writes `messages` */
  int kfids;               /* open_kfids of the simulated WeCom */
  int partitions;          /* of the sync topic and the kmq topic */
  int timeout_s;           /* for every reply */
} kmq__demo_wecom_opts_t;

/* Runs the WeCom phase and prints its figures; 1 when every customer got
 * every reply in order and everything was committed, 0 otherwise. The
 * process has called kmq_wecom_global_init(). */
int kmq__demo_wecom(const kmq__demo_wecom_opts_t *o);

#endif
