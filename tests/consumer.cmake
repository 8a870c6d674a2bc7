kmq_add_test(test_consumer_broker SOURCES test_consumer_broker.c LIBS kmq_core
             LABELS "broker" TIMEOUT 900)
