#!/bin/bash
# The README's C++ example compiles and links, warning-free at -Wall -Wextra
# -Wpedantic, against the in-tree headers and libckptdb.so. The example is a
# fragment: its #include lines go first, then stand-ins for what it leaves to
# the reader (steps, train_one_step, loss), then the rest inside main().
# Usage: readme_example_test.sh SOURCE_ROOT LIBRARY
set -euo pipefail
source_root=$1
library=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
example=$(awk '/^```cpp$/ {inside = 1; next} /^```$/ && inside {exit} inside' "$source_root/README.md")
[ -n "$example" ] || { echo "no \`\`\`cpp block in README.md"; exit 1; }
{
  printf '%s\n' "$example" | grep '^#include'
  cat <<'STANDINS'
#include <cstdint>
namespace {
const int64_t steps = 3;
float loss = 0.5f;
void train_one_step() { loss *= 0.9f; }
}  // namespace
int main() {
STANDINS
  printf '%s\n' "$example" | grep -v '^#include'
  echo '  return 0;'
  echo '}'
} > "$scratch/example.cc"
c++ -std=c++20 -Wall -Wextra -Wpedantic -Werror -I"$source_root/include" \
    "$scratch/example.cc" -o "$scratch/example" "$library" || {
  echo "--- the program compiled (from README.md):"; cat -n "$scratch/example.cc"; exit 1; }
echo "README example: compiled and linked without a warning"
