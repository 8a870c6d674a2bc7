kmq_add_test(test_gate SOURCES test_gate.c LIBS kmq_core LABELS "unit;tsan")
kmq_add_test(test_gate_meta SOURCES test_gate_meta.c LIBS kmq_core LABELS "unit;tsan")
