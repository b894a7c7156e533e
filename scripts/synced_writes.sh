#!/bin/bash
# How many synced writes (fsync and fdatasync calls, each a wait for the
# disk) one save makes in a steady state: bench/synced_writes saves 1 step,
# then 11 steps, each into a new store, under strace; the difference over 10
# is one save's (its chunk file, the commit, retention of the oldest step and
# the garbage collection that follows), the opening and closing cancelling out.
#   bash scripts/synced_writes.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
source scripts/packages.sh
install_missing strace
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for steps in 1 11; do
  strace -f -c -e trace=fsync,fdatasync -o "$scratch/count.$steps" \
    "$build/bench/synced_writes" "$steps" "$scratch/store.$steps"
done
# calls STEPS SYSCALL: how many times the run of STEPS saves made SYSCALL.
calls() {
  awk -v call="$2" '$NF == call { print $4; found = 1 } END { if (!found) print 0 }' \
    "$scratch/count.$1"
}
fdatasync=$(( $(calls 11 fdatasync) - $(calls 1 fdatasync) ))
fsync=$(( $(calls 11 fsync) - $(calls 1 fsync) ))
awk -v fdatasync="$fdatasync" -v fsync="$fsync" 'BEGIN {
  printf "synced writes per save (8 tensors of 64 KiB, new bytes, retention keeping 2): "
  printf "fdatasync %.1f, fsync %.1f, total %.1f\n", fdatasync / 10, fsync / 10, (fdatasync + fsync) / 10
}'
