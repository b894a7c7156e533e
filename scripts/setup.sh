#!/bin/bash
# Installs the Debian 12 packages ckptdb needs (only those missing) and builds
# it in ./build. Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(g++ pkg-config meson ninja-build python3 librocksdb-dev libflatbuffers-dev
          flatbuffers-compiler libzstd-dev libxxhash-dev libgtest-dev libgmock-dev
          libbenchmark-dev nlohmann-json3-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
