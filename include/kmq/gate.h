/*
 * Commit gate: one per assigned partition.
 *
 * Offsets finish in any order (different users run in parallel), but Kafka
 * stores one position per partition: committing offset 10 while 8 is still
 * running would make a restarted consumer skip 8. The gate therefore reports
 * only the end of the contiguous prefix of finished offsets: from start 8,
 * finishing 10, 8, 12, 9, 11 makes the committable offset 9, then 11, then 13
 * (Kafka's convention: the committed offset is the next one to consume).
 *
 * Storage is a sliding bitmap of `window` bits (a power of two) starting at
 * the committable offset: no allocation after kmq_gate_new(), O(1) amortised
 * per offset. An offset at or past committable + window cannot be recorded
 * and is refused with KMQ_ERR_GATE_WINDOW; the consumer pauses the partition
 * before that happens.
 *
 * Offsets a consumer never sees (compaction, transaction markers) would block
 * the prefix forever, so kmq_gate_track() treats offsets skipped between two
 * tracked offsets as finished: a partition is fetched in order, so a skipped
 * offset will never be delivered.
 *
 * Threads: a gate is not synchronised. It belongs to the consumer's poll
 * thread; workers report completions to that thread (an MPSC ring), which
 * calls kmq_gate_mark_done(). Queries are as cheap as field reads.
 */
#ifndef KMQ_GATE_H
#define KMQ_GATE_H

#include <stddef.h>
#include <stdint.h>

#include "kmq/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kmq_gate_s kmq_gate_t;

/* Creates a gate whose first outstanding offset is `start` (the committed
 * offset, or the low watermark when none is committed). `window` is rounded up
 * to a power of two, at least 64. Returns NULL with errstr filled on a
 * negative start or when out of memory. Destroy with kmq_gate_destroy(). */
kmq_gate_t *kmq_gate_new(int64_t start, size_t window, char *errstr,
                         size_t errstr_size);

/* No-op on NULL. */
void kmq_gate_destroy(kmq_gate_t *gate);

/* Records that `offset` was handed to processing. Offsets skipped since the
 * previously tracked one are marked finished (see above). Returns
 * KMQ_ERR_GATE_WINDOW (nothing changed) when offset is at or past
 * committable + window: retry after completions move the window; KMQ_ERR_STATE
 * when offset was already tracked (a re-fetch) or is below the committable
 * offset. */
kmq_err_t kmq_gate_track(kmq_gate_t *gate, int64_t offset);

/* Marks `offset` finished, in any order. Idempotent: a second mark of the
 * same offset, or a mark below the committable offset, changes nothing and
 * returns KMQ_ERR_DUPLICATE. KMQ_ERR_GATE_WINDOW: offset beyond the window,
 * nothing changed. On success, *committable (when not NULL) receives the
 * committable offset after the mark. */
kmq_err_t kmq_gate_mark_done(kmq_gate_t *gate, int64_t offset,
                             int64_t *committable);

/* The offset to commit: every offset below it is finished. */
int64_t kmq_gate_committable(const kmq_gate_t *gate);

/* Finished offsets that cannot be committed yet (waiting on a lower one). */
int64_t kmq_gate_backlog(const kmq_gate_t *gate);

/* Tracked offsets at or above the committable one that are not finished. */
int64_t kmq_gate_in_flight(const kmq_gate_t *gate);

/* One past the highest tracked or finished offset (committable when none). */
int64_t kmq_gate_high(const kmq_gate_t *gate);

/* The window size in offsets (a power of two). */
size_t kmq_gate_window(const kmq_gate_t *gate);

/* True when track(offset) would be refused for lack of window. */
int kmq_gate_would_overflow(const kmq_gate_t *gate, int64_t offset);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_GATE_H */
