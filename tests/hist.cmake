kmq_add_test(test_hist SOURCES test_hist.c LIBS kmq_core LABELS "unit;tsan")
