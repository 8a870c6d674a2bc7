# Issue 12: no secret in a dump, an error or a log line (lib/redact.h). No
# broker: the clients fail or log before connecting.
kmq_add_test(test_redact SOURCES test_redact.c LIBS kmq LABELS "unit"
             TIMEOUT 60)
# It calls kmq__ functions of lib/redact.h.
target_include_directories(test_redact PRIVATE ${PROJECT_SOURCE_DIR})
