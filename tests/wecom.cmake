# WeCom callbacks (wecom/): the crypto against Tencent's published vector and
# every refusal (unit).
kmq_add_test(test_wecom_crypto SOURCES test_wecom_crypto.c LIBS kmq_wecom
             LABELS "unit" TIMEOUT 60)
target_include_directories(test_wecom_crypto PRIVATE ${PROJECT_SOURCE_DIR})
