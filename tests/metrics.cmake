# Issue 12 ("Operate it"): the metrics endpoint, stall diagnostics, hooks and
# the Prometheus alert rules.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
find_program(KMQ_PROMTOOL promtool PATHS /usr/bin REQUIRED)

# The exposition and JSON writers (escaping, cumulative buckets, promtool).
kmq_add_test(test_metrics_expo SOURCES test_metrics_expo.c LIBS kmq
             LABELS "unit" TIMEOUT 60)
target_include_directories(test_metrics_expo PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_definitions(test_metrics_expo PRIVATE
                           KMQ_PROMTOOL="${KMQ_PROMTOOL}")

# librdkafka's statistics JSON into the snapshot.
kmq_add_test(test_rdstats SOURCES test_rdstats.c LIBS kmq_core
             LABELS "unit" TIMEOUT 60)
target_include_directories(test_rdstats PRIVATE ${PROJECT_SOURCE_DIR})

# /metrics and /stuck over HTTP during a run, hooks, a missing topic.
kmq_add_test(test_endpoint_broker SOURCES test_endpoint_broker.c
             LIBS kmq_brokerutil PkgConfig::CURL LABELS "broker;tsan" TIMEOUT 300)
kmq_tsan_rdkafka(test_endpoint_broker)
target_compile_definitions(test_endpoint_broker PRIVATE
                           KMQ_PROMTOOL="${KMQ_PROMTOOL}"
                           KMQ_KMQCTL="$<TARGET_FILE:kmqctl>")
add_dependencies(test_endpoint_broker kmqctl)

# The alert rules: syntax, and every alert fires on its input series.
set(_rules ${PROJECT_SOURCE_DIR}/ops/prometheus)
add_test(NAME promtool_check_rules
         COMMAND ${KMQ_PROMTOOL} check rules ${_rules}/kmq-rules.yml)
add_test(NAME promtool_test_rules
         COMMAND ${KMQ_PROMTOOL} test rules ${_rules}/kmq-rules.test.yml)
set_tests_properties(promtool_check_rules promtool_test_rules
                     PROPERTIES LABELS "unit" TIMEOUT 60)

# The deepest mailboxes, sampled while workers run (also under TSan).
kmq_add_test(test_sched_top SOURCES test_sched_top.c LIBS kmq_sched
             LABELS "unit;tsan" TIMEOUT 60)
