#include "chunk_digest.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <random>

namespace ckptdb {

void AppendBigEndian64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

uint64_t ReadBigEndian64(const char* eight_bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | static_cast<unsigned char>(eight_bytes[i]);
  return value;
}

std::string ChunkDigest::ToHex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string bytes = ToBytes();
  std::string hex;
  hex.reserve(32);
  for (unsigned char c : bytes) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

std::string ChunkDigest::ToBytes() const {
  std::string bytes;
  bytes.reserve(16);
  AppendBigEndian64(&bytes, high);
  AppendBigEndian64(&bytes, low);
  return bytes;
}

ChunkDigest ChunkDigest::FromBytes(const char* sixteen_bytes) {
  return ChunkDigest{ReadBigEndian64(sixteen_bytes + 8), ReadBigEndian64(sixteen_bytes)};
}

ChunkHasher::ChunkHasher(std::string_view secret) : secret_(secret.begin(), secret.end()) {
  assert(secret_.size() == kSecretSize);
}

ChunkDigest ChunkHasher::Digest(const void* data, size_t size) const {
  XXH128_hash_t hash = XXH3_128bits_withSecret(data, size, secret_.data(), secret_.size());
  return ChunkDigest{hash.low64, hash.high64};
}

ChunkDigest ChunkHasher::DigestAndCopy(const void* source, size_t size, void* copy) const {
  constexpr size_t kBlock = 128u << 10;  // well inside a core's L2 cache
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset_withSecret(state, secret_.data(), secret_.size());
  const auto* from = static_cast<const unsigned char*>(source);
  auto* to = static_cast<unsigned char*>(copy);
  for (size_t done = 0; done < size; done += kBlock) {
    const size_t block = std::min(kBlock, size - done);
    XXH3_128bits_update(state, from + done, block);
    std::memcpy(to + done, from + done, block);
  }
  XXH128_hash_t hash = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  return ChunkDigest{hash.low64, hash.high64};
}

std::string ChunkHasher::NewSecret() {
  // std::random_device reads the kernel's entropy source (getrandom) on Linux.
  std::random_device entropy;
  std::string secret(kSecretSize, '\0');
  for (char& c : secret) c = static_cast<char>(entropy() & 0xff);
  return secret;
}

}  // namespace ckptdb
