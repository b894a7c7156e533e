#!/bin/bash
# Builds and installs the project into a fresh prefix, then runs what a user
# of that install runs, each with a clean environment (no LD_LIBRARY_PATH):
# the installed ckpt-inspect, a consumer built with pkg-config and g++, and
# one built as a meson project using dependency('ckptdb'), and the Python
# package with Debian's interpreter. All round-trip a tensor.
# Usage: install_test.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
source_root=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
prefix=$scratch/prefix

meson setup "$scratch/build" "$source_root" --prefix="$prefix" --buildtype=release \
    -Dtests=disabled -Dbenchmarks=disabled >/dev/null
ninja -C "$scratch/build" >/dev/null
meson install -C "$scratch/build" --no-rebuild --quiet >/dev/null
pc_file=$(find "$prefix" -name ckptdb.pc | head -n 1)
[ -n "$pc_file" ] || { echo "ckptdb.pc was not installed"; exit 1; }
clean_env=(env -i PATH=/usr/bin:/bin)

# 1. the installed tool
"${clean_env[@]}" "$prefix/bin/ckpt-inspect" --help >/dev/null

# 2. pkg-config + g++
export PKG_CONFIG_PATH=$(dirname "$pc_file")
g++ -std=c++20 "$source_root/test/consumer/consumer.cc" -o "$scratch/consumer_pc" \
    $(pkg-config --cflags --libs ckptdb)
"${clean_env[@]}" "$scratch/consumer_pc" "$scratch/store_pc"
"${clean_env[@]}" "$prefix/bin/ckpt-inspect" verify "$scratch/store_pc" >/dev/null

# 3. a meson project
meson setup "$scratch/consumer_build" "$source_root/test/consumer" >/dev/null
ninja -C "$scratch/consumer_build" >/dev/null
"${clean_env[@]}" "$scratch/consumer_build/consumer" "$scratch/store_meson"
# 4. the Python package (built when pybind11-dev and python3-numpy are there)
python_dir=$prefix/lib/python$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')/dist-packages
python_ran="the Python package was not built"
if [ -d "$python_dir/ckptdb" ]; then
  "${clean_env[@]}" PYTHONPATH="$python_dir" /usr/bin/python3 -c '
import sys, numpy as np, ckptdb
with ckptdb.Checkpointer(sys.argv[1], save_interval_steps=1) as ckpt:
    ckpt.save({"w": np.arange(6, dtype=np.float32)}, step=0)
    assert (ckpt.restore()["w"] == np.arange(6, dtype=np.float32)).all()
' "$scratch/store_python"
  "${clean_env[@]}" "$prefix/bin/ckpt-inspect" verify "$scratch/store_python" >/dev/null
  python_ran="the Python package from $python_dir"
fi
echo "install_test: ckpt-inspect and both consumers ran from $prefix with a clean environment; $python_ran"
