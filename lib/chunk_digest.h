// ChunkDigest: the identity of a chunk, the XXH3-128 digest of its raw bytes
// keyed with the store's secret. The key stops crafted inputs (an imported
// file) from colliding with stored chunks on purpose: without the secret an
// attacker cannot predict digests.

#ifndef CKPTDB_LIB_CHUNK_DIGEST_H_
#define CKPTDB_LIB_CHUNK_DIGEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coding.h"

namespace ckptdb {
namespace xxh3 {
struct Kernels;
}  // namespace xxh3

struct ChunkDigest {
  uint64_t low = 0;
  uint64_t high = 0;

  friend bool operator==(const ChunkDigest&, const ChunkDigest&) = default;
  friend auto operator<=>(const ChunkDigest& a, const ChunkDigest& b) {
    return a.high != b.high ? a.high <=> b.high : a.low <=> b.low;
  }

  // 32 lower-case hex digits, high half first.
  std::string ToHex() const;
  // 16 bytes: high half then low half, each big-endian, so that byte order
  // equals digest order.
  std::string ToBytes() const;
  static ChunkDigest FromBytes(const char* sixteen_bytes);
};

// Inline: the chunk codec (delta chunks name their base) uses them, and its
// fuzzer links no hashing code.
inline std::string ChunkDigest::ToBytes() const {
  std::string bytes;
  bytes.reserve(16);
  AppendBigEndian64(&bytes, high);
  AppendBigEndian64(&bytes, low);
  return bytes;
}

inline ChunkDigest ChunkDigest::FromBytes(const char* sixteen_bytes) {
  return ChunkDigest{ReadBigEndian64(sixteen_bytes + 8), ReadBigEndian64(sixteen_bytes)};
}

struct ChunkDigestHash {
  size_t operator()(const ChunkDigest& d) const { return static_cast<size_t>(d.low); }
};

// Computes digests with one store's secret. Thread-safe (immutable).
class ChunkHasher {
 public:
  static constexpr size_t kSecretSize = 192;

  // `secret` must be kSecretSize bytes of random data.
  explicit ChunkHasher(std::string_view secret);

  ChunkDigest Digest(const void* data, size_t size) const;
  // Digest(source, size), copying the bytes to `copy` on the way: each block
  // is copied while the hash has just brought it into the cache, so the
  // source is read from memory once.
  ChunkDigest DigestAndCopy(const void* source, size_t size, void* copy) const;

  // kSecretSize fresh random bytes for a new store.
  static std::string NewSecret();

 private:
  std::vector<unsigned char> secret_;
  const xxh3::Kernels* kernels_;  // the fastest this CPU runs
};

}  // namespace ckptdb

#endif  // CKPTDB_LIB_CHUNK_DIGEST_H_
