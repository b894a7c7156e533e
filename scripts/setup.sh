#!/bin/bash
# Installs the Debian 12 packages ckptdb needs (only those missing) and builds
# it in ./build. Run by the other scripts; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/packages.sh
install_missing "${BUILD_PACKAGES[@]}" libgtest-dev libgmock-dev libbenchmark-dev \
  "${PYTHON_PACKAGES[@]}" "${MPI_PACKAGES[@]}"

# CKPTDB_WERROR=1 (the test suite sets it): warnings are errors.
werror=false
[ -n "${CKPTDB_WERROR:-}" ] && werror=true
if [ -f build/build.ninja ]; then
  $werror && meson configure build -Dwerror=true >/dev/null
else
  meson setup build --buildtype=release -Dwerror=$werror
fi
ninja -C build
