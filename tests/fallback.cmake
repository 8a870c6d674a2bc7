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
