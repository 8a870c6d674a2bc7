#!/usr/bin/env bash
# libkmq.so exports exactly the functions declared in the public headers:
#   - every dynamic symbol it defines is kmq_<name> (no kmq__* internal
#     function, no static helper, nothing of a dependency);
#   - every exported symbol is declared in a header kmq/*.h, and every
#     function declared there is exported (a declaration without a definition
#     would link in the tree's static tests but not for a user of the shared
#     library).
# The declarations are read from the preprocessed headers, so comments and
# examples in them do not count; static inline functions and type names
# (*_t, *_cb) are not symbols.
#   [CC=compiler] check_symbols.sh <libkmq.so> <include dir>...
# (the include dirs that hold kmq/*.h: the installed one, or the source and
# build trees' for the generated version.h)
set -euo pipefail
so=$1
shift
incs=("${@/#/-I}")
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kmq-symbols.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$so" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' |
  sort -u >"$tmp/exported"
for d in "$@"; do
  for h in "$d"/kmq/*.h; do
    [[ -e $h ]] && echo "#include <kmq/${h##*/}>"
  done
done >"$tmp/all.c"
"$cc" -E -P "${incs[@]}" "$tmp/all.c" | tr '\n' ' ' >"$tmp/pp"
# Function types are declared as "typedef R (kmq_x_cb)(...)" or
# "(*kmq_x_cb)": a name right after "(" is a type, not a function (a
# function may end in _cb too: kmq_conf_set_log_cb).
grep -oE '\([[:space:]]*\*?[[:space:]]*kmq_[a-z0-9_]+[[:space:]]*\)' "$tmp/pp" |
  grep -oE 'kmq_[a-z0-9_]+' | sort -u >"$tmp/fntypes"
grep -oE '\bkmq_[a-z0-9_]+[[:space:]]*\(' "$tmp/pp" | sed 's/[[:space:](]*$//' |
  grep -vE '_t$' | sort -u | comm -23 - "$tmp/fntypes" >"$tmp/called"
grep -oE 'static inline [^;{}()]*\bkmq_[a-z0-9_]+[[:space:]]*\(' "$tmp/pp" |
  grep -oE 'kmq_[a-z0-9_]+[[:space:]]*\($' | sed 's/[[:space:](]*$//' |
  sort -u >"$tmp/inline"
comm -23 "$tmp/called" "$tmp/inline" >"$tmp/declared"

status=0
report() { # title, file
  if [[ -s $2 ]]; then
    echo "check_symbols: $1:" >&2
    sed 's/^/  /' "$2" >&2
    status=1
  fi
}
grep -vE '^kmq_[a-z0-9]' "$tmp/exported" >"$tmp/foreign" || true
report "exported but not kmq's public prefix" "$tmp/foreign"
comm -23 "$tmp/exported" "$tmp/declared" | grep -E '^kmq_[a-z0-9]' >"$tmp/extra" || true
report "exported but not declared in kmq/*.h" "$tmp/extra"
comm -13 "$tmp/exported" "$tmp/declared" >"$tmp/missing"
report "declared in kmq/*.h but not exported" "$tmp/missing"
((status)) || echo "check_symbols: $(wc -l <"$tmp/exported") symbols, all public"
exit $status
