kmq_add_test(test_producer_mock SOURCES test_producer_mock.c LIBS kmq_core LABELS "mock")
kmq_add_test(test_producer_broker SOURCES test_producer_broker.c LIBS kmq_core LABELS "broker")
