#!/bin/bash
# Installs the Debian 12 packages ckptdb needs (only those missing) and builds
# it in ./build. Run by the other scripts; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/packages.sh
install_missing "${BUILD_PACKAGES[@]}" libgtest-dev libgmock-dev libbenchmark-dev

[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
