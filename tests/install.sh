#!/usr/bin/env bash
# kmq as a user gets it (issue 12): installs the build into a scratch prefix
# and, against that prefix only,
#   1. checks libkmq.so's symbols (tests/check_symbols.sh) and its soname,
#      and that each installed header compiles on its own and is included by
#      kmq/kmq.h;
#   2. builds examples/ with pkg-config (examples/Makefile,
#      PKG_CONFIG_PATH=<prefix>/<libdir>/pkgconfig) and runs `hello_kmq --dry`
#      (LD_LIBRARY_PATH=<prefix>/<libdir>); checks that
#      `pkg-config --static --libs kmq` lists what libkmq.a needs;
#   3. builds examples/ with CMake (examples/CMakeLists.txt, find_package(kmq)
#      with CMAKE_PREFIX_PATH=<prefix>) and runs both binaries: hello_kmq
#      (kmq::kmq, libkmq.so) and hello_kmq_static (kmq::kmq_static, libkmq.a).
# Nothing is written outside the scratch directory, removed on exit.
#   install.sh <build dir> <source dir> <libdir> <version> <C compiler>
#              <cmake generator> [sanitizer flags]
# Sanitizer flags (the ASan/TSan builds' -fsanitize=...) are added to the
# examples' compile and link: an instrumented libkmq needs an instrumented
# program.
set -euo pipefail
build=$1 src=$2 libdir=$3 version=$4 cc=$5 generator=$6 san=${7:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/kmq-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
step() { echo "install.sh: $*"; }
fail() { echo "install.sh: FAILED: $*" >&2; exit 1; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log" >&2; fail "cmake --install"; }
so=$prefix/$libdir/libkmq.so
for f in "$prefix/include/kmq/kmq.h" "$prefix/include/kmq/version.h" "$so" \
         "$prefix/$libdir/libkmq.a" "$prefix/$libdir/pkgconfig/kmq.pc" \
         "$prefix/$libdir/cmake/kmq/kmqConfig.cmake" \
         "$prefix/$libdir/cmake/kmq/kmqConfigVersion.cmake"; do
  [[ -e $f ]] || fail "not installed: ${f#"$prefix"/}"
done

step "headers"
for h in "$prefix"/include/kmq/*.h; do
  name=kmq/${h##*/}
  echo "#include <$name>" |
    "$cc" -fsyntax-only -Wall -Wextra -Werror -I"$prefix/include" -x c - ||
    fail "$name does not compile on its own"
  [[ $name == kmq/kmq.h ]] || grep -q "#include \"$name\"" "$prefix/include/kmq/kmq.h" ||
    fail "kmq/kmq.h does not include $name"
done

step "symbols"
CC=$cc bash "$src/tests/check_symbols.sh" "$so" "$prefix/include"
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == libkmq.so.* && -e $prefix/$libdir/$soname ]] ||
  fail "soname '$soname' is not an installed libkmq.so.*"
step "soname $soname"

# A program must print the library's version: the installed one.
run_dry() { # binary, environment...
  local bin=$1
  shift
  local out
  out=$(env "$@" "$bin" --dry 2>"$work/stderr") ||
    { cat "$work/stderr" >&2; fail "$bin --dry"; }
  grep -q "^hello_kmq: kmq $version (built against $version)" <<<"$out" ||
    fail "$bin --dry printed: $out"
  step "ran ${bin#"$work"/} --dry: $(head -n 1 <<<"$out")"
}

step "pkg-config (examples/Makefile)"
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
[[ $(pkg-config --modversion kmq) == "$version" ]] ||
  fail "pkg-config --modversion kmq: $(pkg-config --modversion kmq)"
static_libs=" $(pkg-config --static --libs kmq) "
for l in -lkmq -lrdkafka -ljansson -lck -lcrypto -pthread -lm; do
  [[ $static_libs == *" $l "* ]] ||
    fail "pkg-config --static --libs kmq lacks $l: $static_libs"
done
mkdir "$work/make"
cp "$src/examples/hello_kmq.c" "$src/examples/Makefile" "$work/make/"
make -C "$work/make" CC="$cc" CFLAGS="-O1 -g -Werror $san" LDFLAGS="$san" \
  >"$work/make.log" 2>&1 || { cat "$work/make.log" >&2; fail "make"; }
run_dry "$work/make/hello_kmq" LD_LIBRARY_PATH="$prefix/$libdir"
unset PKG_CONFIG_PATH

step "CMake find_package(kmq) (examples/CMakeLists.txt)"
# The package registry could hold another kmq: only the prefix counts.
cmake -S "$src/examples" -B "$work/cmake" -G "$generator" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror $san" \
  -DCMAKE_EXE_LINKER_FLAGS="$san" >"$work/cmake.log" 2>&1 &&
  cmake --build "$work/cmake" >>"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log" >&2; fail "cmake build of examples/"; }
readelf -d "$work/cmake/hello_kmq" | grep -q "NEEDED.*\[$soname\]" ||
  fail "hello_kmq does not load $soname"
if readelf -d "$work/cmake/hello_kmq_static" | grep -q 'NEEDED.*libkmq'; then
  fail "hello_kmq_static loads libkmq.so"
fi
# No LD_LIBRARY_PATH: CMake's build-tree rpath points at the prefix.
run_dry "$work/cmake/hello_kmq"
run_dry "$work/cmake/hello_kmq_static"
step "ok"
