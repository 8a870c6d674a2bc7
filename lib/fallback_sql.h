/* SQL shared by both fallback backends: the statements are the same text on
 * SQLite and MariaDB except the table definition; one copy here so the two
 * cannot drift. Placeholders are written for each backend by its own file
 * (SQLite binds "?", the MariaDB backend formats literals). */
#ifndef KMQ_LIB_FALLBACK_SQL_H
#define KMQ_LIB_FALLBACK_SQL_H

#define KMQ__FB_LIVE "status IN ('pending','retrying')"

/* The columns a claim returns, in kmq__fb_entry order. */
#define KMQ__FB_COLS                                                          \
  "id, message_id, user_id, topic, source, msg_key, content, headers, "       \
  "orig_partition, orig_offset, retry_count, max_retries, created_at"

/* Due heads: live rows that are due and unclaimed (or whose lease ended) and
 * have no live row of the same user before them in created order. Format
 * arguments: now, now, limit. */
#define KMQ__FB_HEADS_FMT                                                     \
  "SELECT " KMQ__FB_COLS " FROM kafka_fallback_messages f WHERE "             \
  KMQ__FB_LIVE " AND next_retry_at <= %lld AND claim_until <= %lld AND "      \
  "NOT EXISTS (SELECT 1 FROM kafka_fallback_messages g WHERE "                \
  "g.user_id = f.user_id AND g." KMQ__FB_LIVE " AND (g.created_at < "         \
  "f.created_at OR (g.created_at = f.created_at AND g.id < f.id))) "          \
  "ORDER BY next_retry_at, created_at, id LIMIT %lld"

/* The compare-and-set that makes a claim: only unclaimed (or expired) live
 * rows change. Format arguments: token (quoted), until, now, id list
 * (kmq__fb_idlist), now. */
#define KMQ__FB_CLAIM_FMT                                                     \
  "UPDATE kafka_fallback_messages SET status = 'retrying', claimed_by = %s, " \
  "claim_until = %lld, updated_at = %lld WHERE id IN (%s) AND " KMQ__FB_LIVE  \
  " AND claim_until <= %lld"

/* status is assigned first: MariaDB evaluates SET left to right with the
 * updated values, SQLite with the old ones; first, both see the old
 * retry_count. Format arguments: error (quoted), now, next, id, token. */
#define KMQ__FB_RETRY_FMT                                                     \
  "UPDATE kafka_fallback_messages SET status = CASE WHEN retry_count + 1 >= " \
  "max_retries THEN 'failed' ELSE 'retrying' END, retry_count = "             \
  "retry_count + 1, error_message = %s, updated_at = %lld, next_retry_at = "  \
  "%lld, claimed_by = NULL, claim_until = 0 WHERE id = %lld AND claimed_by "  \
  "= %s AND status = 'retrying'"

/* Format arguments: now, id list, token. */
#define KMQ__FB_DONE_FMT                                                      \
  "UPDATE kafka_fallback_messages SET status = 'success', updated_at = %lld, " \
  "claimed_by = NULL, claim_until = 0 WHERE id IN (%s) AND claimed_by = %s "  \
  "AND status = 'retrying'"

#define KMQ__FB_INDEXES                                                       \
  "CREATE INDEX IF NOT EXISTS idx_kfm_user_status_created ON "                \
  "kafka_fallback_messages (user_id, status, created_at)",                    \
      "CREATE INDEX IF NOT EXISTS idx_kfm_status_next ON "                    \
      "kafka_fallback_messages (status, next_retry_at)"

#endif
