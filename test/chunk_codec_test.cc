// Tests of the stored chunk format: EncodeChunk/DecodeChunk round trips for
// each codec, and DecodeChunk on hostile input (always Corruption, never a
// crash or a write outside the destination).

#include "chunk_codec.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace ckptdb {
namespace {

std::vector<std::byte> RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> bytes(size);
  for (std::byte& b : bytes) b = static_cast<std::byte>(rng());
  return bytes;
}

// `count` values of a trained-like weight: normal, mean 0, stddev 0.02.
template <typename Float>
std::vector<std::byte> TrainedValues(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<Float> normal(0, 0.02);
  std::vector<std::byte> bytes(count * sizeof(Float));
  for (size_t i = 0; i < count; ++i) {
    const Float value = normal(rng);
    std::memcpy(bytes.data() + i * sizeof(Float), &value, sizeof(Float));
  }
  return bytes;
}

// bfloat16-like values: the upper half of trained float32 values.
std::vector<std::byte> TrainedBFloat16(size_t count, uint64_t seed) {
  const std::vector<std::byte> wide = TrainedValues<float>(count, seed);
  std::vector<std::byte> bytes(count * 2);
  for (size_t i = 0; i < count; ++i) std::memcpy(&bytes[i * 2], &wide[i * 4 + 2], 2);
  return bytes;
}

// Runs of equal bytes with random low bits: compresses well without grouping.
std::vector<std::byte> Compressible(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i / 97) ^ (rng() & 1));
  return bytes;
}

std::string Encode(const std::vector<std::byte>& raw, size_t element_width, int zstd_level = 1) {
  ChunkEncoding encoding;
  encoding.element_width = element_width;
  encoding.zstd_level = zstd_level;
  std::string stored;
  EncodeChunk(raw.data(), raw.size(), encoding, &stored);
  return stored;
}

// The header fields of a stored chunk.
uint8_t WidthByte(const std::string& stored) { return static_cast<uint8_t>(stored[1]); }
uint32_t RawSizeField(const std::string& stored) {
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) size |= uint32_t{static_cast<uint8_t>(stored[2 + i])} << (8 * i);
  return size;
}

// A header with the given fields (the encoder's layout, written independently).
std::string Header(uint8_t codec, uint8_t width, uint32_t raw_size) {
  std::string header(kChunkHeaderSize, '\0');
  header[0] = static_cast<char>(codec);
  header[1] = static_cast<char>(width);
  for (int i = 0; i < 4; ++i) header[2 + i] = static_cast<char>((raw_size >> (8 * i)) & 0xff);
  return header;
}

// Plane k holds byte k of every element, in element order (doc/format.md
// §5), built independently of the encoder.
std::vector<std::byte> Planes(const std::vector<std::byte>& raw, size_t width) {
  const size_t count = raw.size() / width;
  std::vector<std::byte> planes(raw.size());
  for (size_t k = 0; k < width; ++k) {
    for (size_t i = 0; i < count; ++i) planes[k * count + i] = raw[i * width + k];
  }
  return planes;
}

// Codec 2 (written by earlier versions, still read), built by hand: one zstd
// frame of the planes.
std::string ByteGroupedByHand(const std::vector<std::byte>& raw, size_t width) {
  const std::vector<std::byte> planes = Planes(raw, width);
  std::string built = Header(2, static_cast<uint8_t>(width), static_cast<uint32_t>(raw.size()));
  std::string compressed(ZSTD_compressBound(planes.size()), '\0');
  compressed.resize(
      ZSTD_compress(compressed.data(), compressed.size(), planes.data(), planes.size(), 3));
  return built + compressed;
}

// Decodes into exactly `expected_size` bytes.
Status Decode(std::string_view stored, size_t expected_size, std::vector<std::byte>* out) {
  out->assign(expected_size, std::byte{0});
  return DecodeChunk(stored, expected_size, out->data());
}

void ExpectRoundTrip(const std::vector<std::byte>& raw, size_t element_width, int zstd_level = 1) {
  const std::string stored = Encode(raw, element_width, zstd_level);
  ASSERT_GE(stored.size(), kChunkHeaderSize);
  EXPECT_EQ(RawSizeField(stored), raw.size());
  std::vector<std::byte> decoded;
  ASSERT_OK(Decode(stored, raw.size(), &decoded));
  EXPECT_TRUE(decoded == raw) << "decoded bytes differ";
}

// ---- Round trips ----

// The byte-plane layout of doc/format.md, checked independently of the
// encoder: `width` descriptors (mode, stored length), then each plane raw or
// as a zstd frame; and codec 2 (one frame of all planes), built by hand,
// still decodes.
TEST(ChunkCodecTest, BytePlanePayloadIsThePlanesOfEachByte) {
  for (size_t width : {2, 4, 8}) {
    SCOPED_TRACE("width " + std::to_string(width));
    const size_t count = 4099;  // not a multiple of any vector width
    std::vector<std::byte> raw(count * width);
    std::mt19937_64 rng(width);
    for (size_t i = 0; i < count; ++i) {
      for (size_t k = 0; k < width; ++k) {
        // Byte 0 is random (stored raw); the others vary slowly (compressed).
        raw[i * width + k] =
            k == 0 ? static_cast<std::byte>(rng()) : static_cast<std::byte>((k << 5) | ((i / 64) & 31));
      }
    }
    const std::vector<std::byte> planes = Planes(raw, width);
    const std::string stored = Encode(raw, width);
    ASSERT_EQ(static_cast<uint8_t>(stored[0]), 3) << "expected the byte-plane codec";
    ASSERT_EQ(WidthByte(stored), width);
    size_t at = kChunkHeaderSize + width * 5;
    for (size_t k = 0; k < width; ++k) {
      SCOPED_TRACE("plane " + std::to_string(k));
      const char* descriptor = stored.data() + kChunkHeaderSize + k * 5;
      uint32_t length = 0;
      for (int b = 0; b < 4; ++b) length |= uint32_t{static_cast<uint8_t>(descriptor[1 + b])} << (8 * b);
      ASSERT_LE(at + length, stored.size());
      std::vector<std::byte> plane(count);
      if (descriptor[0] == 0) {
        EXPECT_EQ(k, 0u) << "only the random plane is stored raw";
        ASSERT_EQ(length, count);
        std::memcpy(plane.data(), stored.data() + at, count);
      } else {
        ASSERT_EQ(descriptor[0], 1);
        ASSERT_EQ(ZSTD_decompress(plane.data(), count, stored.data() + at, length), count);
      }
      EXPECT_EQ(std::memcmp(plane.data(), planes.data() + k * count, count), 0);
      at += length;
    }
    EXPECT_EQ(at, stored.size());
    std::vector<std::byte> decoded;
    ASSERT_OK(Decode(ByteGroupedByHand(raw, width), raw.size(), &decoded));
    EXPECT_TRUE(decoded == raw) << "decoding codec 2 built by hand";
  }
}

TEST(ChunkCodecTest, ZerosCompressWithZstd) {
  const std::vector<std::byte> zeros(64 << 10, std::byte{0});
  const std::string stored = Encode(zeros, 0);
  EXPECT_EQ(StoredChunkCodec(stored), ChunkCodec::kZstd);
  EXPECT_EQ(WidthByte(stored), 0);
  EXPECT_EQ(RawSizeField(stored), zeros.size());
  EXPECT_LT(stored.size(), zeros.size() / 100);
  ExpectRoundTrip(zeros, 0);
}

TEST(ChunkCodecTest, RandomBytesStayRaw) {
  const std::vector<std::byte> raw = RandomBytes(64 << 10, 1);
  const std::string stored = Encode(raw, 0);
  EXPECT_EQ(StoredChunkCodec(stored), ChunkCodec::kRaw);
  EXPECT_EQ(WidthByte(stored), 0);
  ASSERT_EQ(stored.size(), kChunkHeaderSize + raw.size());
  EXPECT_EQ(std::memcmp(stored.data() + kChunkHeaderSize, raw.data(), raw.size()), 0);
  ExpectRoundTrip(raw, 0);
}

TEST(ChunkCodecTest, RandomBytesWithElementWidthStayRaw) {
  const std::vector<std::byte> raw = RandomBytes(64 << 10, 2);
  const std::string stored = Encode(raw, 4);
  EXPECT_EQ(StoredChunkCodec(stored), ChunkCodec::kRaw);
  EXPECT_EQ(WidthByte(stored), 0);
  ExpectRoundTrip(raw, 4);
}

// 256 KiB of N(0, 0.02) float32 values: grouping puts the low-entropy sign and
// exponent bytes together, which saves about 12% at level 1; the two low
// mantissa planes are random and stored raw.
TEST(ChunkCodecTest, TrainedFloat32UsesBytePlanes) {
  const std::vector<std::byte> raw = TrainedValues<float>(64 << 10, 3);
  const std::string stored = Encode(raw, 4);
  EXPECT_EQ(StoredChunkCodec(stored), ChunkCodec::kBytePlanes);
  for (size_t k : {0, 1}) {
    EXPECT_EQ(stored[kChunkHeaderSize + k * 5], 0) << "low mantissa plane " << k << " raw";
  }
  EXPECT_EQ(stored[kChunkHeaderSize + 3 * 5], 1) << "sign and exponent plane compressed";
  EXPECT_EQ(WidthByte(stored), 4);
  EXPECT_EQ(RawSizeField(stored), raw.size());
  EXPECT_LE(static_cast<double>(stored.size() - kChunkHeaderSize),
            (1.0 - kMinSavings) * static_cast<double>(raw.size()));
  ExpectRoundTrip(raw, 4);
}

TEST(ChunkCodecTest, RoundTripIsBitExactForEachWidth) {
  struct WidthCase {
    size_t width;
    std::vector<std::byte> raw;
  };
  const std::vector<WidthCase> cases = {
      {2, TrainedBFloat16(50000, 4)},
      {4, TrainedValues<float>(30000, 5)},
      {8, TrainedValues<double>(20000, 6)},
  };
  for (const WidthCase& test_case : cases) {
    for (int level : {1, 9}) {
      SCOPED_TRACE("width " + std::to_string(test_case.width) + ", level " + std::to_string(level));
      ExpectRoundTrip(test_case.raw, test_case.width, level);
    }
  }
}

TEST(ChunkCodecTest, SizeNotMultipleOfWidthIsNotGrouped) {
  for (size_t width : {2, 4, 8}) {
    SCOPED_TRACE("width " + std::to_string(width));
    std::vector<std::byte> raw = TrainedValues<float>(64 << 10, 7);
    raw.resize(raw.size() + width - 1);  // ends in a partial element
    const std::string stored = Encode(raw, width);
    EXPECT_NE(StoredChunkCodec(stored), ChunkCodec::kByteGroupedZstd);
    EXPECT_NE(StoredChunkCodec(stored), ChunkCodec::kBytePlanes);
    EXPECT_EQ(WidthByte(stored), 0);
    ExpectRoundTrip(raw, width);
  }
}

TEST(ChunkCodecTest, EmptyChunkRoundTrips) {
  for (size_t width : {0, 4}) {
    SCOPED_TRACE("width " + std::to_string(width));
    const std::string stored = Encode({}, width);
    EXPECT_EQ(stored, Header(0, 0, 0));
    std::vector<std::byte> decoded;
    EXPECT_OK(Decode(stored, 0, &decoded));
  }
}

TEST(ChunkCodecTest, OneByteChunkRoundTrips) {
  for (size_t width : {0, 2, 4, 8}) {
    SCOPED_TRACE("width " + std::to_string(width));
    const std::vector<std::byte> raw = {std::byte{0x5a}};
    const std::string stored = Encode(raw, width);
    EXPECT_EQ(stored, Header(0, 0, 1) + "\x5a");
    ExpectRoundTrip(raw, width);
  }
}

TEST(ChunkCodecTest, StoredChunkCodecOfEmptyStringIsRaw) {
  EXPECT_EQ(StoredChunkCodec(""), ChunkCodec::kRaw);
}

// ---- Hostile input ----

void ExpectCorruption(std::string_view stored, size_t expected_size) {
  std::vector<std::byte> decoded;
  const Status status = Decode(stored, expected_size, &decoded);
  EXPECT_TRUE(status.IsCorruption()) << status.ToString();
}

TEST(ChunkCodecTest, ShorterThanHeaderIsCorruption) {
  const std::string stored = Encode(RandomBytes(100, 8), 0);
  for (size_t length = 0; length < kChunkHeaderSize; ++length) {
    SCOPED_TRACE("length " + std::to_string(length));
    ExpectCorruption(std::string_view(stored).substr(0, length), 100);
  }
}

TEST(ChunkCodecTest, HeaderRawLengthDisagreeingWithExpectedIsCorruption) {
  const std::vector<std::string> chunks = {
      Encode(RandomBytes(100, 9), 0),                        // raw
      Encode(std::vector<std::byte>(100, std::byte{0}), 0),  // zstd
  };
  for (const std::string& stored : chunks) {
    SCOPED_TRACE("codec " + std::to_string(static_cast<int>(StoredChunkCodec(stored))));
    ExpectCorruption(stored, 99);
    ExpectCorruption(stored, 101);
    ExpectCorruption(stored, 0);
  }
}

TEST(ChunkCodecTest, RawLengthAboveMaximumIsCorruption) {
  // A well-formed zstd chunk that decodes to kMaxChunkRawSize + 1 bytes, and
  // a destination that large, so only the size limit can refuse it.
  const size_t size = size_t{kMaxChunkRawSize} + 1;
  const std::string stored = Encode(std::vector<std::byte>(size, std::byte{0}), 0);
  ASSERT_EQ(StoredChunkCodec(stored), ChunkCodec::kZstd);
  ASSERT_EQ(RawSizeField(stored), size);
  ExpectCorruption(stored, size);
}

TEST(ChunkCodecTest, UnknownCodecIsCorruption) {
  for (int codec : {5, 127, 255}) {
    SCOPED_TRACE("codec " + std::to_string(codec));
    ExpectCorruption(Header(static_cast<uint8_t>(codec), 0, 4) + "abcd", 4);
  }
}

TEST(ChunkCodecTest, RawPayloadOfWrongLengthIsCorruption) {
  ExpectCorruption(Header(0, 0, 10) + std::string(9, 'x'), 10);
  ExpectCorruption(Header(0, 0, 10) + std::string(11, 'x'), 10);
  ExpectCorruption(Header(0, 0, 10), 10);
}

TEST(ChunkCodecTest, ZstdWithWidthIsCorruption) {
  std::string stored = Encode(std::vector<std::byte>(4096, std::byte{0}), 0);
  ASSERT_EQ(StoredChunkCodec(stored), ChunkCodec::kZstd);
  stored[1] = 4;
  ExpectCorruption(stored, 4096);
}

TEST(ChunkCodecTest, TruncatedZstdPayloadIsCorruption) {
  const std::vector<std::byte> raw = Compressible(16 << 10, 10);
  const std::string stored = Encode(raw, 0);
  ASSERT_EQ(StoredChunkCodec(stored), ChunkCodec::kZstd);
  for (size_t length = kChunkHeaderSize; length < stored.size(); ++length) {
    SCOPED_TRACE("length " + std::to_string(length));
    ExpectCorruption(std::string_view(stored).substr(0, length), raw.size());
  }
}

TEST(ChunkCodecTest, TruncatedGroupedPayloadIsCorruption) {
  const std::vector<std::byte> raw = TrainedValues<float>(64 << 10, 11);
  const std::string planes = Encode(raw, 4);
  ASSERT_EQ(StoredChunkCodec(planes), ChunkCodec::kBytePlanes);
  for (const std::string& stored : {planes, ByteGroupedByHand(raw, 4)}) {
    SCOPED_TRACE("codec " + std::to_string(stored[0]));
    // Every 97th length keeps the loop short on a payload of about 230 KB.
    for (size_t length = kChunkHeaderSize; length < stored.size(); length += 97) {
      SCOPED_TRACE("length " + std::to_string(length));
      ExpectCorruption(std::string_view(stored).substr(0, length), raw.size());
    }
    ExpectCorruption(std::string_view(stored).substr(0, stored.size() - 1), raw.size());
    ExpectCorruption(stored + "x", raw.size());  // bytes after the payload
  }
}

// A flipped bit anywhere (header included) either fails as Corruption or
// decodes to some bytes (zstd frames carry no checksum here): never a crash,
// and never a write past the destination, which guard bytes follow.
void ExpectBitFlipsAreSafe(const std::string& stored, size_t expected_size) {
  constexpr size_t kGuard = 64;
  constexpr std::byte kGuardByte{0xa5};
  std::vector<std::byte> buffer(expected_size + kGuard);
  for (size_t position = 0; position < stored.size(); ++position) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = stored;
      flipped[position] = static_cast<char>(flipped[position] ^ (1 << bit));
      std::fill(buffer.begin(), buffer.end(), kGuardByte);
      const Status status = DecodeChunk(flipped, expected_size, buffer.data());
      ASSERT_TRUE(status.ok() || status.IsCorruption())
          << "byte " << position << " bit " << bit << ": " << status.ToString();
      for (size_t i = expected_size; i < buffer.size(); ++i) {
        ASSERT_EQ(buffer[i], kGuardByte)
            << "write past the destination, byte " << position << " bit " << bit;
      }
    }
  }
}

TEST(ChunkCodecTest, ZstdBitFlipsNeverCrash) {
  const std::vector<std::byte> raw = Compressible(16 << 10, 12);
  const std::string stored = Encode(raw, 0);
  ASSERT_EQ(StoredChunkCodec(stored), ChunkCodec::kZstd);
  ExpectBitFlipsAreSafe(stored, raw.size());
}

TEST(ChunkCodecTest, GroupedBitFlipsNeverCrash) {
  // Small enough to flip every bit: 1024 float32 of which most share a few
  // exponents; the grouped plane of those compresses.
  std::vector<std::byte> raw = TrainedValues<float>(1024, 13);
  for (size_t i = 0; i < raw.size(); i += 4) raw[i] = raw[i + 1] = std::byte{0};
  const std::string stored = Encode(raw, 4);
  ASSERT_EQ(StoredChunkCodec(stored), ChunkCodec::kBytePlanes);
  ExpectBitFlipsAreSafe(stored, raw.size());
  ExpectBitFlipsAreSafe(ByteGroupedByHand(raw, 4), raw.size());
}

TEST(ChunkCodecTest, GroupedWithBadWidthIsCorruption) {
  // 4004 bytes: a multiple of 2 and 4, not of 8 (nor of 3).
  std::vector<std::byte> raw = TrainedValues<float>(1001, 14);
  for (size_t i = 0; i < raw.size(); i += 4) raw[i] = raw[i + 1] = std::byte{0};
  const std::string planes = Encode(raw, 4);
  ASSERT_EQ(StoredChunkCodec(planes), ChunkCodec::kBytePlanes);
  for (const std::string& stored : {planes, ByteGroupedByHand(raw, 4)}) {
    for (int width : {0, 1, 3, 5, 8, 16, 255}) {
      SCOPED_TRACE("codec " + std::to_string(stored[0]) + ", width " + std::to_string(width));
      std::string bad = stored;
      bad[1] = static_cast<char>(width);
      ExpectCorruption(bad, raw.size());
    }
  }
}

// Random strings, mostly behind a header that passes the size check so that
// the codec paths see them, some with a zstd frame magic number in front of
// random frame bytes. The destination is exactly expected_size bytes: under
// ASan any write past it fails the test.
TEST(ChunkCodecTest, RandomInputsNeverCrash) {
  std::mt19937_64 rng(15);
  const uint8_t kWidths[] = {0, 2, 3, 4, 8};
  const std::string kZstdMagic = "\x28\xb5\x2f\xfd";
  for (int iteration = 0; iteration < 2000; ++iteration) {
    const size_t expected_size = rng() % 4097;
    const size_t length = rng() % 600;
    std::string stored(length, '\0');
    for (char& c : stored) c = static_cast<char>(rng());
    if (rng() % 4 != 0) {
      const auto codec = static_cast<uint8_t>(rng() % 5);
      stored = Header(codec, kWidths[rng() % 5], static_cast<uint32_t>(expected_size)) +
               (codec != 0 && rng() % 2 == 0 ? kZstdMagic : "") + stored;
    }
    std::vector<std::byte> dest(expected_size);
    const Status status = DecodeChunk(stored, expected_size, dest.data());
    ASSERT_TRUE(status.ok() || status.IsCorruption())
        << "iteration " << iteration << ": " << status.ToString();
  }
}

// ---- Delta chunks (codec 4) ----

// Trained values after one more small step: every value moved a little.
std::vector<std::byte> NextStep(const std::vector<std::byte>& values, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0, 1e-5f);
  std::vector<std::byte> next = values;
  for (size_t i = 0; i + 4 <= next.size(); i += 4) {
    float value;
    std::memcpy(&value, next.data() + i, 4);
    value += normal(rng);
    std::memcpy(next.data() + i, &value, 4);
  }
  return next;
}

DeltaBase SomeBase(uint8_t depth) {
  DeltaBase base;
  base.digest = ChunkDigest::FromBytes("0123456789abcdef");
  base.depth = depth;
  return base;
}

std::string EncodeDelta(const std::vector<std::byte>& raw, const std::vector<std::byte>& base,
                        const DeltaBase& delta, size_t whole_size_estimate = SIZE_MAX) {
  ChunkEncoding encoding;
  encoding.element_width = 4;
  std::string stored;
  EncodeDeltaChunk(raw.data(), base.data(), raw.size(), delta, encoding, whole_size_estimate,
                   &stored);
  return stored;
}

TEST(ChunkCodecTest, DeltaChunkAppliedToItsBaseGivesTheBytesBack) {
  const std::vector<std::byte> base = TrainedValues<float>(16 << 10, 21);
  const std::vector<std::byte> raw = NextStep(base, 22);
  const std::string stored = EncodeDelta(raw, base, SomeBase(3));
  ASSERT_EQ(StoredChunkCodec(stored), ChunkCodec::kDelta);
  EXPECT_EQ(RawSizeField(stored), raw.size());
  Result<std::optional<DeltaBase>> parsed = ParseDeltaBase(stored);
  ASSERT_OK(parsed.status());
  ASSERT_TRUE(parsed->has_value());
  EXPECT_EQ((*parsed)->digest, SomeBase(3).digest);
  EXPECT_EQ((*parsed)->depth, 3);
  // Smaller than the chunk stored whole: that is the point.
  EXPECT_LT(stored.size(), Encode(raw, 4).size() * 3 / 4);
  std::vector<std::byte> dest = base;
  ASSERT_OK(ApplyDeltaChunk(stored, raw.size(), dest.data()));
  EXPECT_EQ(dest, raw);
  // Decoded without its base, it is refused, not taken for the bytes.
  std::vector<std::byte> alone(raw.size());
  EXPECT_TRUE(DecodeChunk(stored, raw.size(), alone.data()).IsCorruption());
}

TEST(ChunkCodecTest, ADifferenceThatDoesNotCompressIsStoredWhole) {
  const std::vector<std::byte> raw = TrainedValues<float>(4096, 23);
  const std::vector<std::byte> unrelated = RandomBytes(raw.size(), 24);
  const std::string stored = EncodeDelta(raw, unrelated, SomeBase(1));
  EXPECT_EQ(StoredChunkCodec(stored), ChunkCodec::kBytePlanes);
  Result<std::optional<DeltaBase>> parsed = ParseDeltaBase(stored);
  ASSERT_OK(parsed.status());
  EXPECT_FALSE(parsed->has_value());
  std::vector<std::byte> decoded;
  ASSERT_OK(Decode(stored, raw.size(), &decoded));
  EXPECT_EQ(decoded, raw);
}

// A difference larger than the chunk is expected to be stored whole: the
// chunk is encoded whole too, and the smaller kept.
TEST(ChunkCodecTest, ADeltaLargerThanExpectedIsComparedWithTheWholeChunk) {
  const std::vector<std::byte> raw = TrainedValues<float>(4096, 27);
  // A base whose difference with raw compresses, though less than raw does.
  std::vector<std::byte> base = RandomBytes(raw.size(), 28);
  for (size_t i = 3; i < base.size(); i += 8) base[i] = raw[i];
  const std::string whole = Encode(raw, 4);
  const std::string trusted = EncodeDelta(raw, base, SomeBase(1));
  ASSERT_EQ(StoredChunkCodec(trusted), ChunkCodec::kDelta);
  ASSERT_GT(trusted.size(), whole.size());
  EXPECT_EQ(EncodeDelta(raw, base, SomeBase(1), whole.size()), whole);
  // A delta within the estimate is kept, whole never tried.
  EXPECT_EQ(EncodeDelta(raw, base, SomeBase(1), trusted.size()), trusted);
}

TEST(ChunkCodecTest, MalformedDeltaChunksAreCorruption) {
  const std::vector<std::byte> base = TrainedValues<float>(4096, 25);
  const std::vector<std::byte> raw = NextStep(base, 26);
  const std::string good = EncodeDelta(raw, base, SomeBase(2));
  ASSERT_EQ(StoredChunkCodec(good), ChunkCodec::kDelta);
  std::vector<std::byte> dest = base;
  auto expect_corrupt = [&](const std::string& stored, const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_TRUE(ApplyDeltaChunk(stored, raw.size(), dest.data()).IsCorruption());
  };
  for (uint8_t depth : {uint8_t{0}, uint8_t{kMaxDeltaDepth + 1}, uint8_t{255}}) {
    std::string bad = good;
    bad[kChunkHeaderSize + 16] = static_cast<char>(depth);
    expect_corrupt(bad, "depth " + std::to_string(depth));
    EXPECT_TRUE(ParseDeltaBase(bad).status().IsCorruption());
  }
  expect_corrupt(good.substr(0, kDeltaHeaderSize - 1), "shorter than its header");
  expect_corrupt(good.substr(0, kDeltaHeaderSize), "no difference");
  std::string width = good;
  width[1] = 4;
  expect_corrupt(width, "a byte-group width");
  std::string nested = good.substr(0, kDeltaHeaderSize) + good;
  expect_corrupt(nested, "a delta of a delta");
  expect_corrupt(Encode(raw, 4), "a whole chunk");
  EXPECT_TRUE(ApplyDeltaChunk(good, raw.size() - 4, dest.data()).IsCorruption());
  // Bit flips in the difference: Corruption or some bytes, never a crash.
  for (size_t position = kDeltaHeaderSize; position < good.size(); position += 97) {
    std::string flipped = good;
    flipped[position] = static_cast<char>(flipped[position] ^ 0x10);
    dest = base;
    const Status status = ApplyDeltaChunk(flipped, raw.size(), dest.data());
    EXPECT_TRUE(status.ok() || status.IsCorruption()) << status.ToString();
  }
}

}  // namespace
}  // namespace ckptdb
