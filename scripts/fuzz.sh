#!/bin/bash
# Builds the libFuzzer targets (test/fuzz) in ./build-fuzz with clang and runs
# each for SECONDS_PER_TARGET seconds (default 30), one after the other, on a
# temporary copy of its checked-in corpus (test/fuzz/corpus/<target>, which
# is left as it is). Prints the number of executions of each target and exits
# non-zero if any target crashed (a sanitizer report, a failed property, a
# leak, a timeout or running out of memory). Crashing inputs are kept in
# build-fuzz/fuzz-artifacts/.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# UndefinedBehaviorSanitizer reports stop the target (UBSAN_OPTIONS
# halt_on_error=1) unless UBSAN_OPTIONS is already set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi
targets=(manifest chunk safetensors inspect part salvage)
# The seed corpus of each target (inspect takes files, as safetensors does):
# checked in under test/fuzz/corpus, except salvage's, a small store's table
# files and log, which make_corpus writes at every run (store files are
# never tracked).
declare -A corpus_of=([manifest]=manifest [chunk]=chunk [safetensors]=safetensors
  [inspect]=safetensors [part]=part [salvage]=salvage)

# What the build needs, plus clang and its sanitizer and libFuzzer runtimes.
source scripts/packages.sh
install_missing "${BUILD_PACKAGES[@]}" clang libclang-rt-14-dev

if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++ meson setup build-fuzz -Dfuzzers=enabled -Dtests=disabled -Dbenchmarks=disabled \
    --buildtype=debugoptimized
fi
meson compile -C build-fuzz "${targets[@]/%/_fuzzer}" make_corpus

: "${UBSAN_OPTIONS:=halt_on_error=1:print_stacktrace=1}"
export UBSAN_OPTIONS

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts=$PWD/build-fuzz/fuzz-artifacts
mkdir -p "$artifacts"

build-fuzz/test/fuzz/make_corpus "$work/generated"
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus=$work/corpus-$target
  seeds=test/fuzz/corpus/${corpus_of[$target]}
  [ "$target" = salvage ] && seeds=$work/generated/salvage
  cp -r "$seeds" "$corpus"
  log=$work/$target.log
  echo "== $target: ${seconds}s"
  status=0
  "build-fuzz/test/fuzz/${target}_fuzzer" "$corpus" -max_total_time="$seconds" \
    -max_len=65536 -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$target-" >"$log" 2>&1 || status=$?
  executions=$(awk '/^stat::number_of_executed_units:/ { n = $2 } END { print n }' "$log")
  if [ "$status" -ne 0 ]; then
    # The report, from the sanitizer's or libFuzzer's first error line.
    first=$(grep -n -m1 -E '==[0-9]+== ?ERROR|runtime error:|^SUMMARY:' "$log" |
      cut -d: -f1 || true)
    if [ -n "$first" ]; then sed -n "${first},$((first + 30))p" "$log"; else tail -n 40 "$log"; fi
    grep -E "^artifact_prefix=|Test unit written to" "$log" || true
    failed+=("$target")
    summary+=("$target: ${executions:-?} executions, FAILED (exit $status)")
  else
    summary+=("$target: ${executions:-?} executions, no crash")
  fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs in $artifacts)"
  exit 1
fi
