#!/bin/bash
# How costs grow with leaves and shards, in one table: time and peak memory
# of each operation at 10^3 .. 10^6 leaves (10^3 .. 10^5 shards), from the
# C++ API (bench/scale_bench), the Python package (bench/python_scale_bench.py,
# when built), ckpt-inspect on the largest step, and the multi-process commit
# of 10^5 shards on 4 processes (bench/mpi_bench, when built).
#   bash scripts/scale_bench.sh [BUILD_DIR] [LARGEST]     # LARGEST: 1000000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
largest=${2:-1000000}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
lines=$scratch/lines
: > "$lines"
sizes=()
for ((n = 1000; n <= largest; n *= 10)); do sizes+=("$n"); done
# Each row in a process of its own: memory one row leaves behind must not
# count in the next.
for row in $("$build/bench/scale_bench" --benchmark_list_tests); do
  n=$(echo "$row" | cut -d/ -f2)
  [ "$n" -le "$largest" ] || continue
  CKPTDB_BENCH_DIR=$scratch "$build/bench/scale_bench" --benchmark_filter="^${row%%/iterations*}/" \
    --benchmark_format=json --benchmark_out="$scratch/row.json" > /dev/null
  /usr/bin/python3 - "$scratch/row.json" >> "$lines" <<'PY'
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    name, n = b["name"].split("/")[:2]
    extra = f" manifest_bytes_per_leaf={b['manifest_bytes_per_leaf']:.1f}" \
        if "manifest_bytes_per_leaf" in b else ""
    print(f"cpp operation={name} n={n} seconds={b['seconds']:.3f} "
          f"peak_rss_mb={b['peak_rss_mb']:.0f} before_rss_mb={b['before_rss_mb']:.0f}{extra}")
PY
done
timed() {  # timed OPERATION N COMMAND...: one line of time and peak memory
  local operation=$1 n=$2
  shift 2
  /usr/bin/time -f "%e %M" -o "$scratch/time" "$@" > /dev/null
  read -r seconds kilobytes < "$scratch/time"
  echo "inspect operation=$operation n=$n seconds=$seconds peak_rss_mb=$((kilobytes / 1024))" >> "$lines"
}
for n in "${sizes[@]}"; do
  # The store of n tiny leaves the restore rows of bench/scale_bench made.
  saved=$scratch/ckptdb_scale_saved_$n
  if [ -d "$saved" ]; then
    timed inspect_list "$n" "$build/tools/ckpt-inspect" list "$saved"
    timed inspect_show "$n" "$build/tools/ckpt-inspect" show "$saved" 1
    timed inspect_show_json "$n" "$build/tools/ckpt-inspect" --json show "$saved" 1
  fi
  if [ -f "$build/python/ckptdb/__init__.py" ]; then
    for operation in save_flat save restore; do
      [ "$operation" = restore ] || rm -rf "$scratch/python_$operation"
      PYTHONPATH=$build/python /usr/bin/python3 bench/python_scale_bench.py "$operation" "$n" \
        "$scratch/python_$([ "$operation" = restore ] && echo save || echo "$operation")" >> "$lines"
    done
  fi
done
if [ -x "$build/bench/mpi_bench" ]; then
  as_root=()
  [ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)
  for shards in 10000 100000; do
    rm -rf "$scratch/mpi"
    mpirun "${as_root[@]}" --oversubscribe -n 4 --bind-to none --mca btl self,vader \
      "$build/bench/mpi_bench" metadata "$scratch/mpi" "$shards" >> "$scratch/mpi_lines"
  done
  grep "step=2" "$scratch/mpi_lines" | sed 's/^metadata /mpi /' >> "$lines"
fi
/usr/bin/python3 - "$lines" <<'PY'
import sys
rows = [dict(f.split("=", 1) for f in line.split()[1:]) | {"side": line.split()[0]}
        for line in open(sys.argv[1]) if "=" in line]
names = {
    ("cpp", "build_flat"): "C++: Tree::Set of n keys (shuffled)",
    ("cpp", "build_nested"): "C++: SetPath of n nested leaves",
    ("cpp", "save"): "C++: save n tiny tensors",
    ("cpp", "restore_template"): "C++: restore into a template",
    ("cpp", "restore_tree"): "C++: RestoreTree",
    ("cpp", "item_metadata"): "C++: ItemMetadata",
    ("cpp", "restore_shards"): "C++: restore n shards into n shards",
    ("python-scale", "save_flat"): "Python: save a flat dict of n scalars",
    ("python-scale", "save"): "Python: save n tiny arrays (nested)",
    ("python-scale", "restore"): "Python: restore into a template",
    ("inspect", "inspect_list"): "ckpt-inspect list",
    ("inspect", "inspect_show"): "ckpt-inspect show STEP",
    ("inspect", "inspect_show_json"): "ckpt-inspect --json show STEP",
}
sizes = sorted({int(r["n"]) for r in rows if "operation" in r})


def table(title, cell):
    print(title)
    print(f"{'operation':<40}" + "".join(f"{n:>15,}" for n in sizes))
    for (side, operation), name in names.items():
        cells = {int(r["n"]): r for r in rows
                 if r["side"] == side and r.get("operation") == operation}
        if cells:
            print(f"{name:<40}" + "".join(f"{cell(cells[n]):>15}" if n in cells else " " * 15
                                          for n in sizes))


table("seconds per call, by n (leaves, or shards)", lambda r: f"{float(r['seconds']):.2f}")
print()
table("peak resident MiB during the call (in brackets: held before it, the state and the store)",
      lambda r: f"{float(r['peak_rss_mb']):.0f}" +
                (f" ({float(r['before_rss_mb']):.0f})" if "before_rss_mb" in r else ""))
print()
saves = {int(r["n"]): r for r in rows if r["side"] == "cpp" and r.get("operation") == "save"}
if saves:
    print(f"{'manifest bytes per leaf':<40}" +
          "".join(f"{float(saves[n]['manifest_bytes_per_leaf']):>15.1f}" if n in saves else " " * 15
                  for n in sizes))
for r in rows:
    if r["side"] == "mpi":
        print(f"multi-process save of {int(r['shards']):,} shards on {r['ranks']} processes: "
              f"{float(r['save_ms']) / 1000:.2f} s (coordination {float(r['coordination_ms']) / 1000:.2f} s), "
              f"manifest {int(r['manifest_bytes']) // 1024} KiB")
PY
