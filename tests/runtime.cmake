kmq_add_test(test_runtime_broker SOURCES test_runtime_broker.c
             LIBS kmq kmq_traffic LABELS "broker" TIMEOUT 900)
