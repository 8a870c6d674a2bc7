# Dead letters: the bounded envelope (unit) and poison records of any size
# on a real broker, without a fallback hook (broker).
kmq_add_test(test_dlq SOURCES test_dlq.c LIBS kmq_core LABELS "unit" TIMEOUT 120)
kmq_add_test(test_dlq_broker SOURCES test_dlq_broker.c LIBS kmq kmq_traffic
             LABELS "broker" TIMEOUT 180)
kmq_add_test(test_dlq_mock SOURCES test_dlq_mock.c LIBS kmq_core LABELS "mock"
             TIMEOUT 120)
# Issue 11: kmq.msg.max.bytes must fit the producers' message.max.bytes,
# checked at runtime and producer creation (lib/limits.h).
kmq_add_test(test_limits SOURCES test_limits.c LIBS kmq
             LABELS "unit" TIMEOUT 60)
target_include_directories(test_limits PRIVATE ${PROJECT_SOURCE_DIR})
