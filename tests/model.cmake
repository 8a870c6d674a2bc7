# Message model and processor registry (processors/).
kmq_add_test(test_message SOURCES test_message.c LIBS kmq_proc LABELS "unit")
kmq_add_test(test_registry SOURCES test_registry.c LIBS kmq_proc LABELS "unit;tsan")
# The tests reach the private headers (processors/proc_ctx.h) the runtime uses.
target_include_directories(test_message PRIVATE ${PROJECT_SOURCE_DIR})
target_include_directories(test_registry PRIVATE ${PROJECT_SOURCE_DIR})

# libFuzzer target for the decoder (clang only):
#   CC=clang cmake -S . -B build-fuzz -DKMQ_FUZZ=ON && ninja -C build-fuzz fuzz_envelope
#   build-fuzz/tests/fuzz_envelope -max_total_time=60 tests/fuzz/corpus/envelope
if(KMQ_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "KMQ_FUZZ needs clang (CC=clang)")
  endif()
  # Coverage feedback needs the code under test instrumented, not only the
  # harness.
  target_compile_options(kmq_proc PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
  add_executable(fuzz_envelope fuzz/fuzz_envelope.c)
  target_compile_options(fuzz_envelope PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_envelope PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_envelope PRIVATE kmq_proc)
  target_include_directories(fuzz_envelope PRIVATE ${PROJECT_SOURCE_DIR})
endif()
