#!/bin/bash
# libckptdb.so exports the public API and nothing else: every dynamic symbol
# it defines is in namespace ckptdb, and none belongs to the internals
# (storage, manifests, the save pipeline, ckpt-inspect's parts).
# Usage: exports_test.sh LIBRARY
set -euo pipefail
symbols=$(nm -D --defined-only "$1" | c++filt | sed 's/^[0-9a-f]* [A-Za-z] //')
count=$(printf '%s\n' "$symbols" | grep -c .)
# In namespace ckptdb: the name, not a return type, begins with "ckptdb::"
# (no space before the argument list).
foreign=$(printf '%s\n' "$symbols" |
  grep -v -E '^((vtable|typeinfo|typeinfo name) for )?ckptdb::[^ (]+(\(|$)' || true)
internal=$(printf '%s\n' "$symbols" | grep -E 'ckptdb::(Store|GenerationWriter|ChunkHasher|ChunkDigest|Manifest|DecodeManifest|EncodeManifest|FlattenTree|BuildTree|Parse|Safetensors|Verify|Repair|SavePipeline|PendingSave|StagingPool|CollectGarbage\(|MeasureGarbage|ParallelFor|Checkpointer::Impl::|CheckpointerAccess|Checkpointer::Checkpointer\(std::unique_ptr|StepHold::StepHold\(long)' || true)
if [ -n "$foreign" ] || [ -n "$internal" ]; then
  echo "libckptdb.so exports more than the public API:"
  printf '%s\n' "$foreign" "$internal" | grep . | head -n 40
  exit 1
fi
echo "libckptdb.so exports $count symbols, all public API"
