#!/bin/bash
# Profiles one benchmark of bench/suite_bench with perf, sampling only the
# measured call (a save, a restore, or an asynchronous save's blocking phase),
# and prints where the time goes: by symbol, then by thread.
#   bash scripts/profile.sh async_blocking_all_new [MEGABYTES]
#   bash scripts/profile.sh save_f32 1024
# The full report stays in perf.data.<benchmark> for `perf report -i`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: bash scripts/profile.sh BENCHMARK [MEGABYTES]" >&2
  exit 2
fi
benchmark=$1
megabytes=${2:-256}
source scripts/packages.sh
install_missing linux-perf
bash scripts/setup.sh >/dev/null
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
mkfifo "$control/ctl" "$control/ctl.ack"
data="perf.data.${benchmark//\//_}"
CKPTDB_PERF_CONTROL="$control/ctl" CKPTDB_BENCH_MB=$megabytes \
  perf record -q -g -D -1 --control "fifo:$control/ctl,$control/ctl.ack" -o "$data" \
  ./build/bench/suite_bench --benchmark_filter="^$benchmark/${megabytes}MB" 2>&1 | grep -v '^$'
echo
echo "== $benchmark, ${megabytes} MiB: samples by symbol (self) =="
perf report -i "$data" --no-children --sort dso,symbol -g none --percent-limit 1 2>/dev/null |
  grep -v '^#' | grep -v '^$'
echo
echo "== by thread =="
perf report -i "$data" --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$'
