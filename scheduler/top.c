/* The deepest mailboxes, for stall diagnostics (sched.h). */
#include <stdatomic.h>
#include <string.h>

#include "scheduler/sched_int.h"

size_t kmq_sched_top_mailboxes(const kmq_sched_t *s, kmq_sched_mailbox_t *out,
                               size_t k) {
  size_t n = 0;
  if (!s || !out || !k)
    return 0;
  /* Every live actor is on the LRU list (idle or busy), which only the
   * dispatcher (this thread) links and unlinks. `pending` counts the items
   * pushed and not finished: the queued ones plus the running one. */
  for (const kmq_sched_actor_t *a = s->lru_head; a; a = a->lru_next) {
    uint64_t d = atomic_load_explicit(&a->pending, memory_order_relaxed);
    if (!d || (n == k && d <= out[n - 1].depth))
      continue;
    /* Insertion into the sorted top k: k is small (10), the walk is the
     * cost. */
    size_t i = n < k ? n++ : k - 1;
    while (i > 0 && out[i - 1].depth < d) {
      out[i] = out[i - 1];
      i--;
    }
    size_t len = a->key_len < sizeof(out[i].key) - 1 ? a->key_len
                                                     : sizeof(out[i].key) - 1;
    memcpy(out[i].key, a->key, len);
    out[i].key[len] = '\0';
    out[i].key_len = len;
    out[i].depth = d;
  }
  return n;
}
