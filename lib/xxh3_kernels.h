// XXH3-128 with a custom secret, compiled once per instruction set: the
// library's own build of xxHash targets the architecture's baseline (SSE2 on
// x86-64), which hashes at about the speed of a memcpy; AVX2 hashes ~1.4x
// faster on the same core. Every variant returns the same digest for the
// same input (XXH3's output does not depend on the vector width), so the
// choice is invisible on disk.

#ifndef CKPTDB_LIB_XXH3_KERNELS_H_
#define CKPTDB_LIB_XXH3_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace ckptdb::xxh3 {

struct Digest128 {
  uint64_t low = 0;
  uint64_t high = 0;
};

struct Kernels {
  const char* name;
  Digest128 (*digest)(const void* data, size_t size, const unsigned char* secret,
                      size_t secret_size);
  // digest(source, size), copying the bytes to `copy` a cache-sized block at
  // a time, right after hashing the block: the source is read from memory once.
  Digest128 (*digest_and_copy)(const void* source, size_t size, void* copy,
                               const unsigned char* secret, size_t secret_size);
};

// Compiled for the architecture's baseline: runs everywhere.
Kernels Baseline();
#if defined(CKPTDB_HAVE_AVX2_KERNELS)  // x86-64 builds
// Compiled for AVX2: only for CPUs that have it.
Kernels Avx2();
#endif
// The fastest variant this CPU runs (chosen once, at first use).
const Kernels& Fastest();

}  // namespace ckptdb::xxh3

#endif  // CKPTDB_LIB_XXH3_KERNELS_H_
