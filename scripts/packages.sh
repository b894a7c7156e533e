# Sourced by the scripts: install_missing PACKAGE... installs, from Debian's
# archive, those of the packages that are not installed yet.
install_missing() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# What building ckptdb needs.
BUILD_PACKAGES=(g++ pkg-config meson ninja-build python3 librocksdb-dev libflatbuffers-dev
                flatbuffers-compiler libzstd-dev libxxhash-dev libsnappy-dev nlohmann-json3-dev)

# The Python package (python/), for Debian's /usr/bin/python3, and its tests
# (python3-torch: torch tensors as leaves, ckptdb.pytorch, the example).
PYTHON_PACKAGES=(pybind11-dev python3-dev python3-numpy python3-pytest python3-torch)

# libckptdb-mpi (multi-process checkpoints over MPI), its tests under mpirun, and
# ckptdb.MpiCoordinator for Python programs (mpi4py).
MPI_PACKAGES=(libopenmpi-dev openmpi-bin python3-mpi4py)
