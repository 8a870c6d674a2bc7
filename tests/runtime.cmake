kmq_add_test(test_runtime_broker SOURCES test_runtime_broker.c
             LIBS kmq kmq_traffic LABELS "broker;tsan" TIMEOUT 900)
kmq_tsan_rdkafka(test_runtime_broker)

# Issue 9: the in-flight edges (pause across reassignment, revoked messages
# never start, dead-letter order, long retry budgets) on the real broker.
kmq_add_test(test_inflight_broker SOURCES test_inflight_broker.c
             LIBS kmq_brokerutil LABELS "broker" TIMEOUT 600)

# Issue 10: metrics read from another thread while the pipeline runs.
kmq_add_test(test_metrics_broker SOURCES test_metrics_broker.c
             LIBS kmq_brokerutil LABELS "broker;tsan" TIMEOUT 300)
kmq_tsan_rdkafka(test_metrics_broker)

# Issue 10: finished work survives a rebalance (commit metadata).
kmq_add_test(test_commit_meta_broker SOURCES test_commit_meta_broker.c
             LIBS kmq_brokerutil LABELS "broker" TIMEOUT 300)

# Issue 10, item 4: a RETRY storm of one user does not slow the others (the
# backoff waits on a scheduler timer, not on a worker).
kmq_add_test(test_retry_broker SOURCES test_retry_broker.c
             LIBS kmq_brokerutil LABELS "broker;tsan" TIMEOUT 300)
kmq_tsan_rdkafka(test_retry_broker)

# Issue 10, item 3: kmq_runtime_destroy is bounded with a stuck processor
# (SYNC and ASYNC), commits nothing past it, and the late outcome is inert.
kmq_add_test(test_shutdown_broker SOURCES test_shutdown_broker.c
             LIBS kmq_brokerutil LABELS "broker;tsan" TIMEOUT 300)
kmq_tsan_rdkafka(test_shutdown_broker)

# Issue 13: the migration drill (phase 0 -> dual-write + shadow -> live ->
# rollback -> live) with traffic flowing.
kmq_add_test(test_migrate_broker SOURCES test_migrate_broker.c
             LIBS kmq_brokerutil LABELS "broker" TIMEOUT 300)
