# Fallback store (issue 11) on both backends: SQLite (embedded) and the
# MariaDB server that scripts/test.sh starts ($KMQ_MARIADB_URL; label
# "mariadb": the test fails without it).
add_library(kmq_fbutil STATIC fbutil.c)
target_link_libraries(kmq_fbutil PUBLIC kmq_testutil)
kmq_add_test(test_fallback_store SOURCES test_fallback_store.c
             LIBS kmq_core kmq_fbutil LABELS "unit;mariadb;tsan" TIMEOUT 90)
# The compensator on the real broker, both backends.
kmq_add_test(test_compensator_broker SOURCES test_compensator_broker.c
             LIBS kmq_core kmq_fbutil LABELS "broker;mariadb" TIMEOUT 300)
# Acceptance (issue 11): a private single-node cluster (scripts/kafka.sh, own
# state dir) killed for longer than message.timeout.ms under 200 sending
# users, on each backend (the binary's argument).
add_executable(test_fallback_accept_broker test_fallback_accept_broker.c)
target_link_libraries(test_fallback_accept_broker PRIVATE kmq_fault_harness
                      kmq_fbutil)
target_include_directories(test_fallback_accept_broker PRIVATE
                           ${CMAKE_CURRENT_SOURCE_DIR}/faults)
target_compile_definitions(test_fallback_accept_broker PRIVATE
                           KMQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
foreach(_b sqlite mysql)
  add_test(NAME test_fallback_accept_${_b}
           COMMAND test_fallback_accept_broker ${_b})
  set_tests_properties(test_fallback_accept_${_b} PROPERTIES
    LABELS "cluster1;mariadb;faults" TIMEOUT 360
    ENVIRONMENT "CK_DEFAULT_TIMEOUT=300")
endforeach()
# The broker frozen (SIGSTOP) a little longer than message.timeout.ms: it
# comes back with messages still queued in librdkafka (measured).
add_test(NAME test_fallback_accept_sigstop
         COMMAND test_fallback_accept_broker sqlite sigstop)
set_tests_properties(test_fallback_accept_sigstop PROPERTIES
  LABELS "cluster1;faults" TIMEOUT 360 ENVIRONMENT "CK_DEFAULT_TIMEOUT=300")
# Kafka unreachable and the store (a private MariaDB, scripts/mariadb.sh)
# stopped: synchronous errors or LOST, nothing dropped silently.
add_test(NAME test_fallback_store_down
         COMMAND test_fallback_accept_broker mysql store-down)
set_tests_properties(test_fallback_store_down PROPERTIES LABELS "unit;mariadb"
  TIMEOUT 120 ENVIRONMENT "CK_DEFAULT_TIMEOUT=120")
find_program(KMQ_PROMTOOL promtool PATHS /usr/bin REQUIRED)
# The runtime installs the store as its DLQ hook (both backends); its
# kmq_fallback_* series on the endpoint (promtool check metrics).
kmq_add_test(test_fallback_runtime_broker SOURCES test_fallback_runtime_broker.c
             LIBS kmq_brokerutil kmq_fbutil PkgConfig::CURL
             LABELS "broker;mariadb" TIMEOUT 200)
target_compile_definitions(test_fallback_runtime_broker PRIVATE
                           KMQ_PROMTOOL="${KMQ_PROMTOOL}")
# Issue 11: the DLQ and the store both down pause the record's partition;
# the runtime retries its dead letter and resumes once the store is back.
kmq_add_test(test_dlq_retry_broker SOURCES test_dlq_retry_broker.c
             LIBS kmq_brokerutil kmq_fbutil kmq_traffic LABELS "broker"
             TIMEOUT 180)
# The same with a real outage: the runtime's own MariaDB store on a private
# server (scripts/mariadb.sh down / up: same port and data) goes away and
# comes back; the partition pauses, then resumes by itself.
kmq_add_test(test_store_outage_broker SOURCES test_store_outage_broker.c
             LIBS kmq_brokerutil kmq_fbutil kmq_traffic
             LABELS "broker;mariadb" TIMEOUT 180)
target_compile_definitions(test_store_outage_broker PRIVATE
                           KMQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                           KMQ_BINARY_DIR="${PROJECT_BINARY_DIR}")
