#!/bin/bash
# The benchmark suite in one command: builds (installing what is missing),
# runs bench/suite_bench and prints one table of ratios against baselines
# measured in the same run.
#   bash scripts/bench.sh            # 256 MiB of state
#   bash scripts/bench.sh --quick    # 32 MiB, a smoke test (CI)
#   bash scripts/bench.sh --full     # 1 GiB, and GC of 1M chunks
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
megabytes=256
filter=.
case "${1:-}" in
  --quick) megabytes=32; filter='^(save_f32|save_bf16|restore|async|resave|gc/10k)' ;;
  --full) megabytes=1024 ;;
  "") ;;
  *) echo "usage: bash scripts/bench.sh [--quick|--full]" >&2; exit 2 ;;
esac
bash scripts/setup.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
CKPTDB_BENCH_MB=$megabytes ./build/bench/suite_bench --benchmark_filter="$filter" \
  --benchmark_format=json --benchmark_out="$out" >/dev/null
python3 scripts/bench_table.py "$out"
