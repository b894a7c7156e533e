#!/bin/bash
# Multi-process checkpoints measured with bench/mpi_bench under mpirun
# (oversubscribed: on 2 cores there is no speed-up to expect; the point is
# what coordinating costs):
#   1. metadata: 10,000 one-row shards in all over 1, 2, 4 and 8 processes:
#      manifest size, save time, coordination time, bytes gathered;
#   2. throughput: the same MEGABYTES of float32 state saved and restored by 4
#      processes and by 1, ROUNDS rounds interleaved, each on a new store;
#      ratios 4-process / 1-process as median (min-max) of the rounds;
#   3. the Python package's 4-process save and restore (mpi4py,
#      bench/python_mpi_bench.py, the same state) against the C++ API's, in
#      the same rounds.
#   bash scripts/mpi_bench.sh [BUILD_DIR] [MEGABYTES] [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
megabytes=${2:-256}
rounds=${3:-5}
binary=$build/bench/mpi_bench
[ -x "$binary" ] || { echo "no $binary (built when MPI and Google Benchmark are present)"; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)
# The Python package's side, when it and mpi4py are there.
python_bench=
if [ -f "$build/python/ckptdb/__init__.py" ] && /usr/bin/python3 -c 'import mpi4py' 2>/dev/null; then
  python_bench=bench/python_mpi_bench.py
fi
mpi() {  # mpi RANKS PROGRAM ARGS...: on a new store
  local ranks=$1
  shift
  rm -rf "$scratch/store"
  mpirun "${as_root[@]}" --oversubscribe -n "$ranks" --bind-to none --mca btl self,vader "$@"
}
{
  for ranks in 1 2 4 8; do mpi "$ranks" "$binary" metadata "$scratch/store" 10000; done
  for ((round = 0; round < rounds; ++round)); do
    mpi 1 "$binary" throughput "$scratch/store" "$megabytes"
    mpi 4 "$binary" throughput "$scratch/store" "$megabytes"
    if [ -n "$python_bench" ]; then
      mpi 4 env PYTHONPATH="$build/python" /usr/bin/python3 "$python_bench" "$scratch/store" \
        "$megabytes"
    fi
  done
} > "$scratch/lines"
python3 - "$scratch/lines" <<'PY'
import statistics
import sys

rows = [dict(field.split("=", 1) for field in line.split()[1:]) | {"kind": line.split()[0]}
        for line in open(sys.argv[1]) if "=" in line]
print("multi-process metadata: 10,000 one-row shards of 100 float32 tensors, second save "
      "(every chunk changed)")
print(f"{'processes':>9} {'manifest':>10} {'save':>9} {'coordination':>13} {'gathered':>10}")
for row in rows:
    if row["kind"] == "metadata" and row["step"] == "2":
        print(f"{row['ranks']:>9} {int(row['manifest_bytes']) / 1024:>8.0f} K "
              f"{float(row['save_ms']):>6.0f} ms {float(row['coordination_ms']):>10.1f} ms "
              f"{int(row['gathered_bytes']) / 1024:>8.0f} K")
one = [r for r in rows if r["kind"] == "throughput" and r["ranks"] == "1"]
four = [r for r in rows if r["kind"] == "throughput" and r["ranks"] == "4"]
python = [r for r in rows if r["kind"] == "python-throughput"]


def compare(title, mine, theirs, my_name, their_name):
    """Throughput of two sides measured in the same rounds: medians, ratio per round."""
    print()
    print(title)
    print(f"{'measurement':<34} {my_name:>8} {their_name:>8} {'ratio: median (min-max)':>26}")
    for key, name in (("save_gbps", "save until committed (GB/s)"),
                      ("restore_gbps", "restore, every process its rows")):
        ratios = [float(m[key]) / float(t[key]) for m, t in zip(mine, theirs)]
        print(f"{name:<34} {statistics.median(float(m[key]) for m in mine):>8.3f} "
              f"{statistics.median(float(t[key]) for t in theirs):>8.3f} "
              f"{statistics.median(ratios):>10.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if one:
    compare(f"multi-process throughput: {one[0]['megabytes']} MiB of float32 state, 4 processes "
            f"vs 1, {len(one)} interleaved rounds (restore from the page cache, right after the "
            f"save)", four, one, "4 procs", "1 proc")
    coordination = [float(f["coordination_ms"]) for f in four]
    print(f"{'coordination per save, 4 procs (ms)':<34} {statistics.median(coordination):>8.1f}"
          f"   (min-max {min(coordination):.1f}-{max(coordination):.1f})")
if python:
    compare(f"4 processes, the Python package (mpi4py) vs the C++ API: {python[0]['megabytes']} "
            f"MiB of float32 state, {len(python)} interleaved rounds", python, four, "Python", "C++")
PY
