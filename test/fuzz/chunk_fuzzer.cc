// libFuzzer target: DecodeChunk on arbitrary stored chunks, and the
// EncodeChunk -> DecodeChunk round trip on arbitrary raw bytes.
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
//     raw one decodes to its payload.

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
  if (!DecodeChunk(stored, expected, dest.data()).ok()) return;
  if (stored.size() < kChunkHeaderSize) __builtin_trap();
  uint32_t header_size = 0;
  for (int i = 0; i < 4; ++i) {
    header_size |= static_cast<uint32_t>(static_cast<unsigned char>(stored[2 + i])) << (8 * i);
  }
  if (header_size != expected) __builtin_trap();
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
