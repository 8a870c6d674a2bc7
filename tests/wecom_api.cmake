# WeCom API client against the in-process simulator (unit: no broker; tsan:
# the token cache under concurrent callers).
kmq_add_test(test_wecom_client SOURCES test_wecom_client.c
             LIBS kmq_wecom kmq_wecom_sim LABELS "unit;tsan" TIMEOUT 60)

# The puller on the real broker with the in-process simulator.
add_library(kmq_wecomutil STATIC wecomutil.c)
target_link_libraries(kmq_wecomutil PUBLIC kmq_brokerutil kmq_wecom
                      kmq_wecom_sim)
kmq_add_test(test_wecom_pull_broker SOURCES test_wecom_pull_broker.c
             LIBS kmq_wecomutil LABELS "broker" TIMEOUT 120)
# End to end: simulator -> puller -> kmq runtime -> ASYNC send_msg replies.
kmq_add_test(test_wecom_e2e_broker SOURCES test_wecom_e2e_broker.c
             LIBS kmq_wecomutil kmq kmq_wecom_replier LABELS "broker"
             TIMEOUT 120)
# The simulator's signed callbacks against the real callback endpoint: URL
# verification, sync requests, a misconfigured simulator refused (401).
kmq_add_test(test_wecom_sim_callback_broker
             SOURCES test_wecom_sim_callback_broker.c
             LIBS kmq_wecomutil LABELS "broker" TIMEOUT 90)
# Two kmq-wecom gateway processes in one group, one killed (SIGKILL) mid-run:
# nothing skipped, per-customer order in the topic, duplicates bounded by a
# page, and every reply of a kmq runtime in order.
kmq_add_test(test_wecom_gateway_broker SOURCES test_wecom_gateway_broker.c
             LIBS kmq_wecomutil kmq_wecom_replier LABELS "broker" TIMEOUT 90)
target_compile_definitions(test_wecom_gateway_broker PRIVATE
                           KMQ_WECOM_BIN="$<TARGET_FILE:kmq-wecom>")
add_dependencies(test_wecom_gateway_broker kmq-wecom)
