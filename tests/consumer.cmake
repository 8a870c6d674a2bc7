kmq_add_test(test_consumer_broker SOURCES test_consumer_broker.c LIBS kmq_core
             LABELS "broker" TIMEOUT 900)
# Issue 10: periodic commits wait while the member rejoins the group
# (librdkafka #4059): held, none fails, no partition lost.
kmq_add_test(test_rejoin_broker SOURCES test_rejoin_broker.c LIBS kmq_brokerutil
             LABELS "broker" TIMEOUT 180)
# Issue 10 item 1: the record slab (kmq_ack_data, generations, the plain
# style over the ack path), on librdkafka's mock cluster.
kmq_add_test(test_consumer_mock SOURCES test_consumer_mock.c LIBS kmq_core
             LABELS "mock;tsan" TIMEOUT 300)
kmq_tsan_rdkafka(test_consumer_mock)
