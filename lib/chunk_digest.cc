#include "chunk_digest.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <random>

#include "coding.h"
#include "xxh3_kernels.h"

namespace ckptdb {

std::string ChunkDigest::ToHex() const { return HexEncode(ToBytes()); }

// Here rather than in xxh3_kernels.cc, which is compiled once per
// instruction set.
const xxh3::Kernels& xxh3::Fastest() {
  static const Kernels fastest = [] {
#if defined(CKPTDB_HAVE_AVX2_KERNELS)
    if (__builtin_cpu_supports("avx2")) return Avx2();
#endif
    return Baseline();
  }();
  return fastest;
}

ChunkHasher::ChunkHasher(std::string_view secret)
    : secret_(secret.begin(), secret.end()), kernels_(&xxh3::Fastest()) {
  assert(secret_.size() == kSecretSize);
}

ChunkDigest ChunkHasher::Digest(const void* data, size_t size) const {
  xxh3::Digest128 hash = kernels_->digest(data, size, secret_.data(), secret_.size());
  return ChunkDigest{hash.low, hash.high};
}

ChunkDigest ChunkHasher::DigestAndCopy(const void* source, size_t size, void* copy) const {
  xxh3::Digest128 hash =
      kernels_->digest_and_copy(source, size, copy, secret_.data(), secret_.size());
  return ChunkDigest{hash.low, hash.high};
}

std::string ChunkHasher::NewSecret() {
  // std::random_device reads the kernel's entropy source (getrandom) on Linux.
  std::random_device entropy;
  std::string secret(kSecretSize, '\0');
  for (char& c : secret) c = static_cast<char>(entropy() & 0xff);
  return secret;
}

}  // namespace ckptdb
