#!/bin/bash
# The multi-process tests: each runs mpi_checkpoint (test/mpi/mpi_checkpoint.cc)
# under mpirun, oversubscribed (4 ranks on 2 cores), and checks the outcome.
# Usage: run.sh MPI_CHECKPOINT SCENARIO SCRATCH_DIR
#   save_restore   save on 4 ranks; restore on 1, 2, 3, 4 and 8 ranks
#   kill_rank      a rank SIGKILLed in the middle of a save: no step of it is
#                  visible, and the restarted job saves again
#   evaluator      a read-only evaluator follows a 4-rank trainer
#   active         active_processes: 3 of 4 ranks save, the 4th opens nothing
set -euo pipefail
program=$1
scenario=$2
scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
store=$scratch/store

run() {  # run RANKS ARGS...: mpirun with what these machines need
  local ranks=$1
  shift
  local as_root=()
  [ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)
  mpirun "${as_root[@]}" --oversubscribe -n "$ranks" --bind-to none --mca btl self,vader \
    "$program" "$@"
}

steps() { "$program" steps "$store" | tr '\n' ' '; }

case "$scenario" in
  save_restore)
    run 4 save "$store" --first 1 --last 5
    [ "$(steps)" = "3 4 5 " ] || { echo "steps after the save: $(steps)"; exit 1; }
    for ranks in 1 2 3 4 8; do
      run "$ranks" restore "$store" --step 5
      run "$ranks" restore "$store" --step 3
    done
    ;;
  kill_rank)
    if run 4 save "$store" --first 1 --last 6 --kill-rank 2 --kill-at 4; then
      echo "the job survived the SIGKILL of a rank"
      exit 1
    fi
    # Step 3 committed before step 4 began; step 4 never did.
    [ "$(steps)" = "1 2 3 " ] || { echo "steps after the kill: $(steps)"; exit 1; }
    run 4 save "$store" --first 4 --last 6
    [ "$(steps)" = "4 5 6 " ] || { echo "steps after the restart: $(steps)"; exit 1; }
    run 2 restore "$store" --step 6
    ;;
  evaluator)
    "$program" evaluate "$store" --until 8 > "$scratch/evaluator.log" 2>&1 &
    evaluator=$!
    run 4 save "$store" --first 1 --last 8
    wait "$evaluator" || { cat "$scratch/evaluator.log"; exit 1; }
    cat "$scratch/evaluator.log"
    ;;
  *)
    echo "unknown scenario $scenario"
    exit 2
    ;;
esac
echo "$scenario: ok"
