# What libkmq is made of: its components (the per-folder static libraries the
# tests link) and its external dependencies. The combined libraries
# (libkmq.so, libkmq.a: cmake/KmqInstall.cmake), kmq.pc and kmqConfig.cmake
# are generated from these lists, so that a new folder or a new dependency is
# one line and cannot be forgotten in one of the three.
#
# Dependencies (top-level CMakeLists.txt, before the folders):
#   kmq_pkg_dependency(<PREFIX> <pkg-config module> [PUBLIC])
#     pkg_check_modules(<PREFIX> REQUIRED IMPORTED_TARGET <module>), linked to
#     every component as PkgConfig::<PREFIX>; in kmq.pc under Requires (PUBLIC:
#     include/kmq/ hands out this library's types, so users compile against
#     its headers and call it) or Requires.private; found again by
#     kmqConfig.cmake.
#   kmq_lib_dependency(<link item> <kmq.pc flag> [FIND <package>])
#     a plain library or a find_package() target (Threads::Threads), always
#     private: in kmq.pc under Libs.private, in kmqConfig.cmake as
#     find_dependency(<package>) when FIND is given.
# Both append to KMQ_DEPS (every dependency, for the components),
# KMQ_PUBLIC_DEPS and KMQ_PRIVATE_DEPS (for the combined libraries): they are
# macros so that those lists, and pkg_check_modules' variables, land in the
# caller's scope as before.
#
# Components (each folder's CMakeLists.txt, after its add_library):
#   kmq_add_component(<static library target>)
#     compiles it as position-independent code and adds its objects to
#     libkmq.so and libkmq.a. A folder's include directories, definitions and
#     compile options stay on its own target: the combined libraries reuse the
#     objects, nothing is compiled twice.

macro(kmq_pkg_dependency prefix module)
  cmake_parse_arguments(_kd "PUBLIC" "" "" ${ARGN})
  pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET ${module})
  list(APPEND KMQ_DEPS PkgConfig::${prefix})
  if(_kd_PUBLIC)
    list(APPEND KMQ_PUBLIC_DEPS PkgConfig::${prefix})
    set_property(GLOBAL APPEND PROPERTY KMQ_PC_REQUIRES ${module})
    set_property(GLOBAL APPEND PROPERTY KMQ_CONFIG_FIND
                 "kmq_find_pkg(${prefix} ${module} REQUIRED)")
  else()
    list(APPEND KMQ_PRIVATE_DEPS PkgConfig::${prefix})
    set_property(GLOBAL APPEND PROPERTY KMQ_PC_REQUIRES_PRIVATE ${module})
    set_property(GLOBAL APPEND PROPERTY KMQ_CONFIG_FIND_STATIC
                 "kmq_find_pkg(${prefix} ${module})")
  endif()
endmacro()

macro(kmq_lib_dependency item pcflag)
  cmake_parse_arguments(_kd "" "FIND" "" ${ARGN})
  list(APPEND KMQ_DEPS ${item})
  list(APPEND KMQ_PRIVATE_DEPS ${item})
  set_property(GLOBAL APPEND PROPERTY KMQ_PC_LIBS_PRIVATE ${pcflag})
  if(_kd_FIND)
    set_property(GLOBAL APPEND PROPERTY KMQ_CONFIG_FIND_STATIC
                 "kmq_find_package(${_kd_FIND})")
  endif()
endmacro()

function(kmq_add_component target)
  get_target_property(_type ${target} TYPE)
  if(NOT _type STREQUAL "STATIC_LIBRARY")
    message(FATAL_ERROR "kmq_add_component(${target}): a static library is "
                        "expected (its objects go into libkmq), not ${_type}")
  endif()
  # The objects are linked into libkmq.so too.
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  set_property(GLOBAL APPEND PROPERTY KMQ_COMPONENTS ${target})
endfunction()
