#!/bin/bash
# The README's first command leaves the checkout as it was: every file the
# demo writes (its stores, the killed MPI run's log) is ignored by git. Runs
# scripts/demo.sh on the binaries already built, and compares git's view of
# the checkout before and after.
# Usage: demo_checkout_test.sh SOURCE_ROOT
set -uo pipefail
cd "$1" || exit 1
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "not a git checkout: nothing to compare"
  exit 77
fi
before=$(git status --porcelain --untracked-files=all)
output=$(bash scripts/demo.sh --no-setup 2>&1) || {
  printf '%s\n' "$output" | tail -n 20
  echo "the demo failed"
  exit 1
}
after=$(git status --porcelain --untracked-files=all)
if [ "$before" != "$after" ]; then
  echo "the demo changed the checkout (paths git does not ignore):"
  diff <(printf '%s\n' "$before") <(printf '%s\n' "$after")
  exit 1
fi
echo "the demo left the checkout as it was"
