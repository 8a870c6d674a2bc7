# Issue 12: the configuration file (unit) and kmqctl (tests/kmqctl/*.sh:
# arguments, help, an unreachable broker and the --endpoint parser need no
# broker; every subcommand against $KMQ_BOOTSTRAP does).
kmq_add_test(test_conf_file SOURCES test_conf_file.c LIBS kmq_core
             LABELS "unit" TIMEOUT 60)
target_compile_definitions(test_conf_file PRIVATE
                           KMQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
kmq_add_test(test_kmqctl_broker SOURCES test_kmqctl_broker.c
             LIBS kmq_brokerutil LABELS "broker" TIMEOUT 300)
target_compile_definitions(test_kmqctl_broker PRIVATE
                           KMQCTL_BIN="$<TARGET_FILE:kmqctl>")
add_dependencies(test_kmqctl_broker kmqctl)
add_test(NAME test_kmqctl_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/kmqctl/test_kmqctl_cli.sh
                 $<TARGET_FILE:kmqctl> ${CMAKE_CURRENT_SOURCE_DIR}/kmqctl/fixture)
set_tests_properties(test_kmqctl_cli PROPERTIES LABELS "unit" TIMEOUT 60)
# kmqctl fallback stats | list | replay on both store backends (issue 11).
kmq_add_test(test_kmqctl_fallback_broker
             SOURCES test_kmqctl_fallback_broker.c
             LIBS kmq_brokerutil kmq_fbutil LABELS "broker;mariadb" TIMEOUT 120)
target_compile_definitions(test_kmqctl_fallback_broker PRIVATE
                           KMQCTL_BIN="$<TARGET_FILE:kmqctl>")
add_dependencies(test_kmqctl_fallback_broker kmqctl)
