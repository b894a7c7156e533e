#!/bin/bash
# ckpt-inspect import against the copy a user would make instead, measured in
# the same run: `dd bs=4M conv=fsync` of the same file, interleaved round by
# round (dd, import, dd, import, ...), each side after a sync, both reading
# the file from the page cache. Then the import's peak memory on a larger
# file, sampled from /proc every 10 ms: RssAnon (memory of its own) and
# RssFile (mapped file pages, which the kernel may drop at any time).
#   bash scripts/bench_import.sh [MEGABYTES [ROUNDS [RSS_MEGABYTES]]]
# (defaults 256, 5 and 1024). Uses ./build (run scripts/setup.sh first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
megabytes=${1:-256}
rounds=${2:-5}
rss_megabytes=${3:-1024}
tool=./build/tools/ckpt-inspect
make_file=./build/bench/make_trained_file
work=$(mktemp -d "${CKPTDB_BENCH_DIR:-${TMPDIR:-/tmp}}/ckptdb-import-bench-XXXXXX")
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
"$make_file" "$work/state.safetensors" "$megabytes"
cat "$work/state.safetensors" >/dev/null
ratios=()
for round in $(seq "$rounds"); do
  sync
  start=$(now)
  dd if="$work/state.safetensors" of="$work/copy" bs=4M conv=fsync status=none
  dd_seconds=$(awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }')
  rm -f "$work/copy"
  sync
  start=$(now)
  "$tool" import "$work/store-$round" "$work/state.safetensors" --step 1 >/dev/null
  import_seconds=$(awk -v a="$(now)" -v b="$start" 'BEGIN { print a - b }')
  rm -rf "$work/store-$round"
  ratios+=("$(awk -v a="$dd_seconds" -v b="$import_seconds" 'BEGIN { print a / b }')")
  printf 'round %d: dd %.3f s, import %.3f s\n' "$round" "$dd_seconds" "$import_seconds"
done
printf '%s\n' "${ratios[@]}" | sort -g | awk -v mb="$megabytes" '
  { r[NR] = $1 }
  END {
    median = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
    printf "import speed / dd bs=4M conv=fsync speed, %d MiB trained float32: median %.2fx (min %.2f, max %.2f, %d rounds; target >= 0.5)\n", mb, median, r[1], r[NR], NR
  }'

rm -f "$work/state.safetensors"
"$make_file" "$work/big.safetensors" "$rss_megabytes"
"$tool" import "$work/store-rss" "$work/big.safetensors" --step 1 >/dev/null &
pid=$!
peak_anon=0
peak_file=0
while kill -0 "$pid" 2>/dev/null; do
  read -r anon file < <(awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print a + 0, f + 0 }' \
    "/proc/$pid/status" 2>/dev/null || echo "0 0")
  [ "$anon" -gt "$peak_anon" ] && peak_anon=$anon
  [ "$file" -gt "$peak_file" ] && peak_file=$file
  sleep 0.01
done
wait "$pid"
printf 'import of a %d MiB file: peak RssAnon %d MiB, peak RssFile %d MiB (mapped file pages)\n' \
  "$rss_megabytes" $((peak_anon / 1024)) $((peak_file / 1024))
