// libFuzzer target: DecodeChunk and ApplyDeltaChunk on arbitrary stored
// chunks, and the EncodeChunk -> DecodeChunk and EncodeDeltaChunk ->
// ApplyDeltaChunk round trips on arbitrary raw bytes.
//
// Input: bytes 0-3 (little-endian) choose expected_size, modulo
// kMaxChunkRawSize + 1 and then capped to kMaxDestSize (above it, modulo
// kMaxDestSize) to keep runs fast; the rest is the stored chunk, decoded into
// a buffer of exactly expected_size bytes (so that ASan sees any write past
// it). The whole input is also the raw bytes of the round trip.
//
// Properties (a violation is __builtin_trap()):
//   - EncodeChunk with element widths 0, 2, 4 and 8 never stores more than
//     the header plus the raw bytes, and DecodeChunk gives the bytes back;
//   - a stored chunk that decodes has a header naming expected_size, and a
//     raw one decodes to its payload;
//   - EncodeDeltaChunk against a base (the raw bytes reversed) stores a
//     chunk whole (DecodeChunk gives the bytes back) or as a delta naming
//     the base (ApplyDeltaChunk onto the base gives the bytes back);
//   - a stored chunk that ApplyDeltaChunk accepts is a delta chunk whose
//     header names expected_size.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "chunk_codec.h"

namespace ckptdb {
namespace {

constexpr uint32_t kMaxDestSize = uint32_t{1} << 20;

// The raw size a stored chunk's header names (the caller checked its size).
uint32_t ReadHeaderSize(std::string_view stored) {
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) {
    size |= static_cast<uint32_t>(static_cast<unsigned char>(stored[2 + i])) << (8 * i);
  }
  return size;
}

void CheckRoundTrip(const uint8_t* data, size_t size) {
  const auto* raw = reinterpret_cast<const std::byte*>(data);
  for (size_t width : {size_t{0}, size_t{2}, size_t{4}, size_t{8}}) {
    ChunkEncoding encoding;
    encoding.element_width = width;
    std::string stored;
    EncodeChunk(raw, size, encoding, &stored);
    if (stored.size() > kChunkHeaderSize + size) __builtin_trap();
    std::vector<std::byte> decoded(size);
    if (!DecodeChunk(stored, size, decoded.data()).ok()) __builtin_trap();
    if (size > 0 && std::memcmp(decoded.data(), raw, size) != 0) __builtin_trap();

    std::vector<std::byte> base(raw, raw + size);
    std::reverse(base.begin(), base.end());
    DeltaBase delta;
    delta.digest = ChunkDigest::FromBytes("0123456789abcdef");
    delta.depth = 3;
    EncodeDeltaChunk(raw, base.data(), size, delta, encoding, size / 2, &stored);
    Result<std::optional<DeltaBase>> parsed = ParseDeltaBase(stored);
    if (!parsed.ok()) __builtin_trap();
    if (parsed->has_value()) {
      if ((*parsed)->digest != delta.digest || (*parsed)->depth != delta.depth) __builtin_trap();
      if (!ApplyDeltaChunk(stored, size, base.data()).ok()) __builtin_trap();
      if (size > 0 && std::memcmp(base.data(), raw, size) != 0) __builtin_trap();
    } else {
      if (!DecodeChunk(stored, size, decoded.data()).ok()) __builtin_trap();
      if (size > 0 && std::memcmp(decoded.data(), raw, size) != 0) __builtin_trap();
    }
  }
}

void CheckDecode(const uint8_t* data, size_t size) {
  if (size < 4) return;
  uint32_t expected = 0;
  for (int i = 0; i < 4; ++i) expected |= static_cast<uint32_t>(data[i]) << (8 * i);
  expected %= kMaxChunkRawSize + 1;
  if (expected > kMaxDestSize) expected %= kMaxDestSize;
  const std::string_view stored(reinterpret_cast<const char*>(data) + 4, size - 4);
  std::vector<std::byte> dest(expected);
  if (ApplyDeltaChunk(stored, expected, dest.data()).ok()) {
    Result<std::optional<DeltaBase>> base = ParseDeltaBase(stored);
    if (!base.ok() || !base->has_value()) __builtin_trap();
    if (ReadHeaderSize(stored) != expected) __builtin_trap();
  }
  if (!DecodeChunk(stored, expected, dest.data()).ok()) return;
  if (stored.size() < kChunkHeaderSize) __builtin_trap();
  if (ReadHeaderSize(stored) != expected) __builtin_trap();
  if (StoredChunkCodec(stored) == ChunkCodec::kRaw) {
    const std::string_view payload = stored.substr(kChunkHeaderSize);
    if (payload.size() != expected) __builtin_trap();
    if (expected > 0 && std::memcmp(dest.data(), payload.data(), expected) != 0) __builtin_trap();
  }
}

}  // namespace
}  // namespace ckptdb

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptdb::CheckDecode(data, size);
  ckptdb::CheckRoundTrip(data, size);
  return 0;
}
