# Fault tests (issue 5): zero loss and zero per-user reordering under faults,
# counted by a checker (tests/faults/verify.c). Results and commands:
# tests/FAULTS.md. Labels say what a test needs:
#   faults    every fault test
#   mock      librdkafka mock cluster, in process
#   broker    the shared broker of scripts/test.sh ($KMQ_BOOTSTRAP)
#   cluster1  starts and kills its OWN single-node cluster (scripts/kafka.sh,
#             private KMQ_KAFKA_STATE under the build dir)
#   cluster3  starts and kills its OWN 3-node cluster
# Sizes are small by default; KMQ_SOAK=1 runs the long versions.
set(_kf ${CMAKE_CURRENT_SOURCE_DIR}/faults)

# The checker: no Kafka, no check (the consumer program links it too).
add_library(kmq_fault_verify STATIC ${_kf}/verify.c)
target_include_directories(kmq_fault_verify PUBLIC ${_kf})
target_link_libraries(kmq_fault_verify PUBLIC Threads::Threads)

# The consumer process of the multi-process scenarios.
add_executable(fault_consumer ${_kf}/fault_consumer.c)
target_link_libraries(fault_consumer PRIVATE kmq kmq_traffic kmq_fault_verify)

add_library(kmq_fault_harness STATIC ${_kf}/harness.c ${_kf}/cluster.c
            ${_kf}/procs.c)
target_link_libraries(kmq_fault_harness PUBLIC kmq kmq_traffic kmq_fault_verify
                      kmq_testutil)
target_compile_definitions(kmq_fault_harness PRIVATE
  KMQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
  KF_BUILD_DIR="${CMAKE_CURRENT_BINARY_DIR}"
  KF_CONSUMER="$<TARGET_FILE:fault_consumer>")
add_dependencies(kmq_fault_harness fault_consumer)

kmq_add_test(test_fault_verify SOURCES ${_kf}/test_fault_verify.c
             LIBS kmq_fault_verify LABELS "unit;faults" TIMEOUT 60)

# Scenario 1: mock cluster, in process.
kmq_add_test(test_fault_mock SOURCES ${_kf}/test_fault_mock.c
             LIBS kmq_fault_harness LABELS "mock;faults" TIMEOUT 600)

# Scenarios 4 (rebalance storm) and 5 (SIGKILL of a consumer): consumer
# processes on the shared broker.
kmq_add_test(test_fault_procs SOURCES ${_kf}/test_fault_procs.c
             LIBS kmq_fault_harness LABELS "broker;faults" TIMEOUT 900)

# Scenario 6: poison input, failing/retrying/slow processors (shared broker).
kmq_add_test(test_fault_poison SOURCES ${_kf}/test_fault_poison.c
             LIBS kmq_fault_harness LABELS "broker;faults" TIMEOUT 300)

# Scenario 7: libFuzzer target for the commit gate against a reference model
# (clang only; tests/faults/fuzz.sh builds and runs it with fuzz_envelope).
# gate.c is compiled into the fuzzer itself so that it is instrumented for
# coverage without touching the flags of kmq_core.
if(KMQ_FUZZ)
  add_executable(fuzz_gate ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_gate.c
                           ${PROJECT_SOURCE_DIR}/lib/gate.c)
  target_include_directories(fuzz_gate PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_compile_options(fuzz_gate PRIVATE -fsanitize=fuzzer,address,undefined
                         -fno-sanitize-recover=undefined)
  target_link_options(fuzz_gate PRIVATE -fsanitize=fuzzer,address,undefined)
  # The gate's commit-metadata decoder: broker-supplied text.
  add_executable(fuzz_gate_meta ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_gate_meta.c
                                ${PROJECT_SOURCE_DIR}/lib/gate.c)
  target_include_directories(fuzz_gate_meta PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_compile_options(fuzz_gate_meta PRIVATE
                         -fsanitize=fuzzer,address,undefined
                         -fno-sanitize-recover=undefined)
  target_link_options(fuzz_gate_meta PRIVATE -fsanitize=fuzzer,address,undefined)
endif()

# Scenario 2: SIGKILL of the broker of a private single-node cluster.
kmq_add_test(test_fault_broker SOURCES ${_kf}/test_fault_broker.c
             LIBS kmq_fault_harness LABELS "cluster1;faults" TIMEOUT 600)

# Scenario 3: private 3-node cluster, RF 3 / min.insync.replicas 2.
# It ends with `kmqctl topics bootstrap --profile prod` on that cluster,
# checked with Kafka's own TopicCommand (issue 12).
kmq_add_test(test_fault_cluster3 SOURCES ${_kf}/test_fault_cluster3.c
             LIBS kmq_fault_harness LABELS "cluster3;faults" TIMEOUT 900)
target_compile_definitions(test_fault_cluster3 PRIVATE
  KMQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}" KF_KMQCTL="$<TARGET_FILE:kmqctl>")
add_dependencies(test_fault_cluster3 kmqctl)
