# Dead letters: the bounded envelope (unit) and poison records of any size
# on a real broker, without a fallback hook (broker).
kmq_add_test(test_dlq SOURCES test_dlq.c LIBS kmq_core LABELS "unit" TIMEOUT 120)
kmq_add_test(test_dlq_broker SOURCES test_dlq_broker.c LIBS kmq kmq_traffic
             LABELS "broker" TIMEOUT 180)
kmq_add_test(test_dlq_mock SOURCES test_dlq_mock.c LIBS kmq_core LABELS "mock"
             TIMEOUT 120)
