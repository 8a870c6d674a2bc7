kmq_add_test(test_producer_mock SOURCES test_producer_mock.c LIBS kmq_core LABELS "mock")
