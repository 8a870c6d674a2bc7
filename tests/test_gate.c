/* Commit gate: the design's worked example, a reference model over random
 * permutations, duplicates, stale offsets, window overflow, gap filling, the
 * threading contract (completions from many threads through an MPSC ring
 * to the single owner thread), and a gate restored from commit metadata
 * under track / mark_done / is_done (the text itself: test_gate_meta.c). */
#include <check.h>
#include <ck_ring.h> /* with check.h: no ck_ name clash */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kmq/gate.h"
#include "lib/mpsc.h"
#include "testutil.h"

static kmq_gate_t *new_gate(int64_t start, size_t window) {
  char errstr[128];
  kmq_gate_t *g = kmq_gate_new(start, window, errstr, sizeof(errstr));
  ck_assert_msg(g, "%s", errstr);
  return g;
}

START_TEST(worked_example) {
  kmq_gate_t *g = new_gate(8, 64);
  int64_t c = -1;
  for (int64_t o = 8; o <= 12; o++)
    ck_assert_int_eq(kmq_gate_track(g, o), KMQ_OK);
  ck_assert_int_eq(kmq_gate_in_flight(g), 5);

  ck_assert_int_eq(kmq_gate_mark_done(g, 10, &c), KMQ_OK);
  ck_assert_int_eq(c, 8); /* 8 still running: nothing to commit */
  ck_assert_int_eq(kmq_gate_backlog(g), 1);
  ck_assert_int_eq(kmq_gate_mark_done(g, 8, &c), KMQ_OK);
  ck_assert_int_eq(c, 9);
  ck_assert_int_eq(kmq_gate_mark_done(g, 12, &c), KMQ_OK);
  ck_assert_int_eq(c, 9);
  ck_assert_int_eq(kmq_gate_backlog(g), 2); /* 10 and 12 */
  ck_assert_int_eq(kmq_gate_mark_done(g, 9, &c), KMQ_OK);
  ck_assert_int_eq(c, 11);
  ck_assert_int_eq(kmq_gate_backlog(g), 1); /* 12 */
  ck_assert_int_eq(kmq_gate_in_flight(g), 1); /* 11 */
  ck_assert_int_eq(kmq_gate_mark_done(g, 11, &c), KMQ_OK);
  ck_assert_int_eq(c, 13);
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  ck_assert_int_eq(kmq_gate_in_flight(g), 0);
  kmq_gate_destroy(g);
}
END_TEST

/* Reference model: a plain array of flags. */
typedef struct {
  int64_t start;
  bool *done;
  size_t n;
  size_t prefix; /* done[0..prefix) are all true */
} model_t;

/* The obvious definition: the first offset not done. The scan resumes where
 * it stopped, which is the same answer since done flags never clear. */
static int64_t model_committable(model_t *m) {
  while (m->prefix < m->n && m->done[m->prefix])
    m->prefix++;
  return m->start + (int64_t)m->prefix;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64*: deterministic per run */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

START_TEST(random_permutations_match_model) {
  for (int round = 0; round < 100; round++) {
    size_t n = 1 + rnd() % 3000;
    int64_t start = (int64_t)(rnd() % 1000000);
    size_t window = 4096;
    kmq_gate_t *g = new_gate(start, window);
    model_t m = {start, calloc(n, sizeof(bool)), n, 0};
    int64_t *perm = malloc(n * sizeof(*perm));
    for (size_t i = 0; i < n; i++)
      perm[i] = start + (int64_t)i;
    /* Fisher-Yates: any finish order; n < window so every offset fits. */
    for (size_t i = n; i > 1; i--) {
      size_t j = rnd() % i;
      int64_t t = perm[i - 1];
      perm[i - 1] = perm[j];
      perm[j] = t;
    }
    for (size_t i = 0; i < n; i++)
      ck_assert_int_eq(kmq_gate_track(g, start + (int64_t)i), KMQ_OK);
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
      int64_t c;
      ck_assert_int_eq(kmq_gate_mark_done(g, perm[i], &c), KMQ_OK);
      m.done[perm[i] - start] = true;
      done++;
      int64_t mc = model_committable(&m);
      ck_assert_int_eq(c, mc);
      ck_assert_int_eq(kmq_gate_committable(g), mc);
      ck_assert_int_eq(kmq_gate_backlog(g), (int64_t)done - (mc - start));
      ck_assert_int_eq(kmq_gate_in_flight(g), (int64_t)(n - done));
      /* Every 7th step re-marks something already finished. */
      if (i % 7 == 0)
        ck_assert_int_eq(kmq_gate_mark_done(g, perm[rnd() % (i + 1)], NULL),
                         KMQ_ERR_DUPLICATE);
    }
    ck_assert_int_eq(kmq_gate_committable(g), start + (int64_t)n);
    free(perm);
    free(m.done);
    kmq_gate_destroy(g);
  }
}
END_TEST

START_TEST(duplicates_and_stale_offsets) {
  kmq_gate_t *g = new_gate(100, 64);
  int64_t c = -1;
  ck_assert_int_eq(kmq_gate_mark_done(g, 99, &c), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(c, -1); /* untouched on error */
  ck_assert_int_eq(kmq_gate_mark_done(g, 0, NULL), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_gate_mark_done(g, 101, &c), KMQ_OK);
  ck_assert_int_eq(kmq_gate_mark_done(g, 101, &c), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_gate_backlog(g), 1);
  ck_assert_int_eq(kmq_gate_mark_done(g, 100, &c), KMQ_OK);
  ck_assert_int_eq(c, 102);
  ck_assert_int_eq(kmq_gate_mark_done(g, 100, &c), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_gate_committable(g), 102);
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  /* Tracking an offset twice (a re-fetch) is refused, as is one below start. */
  ck_assert_int_eq(kmq_gate_track(g, 102), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 102), KMQ_ERR_STATE);
  ck_assert_int_eq(kmq_gate_track(g, 50), KMQ_ERR_STATE);
  kmq_gate_destroy(g);
}
END_TEST

START_TEST(window_overflow) {
  kmq_gate_t *g = new_gate(0, 100); /* rounded up to 128 */
  ck_assert_uint_eq(kmq_gate_window(g), 128);
  for (int64_t o = 0; o < 128; o++)
    ck_assert_int_eq(kmq_gate_track(g, o), KMQ_OK);
  ck_assert(kmq_gate_would_overflow(g, 128));
  ck_assert_int_eq(kmq_gate_track(g, 128), KMQ_ERR_GATE_WINDOW);
  ck_assert_int_eq(kmq_gate_mark_done(g, 128, NULL), KMQ_ERR_GATE_WINDOW);
  ck_assert_int_eq(kmq_gate_mark_done(g, 5000, NULL), KMQ_ERR_GATE_WINDOW);
  ck_assert_int_eq(kmq_gate_high(g), 128); /* refused calls changed nothing */
  /* Finishing everything but 0 leaves the window pinned at 0... */
  for (int64_t o = 1; o < 128; o++)
    ck_assert_int_eq(kmq_gate_mark_done(g, o, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 0);
  ck_assert_int_eq(kmq_gate_backlog(g), 127);
  ck_assert_int_eq(kmq_gate_track(g, 128), KMQ_ERR_GATE_WINDOW);
  /* ...and finishing 0 slides it over all 128 at once. */
  ck_assert_int_eq(kmq_gate_mark_done(g, 0, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 128);
  ck_assert_int_eq(kmq_gate_track(g, 128), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 255), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 256), KMQ_ERR_GATE_WINDOW);
  kmq_gate_destroy(g);
}
END_TEST

START_TEST(gaps_are_finished) {
  /* Offsets the consumer never sees (compaction, transaction markers) must
   * not block the prefix. */
  kmq_gate_t *g = new_gate(10, 64);
  ck_assert_int_eq(kmq_gate_track(g, 10), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 14), KMQ_OK); /* 11..13 never come */
  ck_assert_int_eq(kmq_gate_in_flight(g), 2);
  ck_assert_int_eq(kmq_gate_mark_done(g, 10, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 14);
  ck_assert_int_eq(kmq_gate_mark_done(g, 14, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 15);
  /* With nothing outstanding a jump far past the window is fine: everything
   * below it is finished or will never be delivered. */
  ck_assert_int_eq(kmq_gate_track(g, 1000000), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 1000000);
  ck_assert_int_eq(kmq_gate_mark_done(g, 1000000, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 1000001);
  kmq_gate_destroy(g);
}
END_TEST

START_TEST(bad_arguments) {
  char errstr[128] = "";
  ck_assert_ptr_null(kmq_gate_new(-1, 64, errstr, sizeof(errstr)));
  ck_assert(strstr(errstr, "negative"));
  kmq_gate_destroy(NULL);
}
END_TEST

/* The threading contract: workers finish offsets on their own threads and
 * hand them to the owner through the MPSC stack; only the owner touches the
 * gate. Run under TSan this proves the intended use is race-free. */
#define MT_THREADS 4
#define MT_PER_THREAD 20000
#define MT_N (MT_THREADS * MT_PER_THREAD)

typedef struct {
  kmq__mpsc_t done; /* node i = offset i */
  uint32_t next[MT_N];
} mt_shared_t;

typedef struct {
  mt_shared_t *sh;
  int id;
} mt_arg_t;

static void *mt_worker(void *p) {
  mt_arg_t *a = p;
  /* Thread t finishes offsets t, t+T, t+2T... in its own order. */
  for (int i = 0; i < MT_PER_THREAD; i++)
    kmq__mpsc_push(&a->sh->done, (uint32_t)(i * MT_THREADS + a->id));
  return NULL;
}

START_TEST(mpsc_completions_single_owner) {
  static mt_shared_t sh;
  kmq__mpsc_init(&sh.done, sh.next);
  const int64_t n = MT_N;
  kmq_gate_t *g = new_gate(0, 1 << 17);
  for (int64_t o = 0; o < n; o++)
    ck_assert_int_eq(kmq_gate_track(g, o), KMQ_OK);
  pthread_t th[MT_THREADS];
  mt_arg_t args[MT_THREADS];
  for (int t = 0; t < MT_THREADS; t++) {
    args[t] = (mt_arg_t){&sh, t};
    pthread_create(&th[t], NULL, mt_worker, &args[t]);
  }
  int64_t seen = 0, last_c = 0;
  int64_t deadline = kt_now_ms() + 60000;
  /* Pushes never wait, so the workers always finish and the join below
   * cannot hang even if this loop gives up at its deadline. */
  while (seen < n && kt_now_ms() < deadline) {
    uint32_t node = kmq__mpsc_take(&sh.done);
    if (!node) {
      sched_yield();
      continue;
    }
    for (; node; node = kmq__mpsc_next(&sh.done, node)) {
      int64_t c;
      ck_assert_int_eq(kmq_gate_mark_done(g, (int64_t)node - 1, &c), KMQ_OK);
      ck_assert_int_ge(c, last_c); /* never moves back */
      last_c = c;
      seen++;
    }
  }
  for (int t = 0; t < MT_THREADS; t++)
    pthread_join(th[t], NULL);
  ck_assert_int_eq(seen, n);
  ck_assert_int_eq(kmq_gate_committable(g), n);
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  kmq_gate_destroy(g);
}
END_TEST

/* ---- Restored gates: kmq_gate_restore_done, then the consumer's calls ----
 * Texts written out by hand from gate.h's format (Ku = Kf = 0, bits shown). */

START_TEST(committable_advances_on_restore) {
  /* Runs 0,3,4,2 from 100: 1 011 00100 010 = "si"; 100..102 and 107..108
   * finished, the set starts at the committable offset. */
  kmq_gate_t *g = new_gate(100, 64);
  int64_t restored, c;
  ck_assert_int_eq(kmq_gate_restore_done(g, "k1:100:AAsi", 11, &restored),
                   KMQ_OK);
  ck_assert_int_eq(restored, 5);
  ck_assert_int_eq(kmq_gate_committable(g), 103);
  ck_assert_int_eq(kmq_gate_high(g), 103); /* followed base, no further */
  ck_assert_int_eq(kmq_gate_backlog(g), 2); /* 107, 108 */
  ck_assert_int_eq(kmq_gate_in_flight(g), 0);
  /* Records 100..102 arrive again: finished, and below high (a re-fetch). */
  ck_assert(kmq_gate_is_done(g, 101));
  ck_assert_int_eq(kmq_gate_track(g, 101), KMQ_ERR_STATE);
  /* 103 and 105 come (104 was compacted away), 106 comes, 107/108 skip. */
  ck_assert_int_eq(kmq_gate_track(g, 103), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 105), KMQ_OK);
  ck_assert_int_eq(kmq_gate_in_flight(g), 2);
  ck_assert_int_eq(kmq_gate_backlog(g), 3); /* 104 skipped, 107, 108 */
  ck_assert_int_eq(kmq_gate_track(g, 106), KMQ_OK);
  ck_assert(kmq_gate_is_done(g, 107));
  ck_assert_int_eq(kmq_gate_track(g, 107), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_gate_mark_done(g, 108, NULL), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_gate_high(g), 107);
  ck_assert_int_eq(kmq_gate_mark_done(g, 105, &c), KMQ_OK);
  ck_assert_int_eq(kmq_gate_mark_done(g, 106, &c), KMQ_OK);
  ck_assert_int_eq(c, 103);
  ck_assert_int_eq(kmq_gate_mark_done(g, 103, &c), KMQ_OK);
  ck_assert_int_eq(c, 109); /* over 104 (skipped) and 107, 108 (restored) */
  ck_assert_int_eq(kmq_gate_high(g), 109);
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  ck_assert_int_eq(kmq_gate_in_flight(g), 0);
  ck_assert_int_eq(kmq_gate_track(g, 109), KMQ_OK);
  kmq_gate_destroy(g);

  /* Runs 0,10 from 0 (1 0001010 = "ig"): everything restored is contiguous,
   * the gate is empty again. */
  g = new_gate(0, 64);
  ck_assert_int_eq(kmq_gate_restore_done(g, "k1:0:AAig", 9, &restored),
                   KMQ_OK);
  ck_assert_int_eq(restored, 10);
  ck_assert_int_eq(kmq_gate_committable(g), 10);
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  ck_assert_int_eq(kmq_gate_track(g, 10), KMQ_OK);
  kmq_gate_destroy(g);
}
END_TEST

START_TEST(restored_gate_edges) {
  /* Runs 5,3 from 100 (00110 011 = "Mw"): 105..107 finished. */
  const char *t = "k1:100:AAMw";
  int64_t restored;
  kmq_gate_t *g = new_gate(100, 64);
  ck_assert_int_eq(kmq_gate_restore_done(g, t, 11, &restored), KMQ_OK);
  ck_assert_int_eq(restored, 3);
  ck_assert_int_eq(kmq_gate_high(g), 100);
  ck_assert_int_eq(kmq_gate_in_flight(g), 0);
  ck_assert(!kmq_gate_would_overflow(g, 100000)); /* nothing tracked yet */
  /* 110 marked done without being tracked first: the offsets between count
   * as in flight exactly as on a plain gate. */
  ck_assert_int_eq(kmq_gate_mark_done(g, 110, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_high(g), 111);
  ck_assert_int_eq(kmq_gate_backlog(g), 4);
  ck_assert_int_eq(kmq_gate_in_flight(g), 7); /* 100..104, 108, 109 */
  kmq_gate_destroy(g);

  /* The first record lies past the window (the log was truncated under the
   * committed offset): the gate jumps, restored offsets below it are moot,
   * nothing stalls, no stale bit survives in the wrapped bitmap. */
  g = new_gate(100, 64);
  ck_assert_int_eq(kmq_gate_restore_done(g, t, 11, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 500), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 500);
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  ck_assert_int_eq(kmq_gate_in_flight(g), 1);
  for (int64_t o = 500; o < 564; o++)
    ck_assert_int_eq(kmq_gate_is_done(g, o), 0);
  kmq_gate_destroy(g);

  /* The first record inside the window, past the restored offsets. */
  g = new_gate(100, 64);
  ck_assert_int_eq(kmq_gate_restore_done(g, t, 11, NULL), KMQ_OK);
  ck_assert_int_eq(kmq_gate_track(g, 106), KMQ_ERR_DUPLICATE);
  ck_assert_int_eq(kmq_gate_track(g, 108), KMQ_OK);
  ck_assert_int_eq(kmq_gate_committable(g), 108); /* 100..104 never came */
  ck_assert_int_eq(kmq_gate_backlog(g), 0);
  kmq_gate_destroy(g);

  /* Near INT64_MAX the window's end would overflow. Runs 3,7 (00100 00111
   * = "Ic"): INT64_MAX - 7 .. INT64_MAX - 1; runs 3,8 ("II") would reach
   * offset INT64_MAX, which cannot exist. */
  int64_t top = INT64_MAX - 10;
  g = new_gate(top, 64);
  ck_assert_int_eq(
      kmq_gate_restore_done(g, "k1:9223372036854775797:AAII", 27, NULL),
      KMQ_ERR_BAD_FIELD);
  ck_assert_int_eq(
      kmq_gate_restore_done(g, "k1:9223372036854775797:AAIc", 27, &restored),
      KMQ_OK);
  ck_assert_int_eq(restored, 7);
  ck_assert(kmq_gate_is_done(g, INT64_MAX - 1));
  ck_assert(!kmq_gate_is_done(g, INT64_MAX - 8));
  char buf[64];
  size_t len;
  int64_t end;
  ck_assert_int_eq(kmq_gate_encode_done(g, buf, sizeof(buf), &len, &end, NULL),
                   KMQ_OK);
  ck_assert_int_eq(end, INT64_MAX); /* the window's end, saturated */
  kmq_gate_t *again = new_gate(top, 64);
  ck_assert_int_eq(kmq_gate_restore_done(again, buf, len, &restored), KMQ_OK);
  ck_assert_int_eq(restored, 7);
  for (int64_t o = top; o < INT64_MAX; o++)
    ck_assert_int_eq(kmq_gate_is_done(again, o), kmq_gate_is_done(g, o));
  kmq_gate_destroy(again);
  kmq_gate_destroy(g);
}
END_TEST

/* The consumer's use: the old owner finished a random set and committed its
 * text (sometimes truncated); the new owner restores it, receives every
 * record again in order (some never come: compaction), skips what is_done
 * says and tracks and finishes the rest in random order. No finished record
 * is processed again, in_flight counts exactly what runs, and committable
 * ends past everything that came. Windows differ now and then (a reader
 * with a smaller window ignores what lies beyond it). */
START_TEST(restore_then_consume) {
  static char buf[1 << 14];
  for (int round = 0; round < 200; round++) {
    size_t w = 1024, n = 1 + rnd() % w;
    int64_t c = (int64_t)(rnd() % 100000);
    kmq_gate_t *a = new_gate(c, w);
    for (size_t i = 0; i < n; i++)
      ck_assert_int_eq(kmq_gate_track(a, c + (int64_t)i), KMQ_OK);
    int permille = (int)(rnd() % 1001), run = 1 + (int)(rnd() % 60);
    for (size_t i = 1; i < n; i++) /* random, or in runs of ~run */
      if (round % 2 ? (int)(rnd() % 1000) < permille : (i / (size_t)run) % 2)
        ck_assert_int_eq(kmq_gate_mark_done(a, c + (int64_t)i, NULL), KMQ_OK);
    size_t size = round % 3 ? sizeof(buf) : KMQ_GATE_META_MIN + rnd() % 64;
    size_t len, wb = round % 5 ? w : 64;
    int64_t end, restored;
    ck_assert_int_eq(kmq_gate_encode_done(a, buf, size, &len, &end, NULL),
                     KMQ_OK);
    if (end > c + (int64_t)wb)
      end = c + (int64_t)wb;
    kmq_gate_t *b = new_gate(c, wb);
    ck_assert_int_eq(kmq_gate_restore_done(b, buf, len, &restored), KMQ_OK);
    int64_t want_restored = 0;
    for (int64_t o = c; o < end; o++)
      want_restored += kmq_gate_is_done(a, o);
    ck_assert_int_eq(restored, want_restored);
    int64_t *pending = malloc(n * sizeof(*pending));
    size_t np = 0;
    int64_t high_before = kmq_gate_high(b), last_tracked = -1;
    for (int64_t o = c; o < c + (int64_t)n; o++) {
      bool done = o < end && kmq_gate_is_done(a, o);
      ck_assert_int_eq(kmq_gate_is_done(b, o), done);
      if (!done && rnd() % 10 == 0)
        continue; /* never delivered: the next track fills it */
      if (done) { /* skip: finished before the rebalance */
        ck_assert_int_eq(kmq_gate_mark_done(b, o, NULL), KMQ_ERR_DUPLICATE);
        if (o >= kmq_gate_high(b))
          ck_assert_int_eq(kmq_gate_track(b, o), KMQ_ERR_DUPLICATE);
        continue;
      }
      ck_assert_int_ge(o, high_before);
      if (kmq_gate_would_overflow(b, o))
        break; /* the smaller reader window: the consumer would pause */
      ck_assert_int_eq(kmq_gate_track(b, o), KMQ_OK);
      last_tracked = o;
      pending[np++] = o;
      ck_assert_int_eq(kmq_gate_in_flight(b), (int64_t)np);
      while (np && rnd() % 3 == 0) { /* finish some, any order */
        size_t k = rnd() % np;
        ck_assert_int_eq(kmq_gate_mark_done(b, pending[k], NULL), KMQ_OK);
        pending[k] = pending[--np];
        ck_assert_int_eq(kmq_gate_in_flight(b), (int64_t)np);
      }
    }
    while (np)
      ck_assert_int_eq(kmq_gate_mark_done(b, pending[--np], NULL), KMQ_OK);
    /* Past the last record processed and the restored offsets right after
     * it; never past an offset that did not come and was not finished. */
    int64_t want = last_tracked >= 0 ? last_tracked + 1 : high_before;
    while (want < end && kmq_gate_is_done(a, want))
      want++;
    ck_assert_int_eq(kmq_gate_committable(b), want);
    ck_assert_int_eq(kmq_gate_in_flight(b), 0);
    free(pending);
    kmq_gate_destroy(b);
    kmq_gate_destroy(a);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("gate");
  TCase *tc = tcase_create("gate");
  tcase_add_test(tc, worked_example);
  tcase_add_test(tc, random_permutations_match_model);
  tcase_add_test(tc, duplicates_and_stale_offsets);
  tcase_add_test(tc, window_overflow);
  tcase_add_test(tc, gaps_are_finished);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, mpsc_completions_single_owner);
  tcase_add_test(tc, committable_advances_on_restore);
  tcase_add_test(tc, restored_gate_edges);
  tcase_add_test(tc, restore_then_consume);
  suite_add_tcase(s, tc);
  return kt_run(s);
}
