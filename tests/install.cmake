# Issue 12, the installed library (cmake/KmqInstall.cmake):
#   test_symbols  libkmq.so in the build tree exports the public API only;
#   test_install  cmake --install into a scratch prefix, then examples/ built
#                 against it with pkg-config and with find_package(kmq), run
#                 without a broker (--dry), and the symbol check on the
#                 installed copy (tests/install.sh).
set(_kmq_san "")
if(KMQ_ASAN)
  set(_kmq_san "-fsanitize=address,undefined")
elseif(KMQ_TSAN)
  set(_kmq_san "-fsanitize=thread")
endif()

add_test(NAME test_symbols
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_symbols.sh
                 $<TARGET_FILE:kmq_shared> ${PROJECT_SOURCE_DIR}/include
                 ${PROJECT_BINARY_DIR}/include)
set_tests_properties(test_symbols PROPERTIES LABELS "unit" TIMEOUT 60
                     ENVIRONMENT "CC=${CMAKE_C_COMPILER}")

add_test(NAME test_install
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/install.sh
                 ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
                 ${CMAKE_INSTALL_LIBDIR} ${PROJECT_VERSION}
                 ${CMAKE_C_COMPILER} ${CMAKE_GENERATOR} "${_kmq_san}")
set_tests_properties(test_install PROPERTIES LABELS "unit" TIMEOUT 120)
