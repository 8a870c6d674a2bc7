/* kmq: umbrella header: every public header of libkmq. */
#ifndef KMQ_KMQ_H
#define KMQ_KMQ_H
#include "kmq/version.h"
#include "kmq/err.h"
#include "kmq/conf.h"
#include "kmq/gate.h"
#include "kmq/hist.h"
#include "kmq/dlq.h"
#include "kmq/producer.h"
#include "kmq/consumer.h"
#include "kmq/admin.h"
#include "kmq/message.h"
#include "kmq/processor.h"
#include "kmq/sched.h"
#include "kmq/runtime.h"
#include "kmq/dual_write.h"
#include "kmq/compensator.h"
#include "kmq/fallback.h"
#include "kmq/wecom.h"
#include "kmq/wecom_callback.h"
#include "kmq/wecom_api.h"
#endif
