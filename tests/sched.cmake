# Scheduler (scheduler/): unit suite, also run under ThreadSanitizer.
kmq_add_test(test_sched SOURCES test_sched.c LIBS kmq_sched LABELS "unit;tsan")
