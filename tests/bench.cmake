# Smoke runs of kmq-bench (bench/): each mode once with small numbers, to
# check that the harness works (exit 0, JSON written and well formed), not
# the speed. The broker address comes from $KMQ_BOOTSTRAP.
if(TARGET kmq-bench)
  foreach(_mode produce consume e2e sched decode)
    set(_extra "")
    if(_mode STREQUAL "produce")
      # The Java reference row too, when java and the Kafka jars are there.
      set(_extra --java)
    endif()
    add_test(NAME bench_smoke_${_mode}
             COMMAND bash ${PROJECT_SOURCE_DIR}/bench/smoke.sh
                     $<TARGET_FILE:kmq-bench> ${_mode} ${_extra})
    # sched and decode run without a broker.
    if(_mode STREQUAL "sched" OR _mode STREQUAL "decode")
      set(_labels "smoke")
    else()
      set(_labels "smoke;broker")
    endif()
    set_tests_properties(bench_smoke_${_mode} PROPERTIES
                         LABELS "${_labels}" TIMEOUT 120)
  endforeach()
endif()
