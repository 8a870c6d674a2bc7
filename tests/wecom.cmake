# WeCom callbacks (wecom/): the crypto against Tencent's published vector and
# every refusal (unit).
kmq_add_test(test_wecom_crypto SOURCES test_wecom_crypto.c LIBS kmq_wecom
             LABELS "unit" TIMEOUT 60)
target_include_directories(test_wecom_crypto PRIVATE ${PROJECT_SOURCE_DIR})

# The kmq-wecom command line on the same vector: exit codes 0, 1 and 2.
add_test(NAME test_wecom_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/wecom/test_cli.sh
                 $<TARGET_FILE:kmq-wecom>)
set_tests_properties(test_wecom_cli PROPERTIES LABELS "unit" TIMEOUT 60)

# The callback endpoint in process with libcurl as WeCom, on the real
# broker (broker).
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
kmq_add_test(test_wecom_callback_broker SOURCES test_wecom_callback_broker.c
             LIBS kmq_wecom kmq_brokerutil PkgConfig::CURL LABELS "broker"
             TIMEOUT 120)

# libFuzzer target for the callback decoder (clang only; tests/faults/fuzz.sh
# runs it with the others):
#   CC=clang cmake -S . -B build-fuzz -DKMQ_FUZZ=ON && ninja -C build-fuzz fuzz_wecom
#   build-fuzz/tests/fuzz_wecom -max_total_time=60 tests/fuzz/corpus/wecom
if(KMQ_FUZZ)
  # Coverage feedback needs the decoder instrumented, not only the harness.
  target_compile_options(kmq_wecom PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
  add_executable(fuzz_wecom fuzz/fuzz_wecom.c)
  target_compile_options(fuzz_wecom PRIVATE -fsanitize=fuzzer,address,undefined
                         -fno-sanitize-recover=undefined)
  target_link_options(fuzz_wecom PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_wecom PRIVATE kmq_wecom)
  target_include_directories(fuzz_wecom PRIVATE ${PROJECT_SOURCE_DIR})
endif()
