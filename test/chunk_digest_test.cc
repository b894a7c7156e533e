// The chunk digest: every compiled variant of keyed XXH3-128 gives the
// digest the xxHash library gives, with and without copying, at the sizes
// where XXH3 changes code paths; and the byte forms keep digest order.

#include "chunk_digest.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "xxh3_kernels.h"

namespace ckptdb {
namespace {

std::string TestSecret() {
  std::string secret(ChunkHasher::kSecretSize, '\0');
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<char>(i * 37 + 11);
  return secret;
}

std::vector<unsigned char> RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> bytes(size);
  for (unsigned char& b : bytes) b = static_cast<unsigned char>(rng());
  return bytes;
}

// XXH3 switches algorithms at 16, 128 and 240 bytes, and the streaming form
// at its 256-byte buffer and at DigestAndCopy's 128 KiB blocks.
const size_t kSizes[] = {0,   1,   3,    4,    8,    9,          16,         17,
                         128, 129, 240,  241,  255,  256,        257,        1024,
                         4095, 65537, (128u << 10) - 1, 128u << 10, (128u << 10) + 1,
                         (4u << 20) + 7};

std::vector<xxh3::Kernels> CompiledVariants() {
  std::vector<xxh3::Kernels> variants{xxh3::Baseline()};
#if defined(CKPTDB_HAVE_AVX2_KERNELS)
  if (__builtin_cpu_supports("avx2")) variants.push_back(xxh3::Avx2());
#endif
  return variants;
}

TEST(ChunkDigestTest, EveryVariantMatchesTheXxhashLibrary) {
  const std::string secret = TestSecret();
  const auto* key = reinterpret_cast<const unsigned char*>(secret.data());
  for (const xxh3::Kernels& kernels : CompiledVariants()) {
    for (size_t size : kSizes) {
      SCOPED_TRACE(std::string(kernels.name) + ", " + std::to_string(size) + " bytes");
      const std::vector<unsigned char> data = RandomBytes(size, size);
      const XXH128_hash_t expected = XXH3_128bits_withSecret(data.data(), size, key, secret.size());
      const xxh3::Digest128 digest = kernels.digest(data.data(), size, key, secret.size());
      EXPECT_EQ(digest.low, expected.low64);
      EXPECT_EQ(digest.high, expected.high64);
      std::vector<unsigned char> copy(size + 1, 0xAB);
      const xxh3::Digest128 copied =
          kernels.digest_and_copy(data.data(), size, copy.data(), key, secret.size());
      EXPECT_EQ(copied.low, expected.low64);
      EXPECT_EQ(copied.high, expected.high64);
      EXPECT_TRUE(std::equal(data.begin(), data.end(), copy.begin()));
      EXPECT_EQ(copy[size], 0xAB) << "wrote past the copy's end";
    }
  }
}

TEST(ChunkDigestTest, UsesAvx2WhereTheCpuHasIt) {
#if defined(CKPTDB_HAVE_AVX2_KERNELS)
  EXPECT_STREQ(xxh3::Fastest().name, __builtin_cpu_supports("avx2") ? "Avx2" : "Baseline");
#else
  EXPECT_STREQ(xxh3::Fastest().name, "Baseline");
#endif
}

// Digests name chunks on disk (doc/format.md): this one must never change.
// (XXH3_128bits_withSecret of libxxhash 0.8.1, high half first.)
TEST(ChunkDigestTest, KnownDigest) {
  ChunkHasher hasher(TestSecret());
  const std::string text = "ckptdb chunk digest";
  EXPECT_EQ(hasher.Digest(text.data(), text.size()).ToHex(), "3c20472e4029031284e8c57e20e6b953");
}

TEST(ChunkDigestTest, DigestAndCopyEqualsDigest) {
  ChunkHasher hasher(TestSecret());
  const std::vector<unsigned char> data = RandomBytes((1u << 20) + 3, 5);
  std::vector<unsigned char> copy(data.size());
  EXPECT_EQ(hasher.DigestAndCopy(data.data(), data.size(), copy.data()),
            hasher.Digest(data.data(), data.size()));
  EXPECT_EQ(copy, data);
}

TEST(ChunkDigestTest, SecretsSeparateDigests) {
  const std::string first = ChunkHasher::NewSecret();
  const std::string second = ChunkHasher::NewSecret();
  ASSERT_EQ(first.size(), ChunkHasher::kSecretSize);
  ASSERT_NE(first, second);
  for (size_t size : kSizes) {
    if (size == 0) continue;
    const std::vector<unsigned char> data = RandomBytes(size, 9);
    EXPECT_NE(ChunkHasher(first).Digest(data.data(), size),
              ChunkHasher(second).Digest(data.data(), size))
        << size << " bytes";
  }
}

TEST(ChunkDigestTest, ByteFormsKeepDigestOrder) {
  std::mt19937_64 rng(3);
  std::vector<ChunkDigest> digests;
  for (int i = 0; i < 200; ++i) digests.push_back({rng(), rng() >> (i % 64)});
  for (const ChunkDigest& a : digests) {
    const std::string bytes = a.ToBytes();
    ASSERT_EQ(bytes.size(), 16u);
    EXPECT_EQ(ChunkDigest::FromBytes(bytes.data()), a);
    ASSERT_EQ(a.ToHex().size(), 32u);
    for (const ChunkDigest& b : digests) {
      EXPECT_EQ(a < b, bytes < b.ToBytes());
      EXPECT_EQ(a < b, a.ToHex() < b.ToHex());
    }
  }
  EXPECT_EQ((ChunkDigest{0x0102, 0xA0}).ToHex(),
            "00000000000000a00000000000000102");
}

}  // namespace
}  // namespace ckptdb
