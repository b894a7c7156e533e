// Compiled twice by lib/meson.build: once as is (Baseline), once on x86-64
// with -mavx2 -DCKPTDB_XXH3_VARIANT=Avx2. XXH_INLINE_ALL gives each copy
// private (static) xxHash functions built for its own instruction set.

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "xxh3_kernels.h"

#ifndef CKPTDB_XXH3_VARIANT
#define CKPTDB_XXH3_VARIANT Baseline
#endif
#define CKPTDB_STRINGIFY(x) #x
#define CKPTDB_NAME(x) CKPTDB_STRINGIFY(x)

namespace ckptdb::xxh3 {
namespace {

Digest128 Digest(const void* data, size_t size, const unsigned char* secret, size_t secret_size) {
  XXH128_hash_t hash = XXH3_128bits_withSecret(data, size, secret, secret_size);
  return Digest128{hash.low64, hash.high64};
}

Digest128 DigestAndCopy(const void* source, size_t size, void* copy, const unsigned char* secret,
                        size_t secret_size) {
  constexpr size_t kBlock = 128u << 10;  // well inside a core's L2 cache
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  XXH3_128bits_reset_withSecret(&state, secret, secret_size);
  const auto* from = static_cast<const unsigned char*>(source);
  auto* to = static_cast<unsigned char*>(copy);
  for (size_t done = 0; done < size; done += kBlock) {
    const size_t block = std::min(kBlock, size - done);
    XXH3_128bits_update(&state, from + done, block);
    std::memcpy(to + done, from + done, block);
  }
  XXH128_hash_t hash = XXH3_128bits_digest(&state);
  return Digest128{hash.low64, hash.high64};
}

}  // namespace

Kernels CKPTDB_XXH3_VARIANT() {
  return Kernels{CKPTDB_NAME(CKPTDB_XXH3_VARIANT), &Digest, &DigestAndCopy};
}

}  // namespace ckptdb::xxh3
