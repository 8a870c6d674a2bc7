# kmq_wecom_api: the WeCom server-API client (libcurl) and the kf/sync_msg
# puller that feeds kmq's topic (include/kmq/wecom_api.h). Kept in its own
# file so that the callback-crypto target (kmq_wecom) sits beside it in
# wecom/CMakeLists.txt.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
add_library(kmq_wecom_api STATIC
            ${CMAKE_CURRENT_LIST_DIR}/kf_client.c
            ${CMAKE_CURRENT_LIST_DIR}/pull.c
            ${CMAKE_CURRENT_LIST_DIR}/pull_cursor.c)
target_include_directories(kmq_wecom_api PUBLIC ${PROJECT_SOURCE_DIR}/include
                                         PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(kmq_wecom_api PUBLIC kmq_proc kmq_core PkgConfig::CURL)
