# kmq_wecom_sim: the WeCom API simulator's core (tests run it in-process);
# kmq-wecom-sim: the same as a program.
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
# Its signed callbacks use kmq's WeCom crypto and libcurl (kmq_wecom).
add_library(kmq_wecom_sim STATIC wecom_sim_core.c wecom_sim_http.c
            wecom_sim_callback.c)
target_include_directories(kmq_wecom_sim PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(kmq_wecom_sim PUBLIC kmq_wecom PkgConfig::MHD
                      PkgConfig::JANSSON PkgConfig::CURL Threads::Threads)

add_executable(kmq-wecom-sim wecom_sim.c)
target_link_libraries(kmq-wecom-sim PRIVATE kmq_wecom_sim)

# The simulated customers' reply application (a kmq processor replying with
# send_msg), shared by the demo and the WeCom broker tests.
add_library(kmq_wecom_replier STATIC wecom_replier.c)
target_include_directories(kmq_wecom_replier PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(kmq_wecom_replier PUBLIC kmq kmq_wecom_sim)
