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
 * and is refused with KMQ_ERR_GATE_WINDOW; the consumer stops reading the
 * partition before that happens.
 *
 * Offsets a consumer never sees (compaction, transaction markers) would block
 * the prefix forever, so kmq_gate_track() treats offsets skipped between two
 * tracked offsets as finished: a partition is fetched in order, so a skipped
 * offset will never be delivered.
 *
 * Finished offsets beyond the committable one are what a rebalance would
 * otherwise lose: kmq_gate_encode_done() writes them into the metadata string
 * committed with the offset, kmq_gate_restore_done() gives them to the next
 * owner's gate, and kmq_gate_is_done() tells that owner which records to skip
 * (see "Commit metadata" below).
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
 * offset; KMQ_ERR_DUPLICATE (nothing changed) when offset was restored as
 * finished (kmq_gate_is_done() is true): skip the record, do not process it.
 * When nothing has been tracked yet, any offset is accepted and everything
 * below it counts as finished (restored or never delivered). */
kmq_err_t kmq_gate_track(kmq_gate_t *gate, int64_t offset);

/* Marks `offset` finished, in any order. Idempotent: a second mark of the
 * same offset (or of one restored as finished), or a mark below the
 * committable offset, changes nothing and returns KMQ_ERR_DUPLICATE.
 * KMQ_ERR_GATE_WINDOW: offset beyond the window, nothing changed. On
 * success, *committable (when not NULL) receives the committable offset
 * after the mark. */
kmq_err_t kmq_gate_mark_done(kmq_gate_t *gate, int64_t offset,
                             int64_t *committable);

/* The offset to commit: every offset below it is finished. */
int64_t kmq_gate_committable(const kmq_gate_t *gate);

/* Finished offsets that cannot be committed yet (waiting on a lower one),
 * restored ones included. */
int64_t kmq_gate_backlog(const kmq_gate_t *gate);

/* Tracked offsets at or above the committable one that are not finished. */
int64_t kmq_gate_in_flight(const kmq_gate_t *gate);

/* One past the highest offset tracked or marked done (committable when
 * none). Offsets restored as finished move it only once the committable
 * offset passes them. So "offset < high" means "handed out before, or
 * restored as finished and passed by the committable offset": not, on its
 * own, that a record read now was read before (the consumer keeps its own
 * record of what it read for that). */
int64_t kmq_gate_high(const kmq_gate_t *gate);

/* True when `offset` is finished: below the committable offset, or marked
 * done, skipped, or restored as finished. O(1). A consumer restoring a gate
 * asks this for every record it receives and skips (does not process, does
 * not track) those for which it is true. Once true it stays true. */
int kmq_gate_is_done(const kmq_gate_t *gate, int64_t offset);

/* The window size in offsets (a power of two). */
size_t kmq_gate_window(const kmq_gate_t *gate);

/* True when track(offset) would be refused for lack of window. */
int kmq_gate_would_overflow(const kmq_gate_t *gate, int64_t offset);

/*
 * Commit metadata: the finished offsets above the committable one.
 *
 * Kafka's OffsetCommit carries a metadata string next to each offset; the
 * broker refuses a commit whose metadata is longer than
 * offset.metadata.max.bytes (default 4096), which would lose the offset
 * too. kmq_gate_encode_done() therefore takes the caller's size bound and,
 * when the finished set does not fit, describes the longest prefix of it
 * that does: the offset is always committed, and what the text leaves out
 * is only processed again after a rebalance, never skipped.
 *
 * The text (version 1) is printable ASCII:
 *
 *   k1:<committable>:<Ku><Kf><payload>
 *
 * <committable> is the decimal offset the text belongs to (the one committed
 * with it); a gate restoring it must start there. The payload is a bit
 * string packed 6 bits a base64url character ("A-Za-z0-9-_"), most
 * significant bit first, zero-padded to a whole character; nothing else may
 * follow. Two payloads, whichever describes more offsets in the size given
 * (or, both complete, is shorter):
 *  - runs: Ku and Kf are exp-Golomb orders 0..40 (one base64url character
 *    each). The payload alternates the lengths of unfinished and finished
 *    runs, starting at the committable offset and ending with a finished
 *    run, each as an order-Ku (unfinished) or order-Kf (finished)
 *    exp-Golomb code of length - 1 (of length for the first run, which may
 *    be empty). Example: committable 100, 102..104 and 107 finished: runs
 *    2,3,2,1, with Ku = Kf = 0 the bits 011 011 010 1 + 00 = "k1:100:AAbU".
 *    Nothing finished: "k1:100:AA".
 *  - bitmap: "_A", then one bit per offset from the committable one
 *    (1 = finished), ending at the last finished offset described.
 *
 * Sizes for a 65536-offset window (tests/test_gate_meta.c, measure_shapes):
 * finished in runs of ~50 with gaps of ~50: 1650 bytes; 10% or 90% finished
 * at random: ~6.1 KB, a 4000-byte text covering ~43 000 offsets; 50% at
 * random or strictly alternating (the worst case, a bitmap): 10.9 KB, 4000
 * bytes covering ~23 900. Whatever the set, a buffer of `size` bytes
 * covers at least min(window, 6 * (size - 26)) offsets (the bitmap's rate).
 */

/* The smallest `size` kmq_gate_encode_done() accepts: the longest header
 * ("k1:" + 19 digits + ":" + Ku Kf) and its NUL fit in it. */
#define KMQ_GATE_META_MIN 32

/* Writes into buf (caller-owned, `size` bytes including the terminating
 * NUL, at least KMQ_GATE_META_MIN) the text describing which offsets at or
 * above the committable offset are finished, NUL-terminated; *len receives
 * its length without the NUL (at most size - 1). The text is exact for every
 * offset below *covered_end: finished offsets there are listed, the others
 * are not. Offsets at or past *covered_end are not described (a restore
 * treats them as not finished). When everything fits, *covered_end is
 * committable + window (no offset past the window can be finished) and
 * *left_out is 0; otherwise *covered_end is the first finished offset left
 * out and *left_out counts the finished offsets left out: count those
 * commits in a metric, the text is still valid and should be committed.
 * The text names kmq_gate_committable() as it is now: commit it with that
 * offset, read at the same time (a restore refuses it for another one).
 * Finishing offsets above the committable one changes the text without
 * moving the offset. Any of len, covered_end, left_out may be NULL. No allocation; the gate is
 * not changed. Returns KMQ_OK, or KMQ_ERR_INVALID_ARG (nothing written) for
 * a NULL gate or buf or a size below KMQ_GATE_META_MIN.
 * @locality the gate's owner thread; cost O(runs + window / 64). */
kmq_err_t kmq_gate_encode_done(const kmq_gate_t *gate, char *buf, size_t size,
                               size_t *len, int64_t *covered_end,
                               int64_t *left_out);

/* Marks the finished offsets described by `meta` (the committed metadata,
 * `len` bytes, not necessarily NUL-terminated; borrowed for the call) in a
 * fresh gate: nothing tracked or finished at or above its committable
 * offset, which must be the committed one the text names (create the gate
 * at the committed offset when the partition is assigned, before its first
 * record, not lazily at that record's offset). The offsets need not be
 * tracked: they become finished, kmq_gate_is_done() is true for them, track
 * and mark_done refuse them with KMQ_ERR_DUPLICATE, and they count in the
 * backlog but neither in high nor in in_flight. When they start at the
 * committable offset, it advances over them (high follows). Offsets beyond
 * the window (a writer with a larger window) are ignored: *restored (may be
 * NULL) receives how many offsets were marked. An empty text (Kafka's
 * default metadata) restores nothing and returns KMQ_OK.
 * Errors, after which nothing changed: KMQ_ERR_BAD_FIELD for a text that is
 * malformed or of another version (metadata is outside input: parsed
 * strictly, fuzzed by tests/fuzz/fuzz_gate_meta.c); KMQ_ERR_STATE when the
 * text belongs to another committable offset or the gate is not fresh;
 * KMQ_ERR_INVALID_ARG for a NULL gate, or NULL meta with len > 0.
 * @locality the gate's owner thread; cost O(len + restored / 64). */
kmq_err_t kmq_gate_restore_done(kmq_gate_t *gate, const char *meta, size_t len,
                                int64_t *restored);

#ifdef __cplusplus
}
#endif
#endif /* KMQ_GATE_H */
