/*
 * ThreadSanitizer annotations for Concurrency Kit rings (kmq__ internal).
 *
 * TSan does not see ck_pr's inline assembly: it would report a ring's slot
 * copies as races and lose the happens-before edge for the data behind the
 * pointers. Under TSan, ring operations run inside an ignore region (the
 * slot copies are ck's business) and carry an explicit __tsan_release before
 * the push and __tsan_acquire after the pop on the ring's address: exactly
 * the edge ck_ring provides (producer: write slot, store fence, store tail;
 * consumer: load tail, load fence, read slot). Elsewhere these are no-ops.
 */
#ifndef KMQ_LIB_TSAN_H
#define KMQ_LIB_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define KMQ__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KMQ__TSAN 1
#endif
#endif

#ifdef KMQ__TSAN
#include <sanitizer/tsan_interface.h>
/* Dynamic annotations exported by the TSan runtime (no public header). */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#define KMQ__TSAN_IGNORE_BEGIN()                                               \
  (AnnotateIgnoreReadsBegin(__FILE__, __LINE__),                               \
   AnnotateIgnoreWritesBegin(__FILE__, __LINE__))
#define KMQ__TSAN_IGNORE_END()                                                 \
  (AnnotateIgnoreWritesEnd(__FILE__, __LINE__),                                \
   AnnotateIgnoreReadsEnd(__FILE__, __LINE__))
#define KMQ__TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#define KMQ__TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#else
#define KMQ__TSAN_IGNORE_BEGIN() ((void)0)
#define KMQ__TSAN_IGNORE_END() ((void)0)
#define KMQ__TSAN_RELEASE(addr) ((void)(addr))
#define KMQ__TSAN_ACQUIRE(addr) ((void)(addr))
#endif

#endif
