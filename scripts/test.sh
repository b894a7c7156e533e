#!/bin/bash
# The whole test suite: installs what is missing, builds, and runs
#   1. every test in ./build (unit, cross-process, fault, model, install, demo,
#      multi-process under mpirun, and clang's thread-safety analysis of lib/);
#   2. the unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
#      (./build-asan) and the concurrency-heavy ones under ThreadSanitizer
#      (./build-tsan);
#   3. each libFuzzer target for 20 s on its corpus (./build-fuzz).
# Ends with one line "N passed, N failed" counting GoogleTest cases (and each
# other test program and fuzz target as one).
#   bash scripts/test.sh           # all of the above (~25 min from scratch on 2 cores)
#   bash scripts/test.sh --quick   # step 1 only
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
quick=false
[ "${1:-}" = "--quick" ] && quick=true
# Every build of the suite treats warnings as errors (scripts/setup.sh).
export CKPTDB_WERROR=1
# clang: the thread-safety check (a test of ./build) and the fuzz targets.
source scripts/packages.sh
install_missing clang libclang-rt-14-dev || { echo "0 passed, 1 failed"; exit 1; }
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

status=0
runs=()
# run DIR COMMAND...: runs a meson test command with GoogleTest XML reports.
run() {
  local dir=$1
  shift
  rm -rf "$dir/test-results"
  mkdir -p "$dir/test-results"
  GTEST_OUTPUT="xml:$PWD/$dir/test-results/" "$@" || status=1
  runs+=("$dir/meson-logs/testlog.json" "$dir/test-results")
}
run build meson test -C build --print-errorlogs
fuzz=()
if ! $quick; then
  run build-asan bash scripts/sanitize.sh asan
  run build-tsan bash scripts/sanitize.sh tsan checkpointer_test reader_test gc_test repair_test \
    model_test process_test save_decision_test multiprocess_test
  summary=$(mktemp)
  bash scripts/fuzz.sh 20 | tee "$summary" || status=1
  fuzz=(--fuzz "$summary")
fi
python3 scripts/count_tests.py "${runs[@]}" "${fuzz[@]}" || status=1
exit $status
