#!/bin/bash
# The main job: install what is missing, build, run the training demo (save,
# crash, resume bit-exact, prune) on a store in ./demo_run, then look inside
# the store with ckpt-inspect; then the multi-process demo: a 4-process MPI
# run (./demo_mpi_run) loses a rank, resumes on 2 processes, and ends with
# the same bits as an uninterrupted run. Every path it writes is ignored by
# git. --no-setup skips installing and building (the suite's
# demo_checkout_test runs it so, on what it built).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = "--no-setup" ]; then
  shift
else
  bash scripts/setup.sh >/dev/null
fi
./build/demo/train_demo --workdir demo_run "$@"
inspect=./build/tools/ckpt-inspect
for command in "list demo_run" "show demo_run latest" "stats demo_run" "verify demo_run" \
               "diff demo_run 50 60"; do
  echo
  echo "\$ ckpt-inspect $command"
  $inspect $command
done

# ---- Multi-process (MPI) ----
[ -x build/demo/mpi_train_demo ] || { echo "mpi_train_demo was not built (no MPI)"; exit 1; }
mpi() {  # mpi RANKS ARGS...
  local ranks=$1 as_root=()
  shift
  [ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)
  mpirun "${as_root[@]}" --oversubscribe -n "$ranks" --bind-to none --mca btl self,vader \
    ./build/demo/mpi_train_demo "$@"
}
rm -rf demo_mpi_run demo_mpi_reference
echo
echo "\$ mpirun -n 4 mpi_train_demo --workdir demo_mpi_run --steps 40 --kill-rank 2 --kill-at 23"
if mpi 4 --workdir demo_mpi_run --steps 40 --kill-rank 2 --kill-at 23 2>demo_mpi_killed.log; then
  echo "the run survived the kill"
  exit 1
fi
echo "(mpirun ended the job when rank 2 died: $(grep -c . demo_mpi_killed.log) lines in demo_mpi_killed.log)"
echo
echo "\$ mpirun -n 2 mpi_train_demo --workdir demo_mpi_run --steps 40"
resumed_run=$(mpi 2 --workdir demo_mpi_run --steps 40)
echo "$resumed_run"
resumed=$(grep checksum <<<"$resumed_run")
echo
echo "\$ mpirun -n 1 mpi_train_demo --workdir demo_mpi_reference --steps 40   # never interrupted"
reference=$(mpi 1 --workdir demo_mpi_reference --steps 40 | grep checksum)
echo "$reference"
if [ "${resumed##* }" != "${reference##* }" ]; then
  echo "the resumed run differs from the uninterrupted one"
  exit 1
fi
echo "bit-exact: the run resumed on 2 processes ends with the uninterrupted run's state"
for command in "list demo_mpi_run" "show demo_mpi_run latest" "verify demo_mpi_run"; do
  echo
  echo "\$ ckpt-inspect $command"
  $inspect $command
done
