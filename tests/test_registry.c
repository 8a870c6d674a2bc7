/* Processor registry, the processor context's completion protocol (as the
 * runtime drives it through processors/proc_ctx.h) and kmq_proc_log. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/processor.h"
#include "processors/msg_internal.h" /* kmq__utf8_check */
#include "processors/proc_ctx.h"
#include "testutil.h"

static kmq_proc_result_t count_cb(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)ctx;
  (*(int *)opaque)++;
  return KMQ_PROC_OK;
}

static kmq_proc_result_t other_cb(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  (void)ctx;
  (void)opaque;
  return KMQ_PROC_FAIL;
}

static kmq_proc_registry_t *reg_new(void) {
  char errstr[128];
  kmq_proc_registry_t *reg = kmq_proc_registry_new(errstr, sizeof(errstr));
  ck_assert_msg(reg, "%s", errstr);
  return reg;
}

/* A message as the decoder leaves it, for routing purposes. */
static kmq_chat_msg_t msg_of(kmq_msg_type_t t, const char *type_str) {
  kmq_chat_msg_t m;
  kmq_chat_msg_init(&m, t);
  if (type_str)
    m.msg_type = kmq_msg_str(type_str);
  return m;
}

/* ---- registry ----------------------------------------------------------- */

START_TEST(routes_each_type) {
  kmq_proc_registry_t *reg = reg_new();
  int hits[KMQ_MSG_TYPE_CNT] = {0}, custom = 0, dflt = 0;
  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++)
    ck_assert_int_eq(kmq_proc_register(reg, kmq_msg_type_name(t), count_cb,
                                       &hits[t]),
                     KMQ_OK);
  ck_assert_int_eq(
      kmq_proc_register(reg, "channels_shop_product", count_cb, &custom),
      KMQ_OK);
  ck_assert_int_eq(kmq_proc_set_default(reg, count_cb, &dflt), KMQ_OK);
  kmq_proc_registry_freeze(reg);

  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++) {
    kmq_chat_msg_t m = msg_of(t, NULL);
    const kmq_proc_entry_t *e = kmq_proc_lookup(reg, &m);
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_eq(e->opaque, &hits[t]);
    ck_assert_str_eq(e->msg_type, kmq_msg_type_name(t));
    ck_assert_int_eq(e->cb(&m, NULL, e->opaque), KMQ_PROC_OK);
    /* By string too, without NUL termination. */
    char buf[32];
    size_t n = strlen(kmq_msg_type_name(t));
    memcpy(buf, kmq_msg_type_name(t), n);
    buf[n] = '!';
    ck_assert_ptr_eq(kmq_proc_lookup_type(reg, buf, n), e);
  }
  for (int t = 0; t < KMQ_MSG_UNKNOWN; t++)
    ck_assert_int_eq(hits[t], 1);

  kmq_chat_msg_t m = msg_of(KMQ_MSG_UNKNOWN, "channels_shop_product");
  const kmq_proc_entry_t *e = kmq_proc_lookup(reg, &m);
  ck_assert_ptr_eq(e->opaque, &custom);
  ck_assert_str_eq(e->msg_type, "channels_shop_product");

  m = msg_of(KMQ_MSG_UNKNOWN, "channels_shop_produc"); /* prefix */
  e = kmq_proc_lookup(reg, &m);
  ck_assert_ptr_eq(e->opaque, &dflt);
  ck_assert_str_eq(e->msg_type, "*");
  m = msg_of(KMQ_MSG_UNKNOWN, "never_heard_of");
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &m)->opaque, &dflt);
  ck_assert_ptr_eq(kmq_proc_lookup_type(reg, "x", 1)->opaque, &dflt);
  ck_assert_ptr_eq(kmq_proc_lookup_type(reg, NULL, 0)->opaque, &dflt);
  kmq_proc_registry_destroy(reg);
}
END_TEST

START_TEST(default_and_missing) {
  kmq_proc_registry_t *reg = reg_new();
  int text = 0, dflt = 0;
  ck_assert_int_eq(kmq_proc_register(reg, "text", count_cb, &text), KMQ_OK);
  kmq_chat_msg_t img = msg_of(KMQ_MSG_IMAGE, NULL);
  kmq_chat_msg_t unk = msg_of(KMQ_MSG_UNKNOWN, "zzz");
  kmq_chat_msg_t txt = msg_of(KMQ_MSG_TEXT, NULL);
  /* No default: unregistered types have no processor. */
  ck_assert_ptr_null(kmq_proc_lookup(reg, &img));
  ck_assert_ptr_null(kmq_proc_lookup(reg, &unk));
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &txt)->opaque, &text);
  /* A built-in type without its own processor goes to the default. */
  ck_assert_int_eq(kmq_proc_set_default(reg, other_cb, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_proc_set_default(reg, count_cb, &dflt), KMQ_OK);
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &img)->opaque, &dflt);
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &img)->cb, count_cb);
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &unk)->opaque, &dflt);
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &txt)->opaque, &text);
  kmq_proc_registry_destroy(reg);
  kmq_proc_registry_destroy(NULL);
}
END_TEST

START_TEST(register_after_freeze) {
  kmq_proc_registry_t *reg = reg_new();
  int a = 0, b = 0;
  ck_assert_int_eq(kmq_proc_register(reg, "text", count_cb, &a), KMQ_OK);
  ck_assert(!kmq_proc_registry_frozen(reg));
  kmq_proc_registry_freeze(reg);
  kmq_proc_registry_freeze(reg); /* idempotent */
  ck_assert(kmq_proc_registry_frozen(reg));
  ck_assert_int_eq(kmq_proc_register(reg, "image", count_cb, &b),
                   KMQ_ERR_STATE);
  ck_assert_int_eq(kmq_proc_register(reg, "custom", count_cb, &b),
                   KMQ_ERR_STATE);
  ck_assert_int_eq(kmq_proc_set_default(reg, count_cb, &b), KMQ_ERR_STATE);
  /* Nothing changed. */
  kmq_chat_msg_t img = msg_of(KMQ_MSG_IMAGE, NULL);
  kmq_chat_msg_t cus = msg_of(KMQ_MSG_UNKNOWN, "custom");
  kmq_chat_msg_t txt = msg_of(KMQ_MSG_TEXT, NULL);
  ck_assert_ptr_null(kmq_proc_lookup(reg, &img));
  ck_assert_ptr_null(kmq_proc_lookup(reg, &cus));
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &txt)->opaque, &a);
  kmq_proc_registry_destroy(reg);
}
END_TEST

/* A raw processor takes every record undecoded, so it cannot coexist with
 * typed ones: either order of registration is refused, nothing changes. */
START_TEST(raw_is_exclusive) {
  int a = 0, b = 0;
  kmq_proc_registry_t *reg = reg_new();
  ck_assert_ptr_null(kmq_proc_raw(reg));
  ck_assert_ptr_null(kmq_proc_raw(NULL));
  ck_assert_int_eq(kmq_proc_set_raw(reg, NULL, &a), KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_set_raw(NULL, count_cb, &a), KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_set_raw(reg, other_cb, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_proc_set_raw(reg, count_cb, &a), KMQ_OK); /* replace */
  ck_assert_int_eq(kmq_proc_register(reg, "text", count_cb, &b),
                   KMQ_ERR_STATE);
  ck_assert_int_eq(kmq_proc_register(reg, "custom", count_cb, &b),
                   KMQ_ERR_STATE);
  ck_assert_int_eq(kmq_proc_set_default(reg, count_cb, &b), KMQ_ERR_STATE);
  const kmq_proc_entry_t *e = kmq_proc_raw(reg);
  ck_assert_ptr_nonnull(e);
  ck_assert_ptr_eq(e->cb, count_cb);
  ck_assert_ptr_eq(e->opaque, &a);
  ck_assert_str_eq(e->msg_type, "raw");
  kmq_chat_msg_t txt = msg_of(KMQ_MSG_TEXT, NULL);
  ck_assert_ptr_null(kmq_proc_lookup(reg, &txt));
  kmq_proc_registry_freeze(reg);
  ck_assert_int_eq(kmq_proc_set_raw(reg, other_cb, NULL), KMQ_ERR_STATE);
  ck_assert_ptr_eq(kmq_proc_raw(reg)->cb, count_cb);
  kmq_proc_registry_destroy(reg);

  /* Typed first: raw refused. */
  const char *typed[] = {"text", "custom", NULL};
  for (int i = 0; i < 3; i++) {
    reg = reg_new();
    if (typed[i])
      ck_assert_int_eq(kmq_proc_register(reg, typed[i], count_cb, &b), KMQ_OK);
    else
      ck_assert_int_eq(kmq_proc_set_default(reg, count_cb, &b), KMQ_OK);
    ck_assert_int_eq(kmq_proc_set_raw(reg, count_cb, &a), KMQ_ERR_STATE);
    ck_assert_ptr_null(kmq_proc_raw(reg));
    kmq_proc_registry_destroy(reg);
  }
}
END_TEST

START_TEST(register_errors) {
  kmq_proc_registry_t *reg = reg_new();
  int a = 0;
  ck_assert_int_eq(kmq_proc_register(reg, "text", NULL, &a),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_register(reg, "", count_cb, &a),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_register(reg, NULL, count_cb, &a),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_register(NULL, "text", count_cb, &a),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_set_default(reg, NULL, &a), KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_register(reg, "text", count_cb, &a), KMQ_OK);
  ck_assert_int_eq(kmq_proc_register(reg, "text", other_cb, NULL),
                   KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_proc_register(reg, "mine", count_cb, &a), KMQ_OK);
  ck_assert_int_eq(kmq_proc_register(reg, "mine", other_cb, NULL),
                   KMQ_ERR_DUPLICATE);
  /* The first registration stands. */
  kmq_chat_msg_t txt = msg_of(KMQ_MSG_TEXT, NULL);
  ck_assert_ptr_eq(kmq_proc_lookup(reg, &txt)->cb, count_cb);
  kmq_proc_registry_destroy(reg);
}
END_TEST

START_TEST(many_custom_types) {
  kmq_proc_registry_t *reg = reg_new();
  static int slots[100];
  char name[32];
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof(name), "custom_%d", i);
    ck_assert_int_eq(kmq_proc_register(reg, name, count_cb, &slots[i]),
                     KMQ_OK);
  }
  kmq_proc_registry_freeze(reg);
  for (int i = 0; i < 100; i++) {
    int n = snprintf(name, sizeof(name), "custom_%d", i);
    const kmq_proc_entry_t *e = kmq_proc_lookup_type(reg, name, (size_t)n);
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_eq(e->opaque, &slots[i]);
    ck_assert_str_eq(e->msg_type, name); /* the registry's own copy */
  }
  kmq_proc_registry_destroy(reg);
}
END_TEST

/* ---- context: synchronous results ---------------------------------------- */

typedef struct {
  atomic_int calls;
  atomic_int result;
} done_rec_t;

static void done_cb(kmq_proc_ctx_t *ctx, kmq_proc_result_t r, void *opaque) {
  (void)ctx;
  done_rec_t *d = opaque;
  atomic_store(&d->result, (int)r);
  atomic_fetch_add(&d->calls, 1);
}

static void begin(kmq_proc_ctx_t *ctx, int attempt) {
  ck_assert_int_eq(kmq__proc_ctx_begin(ctx, "wmUser", 6, "chat", 3, 42,
                                       attempt, 4),
                   KMQ_OK);
}

static kmq_proc_result_t fail_with_reason(const kmq_chat_msg_t *msg,
                                          kmq_proc_ctx_t *ctx, void *opaque) {
  (void)opaque;
  kmq_proc_ctx_set_reason(ctx, "CRM said %d for %s", 409, msg->msg_type.ptr);
  return KMQ_PROC_FAIL;
}

START_TEST(ctx_sync_results) {
  kmq_proc_ctx_t ctx;
  done_rec_t d = {0};
  kmq__proc_ctx_init(&ctx, done_cb, &d);
  kmq_chat_msg_t m = msg_of(KMQ_MSG_TEXT, NULL);

  begin(&ctx, 1);
  size_t ulen = 0;
  ck_assert_str_eq(kmq_proc_ctx_user(&ctx, &ulen), "wmUser");
  ck_assert_uint_eq(ulen, 6);
  ck_assert_str_eq(kmq_proc_ctx_topic(&ctx), "chat");
  ck_assert_int_eq(kmq_proc_ctx_partition(&ctx), 3);
  ck_assert_int_eq(kmq_proc_ctx_offset(&ctx), 42);
  ck_assert_int_eq(kmq_proc_ctx_attempt(&ctx), 1);
  size_t vlen = 1;
  ck_assert_ptr_null(kmq_proc_ctx_value(&ctx, &vlen));
  ck_assert_uint_eq(vlen, 0);
  kmq__proc_ctx_set_value(&ctx, "{\"a\":1}", 7);
  ck_assert_mem_eq(kmq_proc_ctx_value(&ctx, &vlen), "{\"a\":1}", 7);
  ck_assert_uint_eq(vlen, 7);
  ck_assert_int_eq(kmq_proc_ctx_max_attempts(&ctx), 4);
  ck_assert_str_eq(kmq_proc_ctx_reason(&ctx), "");
  ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, KMQ_PROC_OK), KMQ_PROC_OK);

  begin(&ctx, 1);
  ck_assert_int_eq(
      kmq__proc_ctx_returned(&ctx, fail_with_reason(&m, &ctx, NULL)),
      KMQ_PROC_FAIL);
  ck_assert_str_eq(kmq_proc_ctx_reason(&ctx), "CRM said 409 for text");
  /* The outcome is known: later reasons are ignored. */
  kmq_proc_ctx_set_reason(&ctx, "late");
  ck_assert_str_eq(kmq_proc_ctx_reason(&ctx), "CRM said 409 for text");

  /* A new attempt starts with no reason. */
  begin(&ctx, 2);
  ck_assert_int_eq(kmq_proc_ctx_attempt(&ctx), 2);
  ck_assert_str_eq(kmq_proc_ctx_reason(&ctx), "");
  ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, KMQ_PROC_RETRY),
                   KMQ_PROC_RETRY);

  /* Garbage from a processor is a FAIL that says so. */
  begin(&ctx, 1);
  ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, (kmq_proc_result_t)42),
                   KMQ_PROC_FAIL);
  ck_assert_ptr_nonnull(
      strstr(kmq_proc_ctx_reason(&ctx), "invalid result (42)"));

  /* Nothing to complete outside an ASYNC call. */
  ck_assert_int_eq(kmq_proc_ctx_complete(&ctx, KMQ_PROC_OK), KMQ_ERR_STATE);
  ck_assert_int_eq(atomic_load(&d.calls), 0);

  ck_assert_str_eq(kmq_proc_result_name(KMQ_PROC_OK), "OK");
  ck_assert_str_eq(kmq_proc_result_name(KMQ_PROC_RETRY), "RETRY");
  ck_assert_str_eq(kmq_proc_result_name(KMQ_PROC_FAIL), "FAIL");
  ck_assert_str_eq(kmq_proc_result_name(KMQ_PROC_ASYNC), "ASYNC");
  ck_assert_str_eq(kmq_proc_result_name((kmq_proc_result_t)9), "INVALID");
}
END_TEST

START_TEST(ctx_reason_truncation) {
  kmq_proc_ctx_t ctx;
  kmq__proc_ctx_init(&ctx, done_cb, NULL);
  begin(&ctx, 1);
  char big[1024] = "";
  for (int i = 0; i < 200; i++)
    strcat(big, "错"); /* 3 bytes each */
  kmq_proc_ctx_set_reason(&ctx, "x%s", big);
  size_t n = strlen(kmq_proc_ctx_reason(&ctx));
  ck_assert_uint_le(n, KMQ_PROC_REASON_MAX - 1);
  ck_assert_uint_ge(n, KMQ_PROC_REASON_MAX - 4);
  char why[128];
  ck_assert_msg(!kmq__utf8_check(kmq_proc_ctx_reason(&ctx), n, why,
                                 sizeof(why)),
                "%s", why);
  kmq_proc_ctx_set_reason(&ctx, "short");
  ck_assert_str_eq(kmq_proc_ctx_reason(&ctx), "short");
  kmq__proc_ctx_returned(&ctx, KMQ_PROC_FAIL);
}
END_TEST

/* ---- context: asynchronous completion ------------------------------------ */

typedef struct {
  kmq_proc_ctx_t *ctx;
  kmq_proc_result_t result;
  int delay_ms;
  kmq_err_t second; /* what a second complete() returned */
} async_job_t;

static void *async_worker(void *arg) {
  async_job_t *j = arg;
  int64_t until = kt_now_ms() + j->delay_ms;
  while (kt_now_ms() < until)
    ;
  kmq_proc_ctx_set_reason(j->ctx, "remote said no");
  ck_assert_int_eq(kmq_proc_ctx_complete(j->ctx, j->result), KMQ_OK);
  return NULL;
}

static kmq_proc_result_t async_cb(const kmq_chat_msg_t *msg,
                                  kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  async_job_t *j = opaque;
  pthread_t th;
  j->ctx = ctx;
  ck_assert_int_eq(pthread_create(&th, NULL, async_worker, j), 0);
  pthread_detach(th);
  return KMQ_PROC_ASYNC;
}

static bool done_once(void *opaque) {
  return atomic_load(&((done_rec_t *)opaque)->calls) >= 1;
}

START_TEST(ctx_async_other_thread) {
  kmq_proc_ctx_t ctx;
  done_rec_t d = {0};
  kmq__proc_ctx_init(&ctx, done_cb, &d);
  kmq_chat_msg_t m = msg_of(KMQ_MSG_TEXT, NULL);
  async_job_t job = {.result = KMQ_PROC_FAIL, .delay_ms = 20};

  begin(&ctx, 1);
  ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, async_cb(&m, &ctx, &job)),
                   KMQ_PROC_ASYNC);
  /* The slot is busy until the completion arrives. */
  ck_assert_int_eq(kmq__proc_ctx_begin(&ctx, "u", 1, "t", 0, 0, 1, 1),
                   KMQ_ERR_STATE);
  ck_assert(kt_wait_until(done_once, &d, 5000));
  ck_assert_int_eq(atomic_load(&d.calls), 1);
  ck_assert_int_eq(atomic_load(&d.result), KMQ_PROC_FAIL);
  ck_assert_str_eq(kmq_proc_ctx_reason(&ctx), "remote said no");
  /* Exactly once. */
  ck_assert_int_eq(kmq_proc_ctx_complete(&ctx, KMQ_PROC_OK), KMQ_ERR_STATE);
  ck_assert_int_eq(atomic_load(&d.calls), 1);
  /* And the slot is reusable. */
  begin(&ctx, 1);
  ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, KMQ_PROC_OK), KMQ_PROC_OK);
}
END_TEST

static kmq_proc_result_t complete_then_async(const kmq_chat_msg_t *msg,
                                             kmq_proc_ctx_t *ctx,
                                             void *opaque) {
  (void)msg;
  (void)opaque;
  ck_assert_int_eq(kmq_proc_ctx_complete(ctx, KMQ_PROC_ASYNC),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_ctx_complete(ctx, (kmq_proc_result_t)-3),
                   KMQ_ERR_INVALID_ARG);
  ck_assert_int_eq(kmq_proc_ctx_complete(ctx, KMQ_PROC_RETRY), KMQ_OK);
  ck_assert_int_eq(kmq_proc_ctx_complete(ctx, KMQ_PROC_OK), KMQ_ERR_STATE);
  return KMQ_PROC_ASYNC;
}

START_TEST(ctx_complete_before_return) {
  kmq_proc_ctx_t ctx;
  done_rec_t d = {0};
  kmq__proc_ctx_init(&ctx, done_cb, &d);
  kmq_chat_msg_t m = msg_of(KMQ_MSG_TEXT, NULL);
  begin(&ctx, 1);
  /* The early result comes back from returned(); done is not called. */
  ck_assert_int_eq(
      kmq__proc_ctx_returned(&ctx, complete_then_async(&m, &ctx, NULL)),
      KMQ_PROC_RETRY);
  ck_assert_int_eq(atomic_load(&d.calls), 0);
  ck_assert_int_eq(kmq_proc_ctx_complete(&ctx, KMQ_PROC_OK), KMQ_ERR_STATE);
  begin(&ctx, 2);
  ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, KMQ_PROC_OK), KMQ_PROC_OK);
  ck_assert_int_eq(kmq_proc_ctx_complete(NULL, KMQ_PROC_OK),
                   KMQ_ERR_INVALID_ARG);
}
END_TEST

/* A completer thread races the callbacks' returns. Odd attempts wait for
 * the completion before returning (the EARLY path, deterministically); even
 * ones return at once and race it. Each attempt must end in exactly one
 * outcome: returned() yields it, or done is called, never both. */
typedef struct {
  _Atomic(kmq_proc_ctx_t *) handoff;
  atomic_int stop;
  int wait_for_completion;
} racer_t;

static void *racer(void *arg) {
  racer_t *r = arg;
  while (!atomic_load(&r->stop)) {
    kmq_proc_ctx_t *ctx = atomic_exchange(&r->handoff, NULL);
    if (ctx)
      ck_assert_int_eq(kmq_proc_ctx_complete(ctx, KMQ_PROC_OK), KMQ_OK);
    else
      sched_yield();
  }
  return NULL;
}

static kmq_proc_result_t handoff_cb(const kmq_chat_msg_t *msg,
                                    kmq_proc_ctx_t *ctx, void *opaque) {
  (void)msg;
  racer_t *r = opaque;
  atomic_store(&r->handoff, ctx);
  if (r->wait_for_completion)
    while (atomic_load(&ctx->state) == KMQ__PCTX_RUNNING)
      sched_yield();
  return KMQ_PROC_ASYNC;
}

START_TEST(ctx_race_return_and_complete) {
  enum { N = 10000 };
  kmq_proc_ctx_t ctx;
  done_rec_t d = {0};
  racer_t r = {0};
  pthread_t th;
  kmq__proc_ctx_init(&ctx, done_cb, &d);
  ck_assert_int_eq(pthread_create(&th, NULL, racer, &r), 0);
  kmq_chat_msg_t m = msg_of(KMQ_MSG_TEXT, NULL);
  int sync = 0, async = 0;
  for (int i = 0; i < N; i++) {
    int before = atomic_load(&d.calls);
    r.wait_for_completion = i & 1;
    begin(&ctx, 1);
    kmq_proc_result_t res =
        kmq__proc_ctx_returned(&ctx, handoff_cb(&m, &ctx, &r));
    if (res == KMQ_PROC_ASYNC) {
      async++;
      while (atomic_load(&d.calls) == before)
        sched_yield();
    } else {
      ck_assert_int_eq(res, KMQ_PROC_OK);
      sync++;
    }
    ck_assert_int_eq(atomic_load(&d.calls), before + (res == KMQ_PROC_ASYNC));
  }
  atomic_store(&r.stop, 1);
  pthread_join(th, NULL);
  ck_assert_int_eq(sync + async, N);
  ck_assert_int_ge(sync, N / 2); /* every odd attempt completed early */
  ck_assert_int_eq(atomic_load(&d.calls), async);
}
END_TEST

/* ---- kmq_proc_log -------------------------------------------------------- */

typedef struct {
  int n, level;
  char last[1024];
} sink_rec_t;

static void sink(int level, const char *line, void *opaque) {
  sink_rec_t *s = opaque;
  s->n++;
  s->level = level;
  snprintf(s->last, sizeof(s->last), "%s", line);
}

START_TEST(proc_log_counts_and_logs) {
  char errstr[128];
  sink_rec_t rec = {0};
  kmq_proc_log_t *pl = kmq_proc_log_new(sink, &rec, errstr, sizeof(errstr));
  ck_assert_ptr_nonnull(pl);
  kmq_proc_registry_t *reg = reg_new();
  ck_assert_int_eq(kmq_proc_set_default(reg, kmq_proc_log, pl), KMQ_OK);
  kmq_proc_registry_freeze(reg);

  kmq_proc_ctx_t ctx;
  kmq__proc_ctx_init(&ctx, done_cb, NULL);
  const kmq_msg_type_t types[] = {KMQ_MSG_TEXT, KMQ_MSG_TEXT, KMQ_MSG_EVENT,
                                  KMQ_MSG_UNKNOWN};
  for (size_t i = 0; i < 4; i++) {
    kmq_chat_msg_t m =
        msg_of(types[i], types[i] == KMQ_MSG_UNKNOWN ? "weird" : NULL);
    m.message_id = kmq_msg_str("mid-7");
    begin(&ctx, 1);
    const kmq_proc_entry_t *e = kmq_proc_lookup(reg, &m);
    ck_assert_int_eq(kmq__proc_ctx_returned(&ctx, e->cb(&m, &ctx, e->opaque)),
                     KMQ_PROC_OK);
  }
  ck_assert_int_eq(rec.n, 4);
  ck_assert_int_eq(rec.level, 7);
  ck_assert_msg(strstr(rec.last, "type=\"weird\"") &&
                    strstr(rec.last, "user=\"wmUser\"") &&
                    strstr(rec.last, "topic=chat partition=3 offset=42") &&
                    strstr(rec.last, "message_id=\"mid-7\""),
                "%s", rec.last);
  ck_assert_uint_eq(kmq_proc_log_count(pl, KMQ_MSG_TEXT), 2);
  ck_assert_uint_eq(kmq_proc_log_count(pl, KMQ_MSG_EVENT), 1);
  ck_assert_uint_eq(kmq_proc_log_count(pl, KMQ_MSG_UNKNOWN), 1);
  ck_assert_uint_eq(kmq_proc_log_count(pl, KMQ_MSG_IMAGE), 0);
  ck_assert_uint_eq(kmq_proc_log_count(pl, KMQ_MSG_TYPE_CNT), 4);
  kmq_proc_registry_destroy(reg);
  kmq_proc_log_destroy(pl);

  /* Without a sink it only counts. */
  pl = kmq_proc_log_new(NULL, NULL, errstr, sizeof(errstr));
  kmq_chat_msg_t m = msg_of(KMQ_MSG_FILE, NULL);
  begin(&ctx, 1);
  ck_assert_int_eq(kmq_proc_log(&m, &ctx, pl), KMQ_PROC_OK);
  kmq__proc_ctx_returned(&ctx, KMQ_PROC_OK);
  ck_assert_uint_eq(kmq_proc_log_count(pl, KMQ_MSG_FILE), 1);
  kmq_proc_log_destroy(pl);
  kmq_proc_log_destroy(NULL);
}
END_TEST

static Suite *registry_suite(void) {
  Suite *s = suite_create("registry");
  TCase *tc = tcase_create("registry");
  tcase_add_test(tc, routes_each_type);
  tcase_add_test(tc, default_and_missing);
  tcase_add_test(tc, register_after_freeze);
  tcase_add_test(tc, register_errors);
  tcase_add_test(tc, raw_is_exclusive);
  tcase_add_test(tc, many_custom_types);
  suite_add_tcase(s, tc);

  tc = tcase_create("ctx");
  tcase_set_timeout(tc, 60); /* threads on a loaded 2-CPU box */
  tcase_add_test(tc, ctx_sync_results);
  tcase_add_test(tc, ctx_reason_truncation);
  tcase_add_test(tc, ctx_async_other_thread);
  tcase_add_test(tc, ctx_complete_before_return);
  tcase_add_test(tc, ctx_race_return_and_complete);
  suite_add_tcase(s, tc);

  tc = tcase_create("proc_log");
  tcase_add_test(tc, proc_log_counts_and_logs);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return kt_run(registry_suite());
}
