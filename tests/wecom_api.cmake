# WeCom API client against the in-process simulator (unit: no broker).
kmq_add_test(test_wecom_client SOURCES test_wecom_client.c
             LIBS kmq_wecom_api kmq_wecom_sim LABELS "unit" TIMEOUT 60)
