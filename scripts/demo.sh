#!/bin/bash
# The main job: install what is missing, build, run the training demo (save,
# crash, resume bit-exact, prune) on a store in ./demo_run, then look inside
# the store with ckpt-inspect.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null
./build/demo/train_demo --workdir demo_run "$@"
inspect=./build/tools/ckpt-inspect
for command in "list demo_run" "show demo_run latest" "stats demo_run" "verify demo_run" \
               "diff demo_run 50 60"; do
  echo
  echo "\$ ckpt-inspect $command"
  $inspect $command
done
