#!/bin/bash
# The benchmark suite in one command: builds (installing what is missing),
# runs bench/suite_bench and prints one table of ratios against baselines
# measured in the same run.
#   bash scripts/bench.sh            # 256 MiB of state, 5 rounds per comparison
#   bash scripts/bench.sh --quick    # 32 MiB, 2 rounds: a smoke test (CI)
#   bash scripts/bench.sh --full     # 1 GiB, and GC of 1M chunks
# CKPTDB_BENCH_ROUNDS overrides the rounds. Run as root: restores are timed
# after dropping the whole page cache (otherwise only the files' pages).
# Then the Python package against torch.save / torch.load and the C++ API
# (bench/python_bench.py, with Debian's /usr/bin/python3), when it was built.
# Except with --quick, ends with ckpt-inspect import against dd
# (scripts/bench_import.sh), the synced writes of one save
# (scripts/synced_writes.sh) and the multi-process figures
# (scripts/mpi_bench.sh: 4 MPI processes against one, metadata and
# coordination costs).
# CKPTDB_BENCH_BINARY names an already built suite_bench (the test suite's
# smoke test): nothing is installed or built then.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
megabytes=256
rounds=${CKPTDB_BENCH_ROUNDS:-5}
filter=.
case "${1:-}" in
  --quick) megabytes=32; rounds=${CKPTDB_BENCH_ROUNDS:-2}; filter='^(save/|save_delta/|restore_|async|resave|gc/10k)' ;;
  --full) megabytes=1024 ;;
  "") ;;
  *) echo "usage: bash scripts/bench.sh [--quick|--full]" >&2; exit 2 ;;
esac
binary=${CKPTDB_BENCH_BINARY:-}
if [ -z "$binary" ]; then
  bash scripts/setup.sh >/dev/null
  binary=./build/bench/suite_bench
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
CKPTDB_BENCH_MB=$megabytes CKPTDB_BENCH_ROUNDS=$rounds "$binary" --benchmark_filter="$filter" \
  --benchmark_format=json --benchmark_out="$out" >/dev/null
python3 scripts/bench_table.py "$out"
build_dir=$(dirname "$(dirname "$binary")")
if [ -x "$build_dir/bench/cpp_side" ] && [ -d "$build_dir/python/ckptdb" ]; then
  echo
  PYTHONPATH="$build_dir/python" /usr/bin/python3 bench/python_bench.py \
    --cpp-side "$build_dir/bench/cpp_side" --megabytes "$megabytes" --rounds "$rounds"
fi
if [ -z "${CKPTDB_BENCH_BINARY:-}" ] && [ "$megabytes" -ne 32 ]; then
  bash scripts/bench_import.sh 256 5 1024 | grep -v '^round'
  echo
  bash scripts/synced_writes.sh build
  if [ -x build/bench/mpi_bench ]; then
    echo
    bash scripts/mpi_bench.sh build "$megabytes" "$rounds"
  fi
fi
