# WeCom API client against the in-process simulator (unit: no broker).
kmq_add_test(test_wecom_client SOURCES test_wecom_client.c
             LIBS kmq_wecom_api kmq_wecom_sim LABELS "unit" TIMEOUT 60)
# The puller on the real broker with the in-process simulator.
kmq_add_test(test_wecom_pull_broker SOURCES test_wecom_pull_broker.c
             LIBS kmq_wecom_api kmq_wecom_sim kmq_brokerutil
             LABELS "broker" TIMEOUT 120)
