/* kmq: umbrella header. */
#ifndef KMQ_KMQ_H
#define KMQ_KMQ_H
#include "kmq/err.h"
#include "kmq/conf.h"
#endif
