# libkmq.so and libkmq.a (every component registered with kmq_add_component,
# cmake/KmqComponents.cmake), and what `cmake --install` puts under the prefix:
#   include/kmq/*.h                      public headers (version.h generated)
#   lib/libkmq.so.X.Y.Z, .so.X.Y, .so    shared, symbols limited by libkmq.map
#   lib/libkmq.a                         static (all components in one archive)
#   lib/pkgconfig/kmq.pc                 pkg-config (kmq.pc.in)
#   lib/cmake/kmq/kmqConfig*.cmake       find_package(kmq): kmq::kmq (shared),
#                                        kmq::kmq_static
# Must be included after the last component's add_subdirectory: the list of
# components is read here, at configure time.
include(CMakePackageConfigHelpers)

get_property(_kmq_components GLOBAL PROPERTY KMQ_COMPONENTS)
set(_kmq_objects "")
foreach(_c IN LISTS _kmq_components)
  list(APPEND _kmq_objects $<TARGET_OBJECTS:${_c}>)
endforeach()

# Before 1.0 a minor version may change the ABI: the soname carries it.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(KMQ_SOVERSION 0.${PROJECT_VERSION_MINOR})
  set(_kmq_compat SameMinorVersion)
else()
  set(KMQ_SOVERSION ${PROJECT_VERSION_MAJOR})
  set(_kmq_compat SameMajorVersion)
endif()

add_library(kmq_shared SHARED ${_kmq_objects})
add_library(kmq_static STATIC ${_kmq_objects})
set_target_properties(kmq_shared PROPERTIES OUTPUT_NAME kmq EXPORT_NAME kmq
  VERSION ${PROJECT_VERSION} SOVERSION ${KMQ_SOVERSION}
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/libkmq.map)
set_target_properties(kmq_static PROPERTIES OUTPUT_NAME kmq
  EXPORT_NAME kmq_static)
target_link_options(kmq_shared PRIVATE
  -Wl,--version-script=${PROJECT_SOURCE_DIR}/cmake/libkmq.map)
# Every symbol the objects use must come from a listed dependency: a missing
# one fails here instead of in the user's link. Sanitizer builds leave their
# runtime's symbols to the executable, so they cannot check this.
if(NOT KMQ_ASAN AND NOT KMQ_TSAN AND NOT KMQ_FUZZ)
  target_link_options(kmq_shared PRIVATE -Wl,--no-undefined)
endif()
foreach(_t kmq_shared kmq_static)
  target_include_directories(${_t} INTERFACE
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  # PRIVATE: exported as $<LINK_ONLY:...> for the static library, not at all
  # for the shared one.
  target_link_libraries(${_t} PUBLIC ${KMQ_PUBLIC_DEPS}
                              PRIVATE ${KMQ_PRIVATE_DEPS})
endforeach()

# Headers: the tree's, plus the generated version.h.
file(GLOB _kmq_headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/kmq/*.h)
install(FILES ${_kmq_headers} ${PROJECT_BINARY_DIR}/include/kmq/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kmq)

# Two export sets, so that a shared-only user needs only the public
# dependencies' development files (kmqConfig.cmake.in).
install(TARGETS kmq_shared EXPORT kmqTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS kmq_static EXPORT kmqStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
set(_kmq_cmakedir ${CMAKE_INSTALL_LIBDIR}/cmake/kmq)
install(EXPORT kmqTargets NAMESPACE kmq:: DESTINATION ${_kmq_cmakedir})
install(EXPORT kmqStaticTargets NAMESPACE kmq:: DESTINATION ${_kmq_cmakedir})

# kmqConfig.cmake: the dependency lookups recorded by kmq_pkg_dependency and
# kmq_lib_dependency, one line each.
get_property(_f GLOBAL PROPERTY KMQ_CONFIG_FIND)
list(JOIN _f "\n" KMQ_CONFIG_FIND)
get_property(_f GLOBAL PROPERTY KMQ_CONFIG_FIND_STATIC)
list(JOIN _f "\n" KMQ_CONFIG_FIND_STATIC)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kmqConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kmqConfig.cmake INSTALL_DESTINATION ${_kmq_cmakedir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kmqConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${_kmq_compat})
install(FILES ${PROJECT_BINARY_DIR}/kmqConfig.cmake
              ${PROJECT_BINARY_DIR}/kmqConfigVersion.cmake
        DESTINATION ${_kmq_cmakedir})

# kmq.pc, same source. libdir and includedir are relative to ${prefix} when
# they are under it, so that an installed tree can be moved.
get_property(_f GLOBAL PROPERTY KMQ_PC_REQUIRES)
list(JOIN _f " " KMQ_PC_REQUIRES)
get_property(_f GLOBAL PROPERTY KMQ_PC_REQUIRES_PRIVATE)
list(JOIN _f " " KMQ_PC_REQUIRES_PRIVATE)
get_property(_f GLOBAL PROPERTY KMQ_PC_LIBS_PRIVATE)
list(JOIN _f " " KMQ_PC_LIBS_PRIVATE)
foreach(_d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_d}}")
    set(KMQ_PC_${_d} "${CMAKE_INSTALL_${_d}}")
  else()
    set(KMQ_PC_${_d} "\${prefix}/${CMAKE_INSTALL_${_d}}")
  endif()
endforeach()
set(KMQ_INSTALL_PREFIX "@KMQ_INSTALL_PREFIX@") # kept for install time
configure_file(${PROJECT_SOURCE_DIR}/cmake/kmq.pc.in
               ${PROJECT_BINARY_DIR}/kmq.pc.in-configured @ONLY)
# ${prefix} is the one given to cmake --install --prefix, not the configured
# CMAKE_INSTALL_PREFIX: substituted at install time.
install(CODE "
  file(READ \"${PROJECT_BINARY_DIR}/kmq.pc.in-configured\" _pc)
  string(REPLACE \"@KMQ_INSTALL_PREFIX@\" \"\${CMAKE_INSTALL_PREFIX}\" _pc \"\${_pc}\")
  set(_f \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/kmq.pc\")
  file(WRITE \"\${_f}\" \"\${_pc}\")
  message(STATUS \"Installing: \${_f}\")
")
