#!/bin/bash
# Builds and runs the test suite under a sanitizer, in its own build
# directory: build-asan (AddressSanitizer + UndefinedBehaviorSanitizer) or
# build-tsan (ThreadSanitizer). Without Python and MPI (their runtimes are
# not built with the sanitizers); multiprocess_test runs the same protocol
# between threads. Prints meson's summary; scripts/test.sh adds
# the counts to its closing line.
#   bash scripts/sanitize.sh asan|tsan
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in
  asan) sanitize=address,undefined ;;
  tsan) sanitize=thread ;;
  *) echo "usage: bash scripts/sanitize.sh asan|tsan" >&2; exit 2 ;;
esac
dir=build-$1
bash scripts/setup.sh >/dev/null || exit 1
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" --buildtype=debug -Db_sanitize="$sanitize" -Db_lundef=false \
    -Dbenchmarks=disabled -Dpython=disabled -Dmpi=disabled -Dwerror="$([ -n "${CKPTDB_WERROR:-}" ] && echo true || echo false)" \
    >/dev/null || exit 1
fi
ninja -C "$dir" >/dev/null || exit 1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/test/tsan.supp"
# Sanitized code runs several times slower: give every test more time, and
# run a fifth of the damage matrix and a few rounds of its randomized run
# (the release build runs them whole).
export CKPTDB_DAMAGE_STRIDE=${CKPTDB_DAMAGE_STRIDE:-5}
export CKPTDB_DAMAGE_ROUNDS=${CKPTDB_DAMAGE_ROUNDS:-8}
meson test -C "$dir" --print-errorlogs --timeout-multiplier 4 --no-rebuild --suite unit "${@:2}"
