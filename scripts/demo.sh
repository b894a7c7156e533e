#!/bin/bash
# The main job: install what is missing, build, then run the training demo
# (save, crash, resume bit-exact, prune) on a store in ./demo_run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
./build/demo/train_demo --workdir demo_run "$@"
