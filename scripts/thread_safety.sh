#!/bin/bash
# Checks the lock discipline stated in lib/ (GUARDED_BY, REQUIRES, ... from
# lib/mutex.h) with clang's -Wthread-safety, as errors. Compiles each file of
# the library for syntax only, with the flags of an existing build directory
# (its compile_commands.json), so it takes seconds per file and builds
# nothing.
#   bash scripts/thread_safety.sh [BUILD_DIR]     # default: build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
command -v clang++ >/dev/null || { echo "thread_safety.sh: clang++ is missing (Debian's clang)" >&2; exit 2; }
[ -f "$build/compile_commands.json" ] || { echo "thread_safety.sh: no $build/compile_commands.json" >&2; exit 2; }
/usr/bin/python3 - "$build" <<'PY'
import json, shlex, subprocess, sys
build = sys.argv[1]
failed = 0
checked = 0
for entry in json.load(open(f"{build}/compile_commands.json")):
    source = entry["file"]
    if "/lib/" not in "/" + source or "libckptdb" not in entry["command"]:
        continue
    words = shlex.split(entry["command"])
    keep = []
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
            continue
        if word in ("-o", "-MQ", "-MF"):
            skip = True
            continue
        if word in ("-c", "-MD") or word.startswith("-fdiagnostics-color"):
            continue
        keep.append(word)
    command = ["clang++", "-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta",
               "-Werror=thread-safety", "-Wno-unknown-warning-option"] + keep
    result = subprocess.run(command, cwd=entry["directory"], capture_output=True, text=True)
    checked += 1
    if result.returncode != 0:
        failed += 1
        sys.stderr.write(result.stderr)
print(f"thread safety: {checked} files checked, {failed} failed")
sys.exit(1 if failed else 0)
PY
