#!/bin/bash
# The whole test suite: install what is missing, build, run every test, and
# print one closing line "N passed, N failed" counting individual test cases
# (GoogleTest cases, plus each non-GoogleTest test program as one).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

results=build/test-results
rm -rf "$results"
mkdir -p "$results"
GTEST_OUTPUT="xml:$PWD/$results/" meson test -C build --print-errorlogs "$@"
meson_status=$?
python3 scripts/count_tests.py build/meson-logs/testlog.json "$results"
count_status=$?
[ $meson_status -eq 0 ] && [ $count_status -eq 0 ]
