#!/bin/bash
# The multi-process tests: each runs mpi_checkpoint (test/mpi/mpi_checkpoint.cc)
# under mpirun, oversubscribed (4 ranks on 2 cores), and checks the outcome.
# Usage: run.sh MPI_CHECKPOINT SCENARIO SCRATCH_DIR
#   save_restore   save on 4 ranks; restore on 1, 2, 3, 4 and 8 ranks
#   kill_rank      a rank SIGKILLed in the middle of a save: no step of it is
#                  visible, and the restarted job saves again
#   evaluator      a read-only evaluator follows a 4-rank trainer
#   active         active_processes: 3 of 4 ranks save (rank 3 the primary),
#                  the 4th is refused
#   crash_loop     rounds of a 4-rank job saving step after step, a random
#                  rank SIGKILLed at a random moment each round: every step
#                  left restores exactly, and the next round resumes after it
#                  (seed: CKPTDB_CRASH_SEED, printed)
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
  active)
    # Rank 2 takes no part; rank 3 is the primary.
    run 4 save "$store" --first 1 --last 4 --inactive 2 --primary 3
    [ "$(steps)" = "2 3 4 " ] || { echo "steps: $(steps)"; exit 1; }
    run 4 restore "$store" --step 4 --inactive 2 --primary 3
    run 2 restore "$store" --step 3
    ;;
  crash_loop)
    seed=${CKPTDB_CRASH_SEED:-$RANDOM}
    echo "CKPTDB_CRASH_SEED=$seed"
    RANDOM=$seed
    pids=$scratch/pids
    mkdir -p "$pids"
    next=1
    for round in 1 2 3 4 5 6; do
      rm -f "$pids"/*
      run 4 save "$store" --first "$next" --last $((next + 30)) --step-ms 30 --pid-dir "$pids" \
        > "$scratch/round-$round.log" 2>&1 &
      job=$!
      # mpirun takes about 0.3 s to start the ranks; the 31 steps about 1.2 s.
      delay_ms=$((300 + RANDOM % 1300))
      sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
      victim=$((RANDOM % 4))
      if [ -f "$pids/rank-$victim" ]; then kill -9 "$(cat "$pids/rank-$victim")" 2>/dev/null || true; fi
      wait "$job" || true
      "$program" check "$store"
      last=$("$program" steps "$store" | tail -n 1)
      echo "round $round: rank $victim killed after ${delay_ms} ms; steps now: $(steps)"
      next=$((${last:-0} + 1))
    done
    [ "$next" -gt 1 ] || { echo "no step was ever saved"; exit 1; }
    ;;
  *)
    echo "unknown scenario $scenario"
    exit 2
    ;;
esac
echo "$scenario: ok"
