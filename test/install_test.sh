#!/bin/bash
# Installs the built project into a scratch root, then builds two consumers
# against the installed files only: one with pkg-config and g++, one as a
# meson project using dependency('ckptdb'). Both must round-trip a tensor.
# Usage: install_test.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
build_root=$1
source_root=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

meson install -C "$build_root" --no-rebuild --quiet --destdir "$scratch/root" >/dev/null
pc_file=$(find "$scratch/root" -name ckptdb.pc | head -n 1)
[ -n "$pc_file" ] || { echo "ckptdb.pc was not installed"; exit 1; }
lib_dir=$(dirname "$(find "$scratch/root" -name 'libckptdb.so' | head -n 1)")
export PKG_CONFIG_PATH=$(dirname "$pc_file")
export PKG_CONFIG_SYSROOT_DIR="$scratch/root"
export LD_LIBRARY_PATH="$lib_dir"

# 1. pkg-config + g++
g++ -std=c++20 "$source_root/test/consumer/consumer.cc" -o "$scratch/consumer_pc" \
    $(pkg-config --cflags --libs ckptdb)
"$scratch/consumer_pc" "$scratch/store_pc"

# 2. a meson project
meson setup "$scratch/consumer_build" "$source_root/test/consumer" >/dev/null
ninja -C "$scratch/consumer_build" >/dev/null
"$scratch/consumer_build/consumer" "$scratch/store_meson"
echo "install_test: both consumers built against the installed files and ran"
