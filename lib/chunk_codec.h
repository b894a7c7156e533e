// The stored form of one chunk: a 6-byte header and a payload.
//
//   byte 0     codec: 0 raw, 1 zstd, 2 byte-grouped zstd, 3 byte planes,
//              4 delta
//   byte 1     element width of the byte grouping (2, 4 or 8), 0 otherwise
//   bytes 2-5  raw (decoded) length, little-endian uint32
//   bytes 6-   payload
//
// A delta chunk (codec 4, store format 3) holds the XOR of its bytes with
// those of another chunk, its base: its payload is the base's digest (16
// bytes), its depth (1 byte: 1 when the base is a whole chunk, else the
// base's depth + 1) and the XOR stored as a chunk of codec 0-3. Consecutive
// steps of training differ in few bits per value, and their XOR compresses
// better than either step.
//
// Byte grouping stores byte k of every element together, as Blosc's shuffle
// does: the exponent bytes of floats are compressible, the low mantissa
// bytes mostly are not. Codec 2 (written before codec 3 existed, still read)
// compresses all the planes as one zstd frame; codec 3 stores each plane
// raw or as its own zstd frame, so that planes that do not compress cost no
// zstd time to write nor to read (doc/format.md §5). The encoder keeps raw
// when compression saves less than kMinSavings of the bytes.

#ifndef CKPTDB_LIB_CHUNK_CODEC_H_
#define CKPTDB_LIB_CHUNK_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "chunk_digest.h"
#include "ckptdb/status.h"

namespace ckptdb {

enum class ChunkCodec : uint8_t {
  kRaw = 0,
  kZstd = 1,
  kByteGroupedZstd = 2,
  kBytePlanes = 3,
  kDelta = 4,
};

inline constexpr size_t kChunkHeaderSize = 6;
// Compressed payloads must be at most this fraction of the raw size.
inline constexpr double kMinSavings = 0.05;
// No chunk decodes to more than this; bounds what a lying header can ask for.
inline constexpr uint32_t kMaxChunkRawSize = 64u << 20;

struct ChunkEncoding {
  // Element width for byte grouping; 0 or 1 disables it.
  size_t element_width = 0;
  int zstd_level = 1;
  // Byte-grouped chunks as codec 3 (store format 2); false: codec 2, for
  // stores of format 1.
  bool byte_planes = true;
};

// Encodes `size` raw bytes into `out` (replacing its contents).
void EncodeChunk(const std::byte* raw, size_t size, const ChunkEncoding& encoding,
                 std::string* out);

// Decodes `stored` into exactly `expected_size` bytes at `dest` (a delta
// chunk: Corruption, see ApplyDeltaChunk). Corruption
// when the header is malformed, disagrees with `expected_size`, or the payload
// does not decode to exactly that many bytes. Never allocates more than
// `expected_size` bytes of scratch.
Status DecodeChunk(std::string_view stored, size_t expected_size, std::byte* dest);

// Delta chunks: the chunk a delta chunk is stored against, and how many
// deltas deep it is (1: the base is stored whole). Decoding a chunk of depth
// d reads d + 1 chunks.
struct DeltaBase {
  ChunkDigest digest;
  uint8_t depth = 0;
};
inline constexpr size_t kDeltaHeaderSize = kChunkHeaderSize + 16 + 1;
// No chain is longer: bounds the work a lying store can ask of a restore.
inline constexpr uint8_t kMaxDeltaDepth = 32;

// Encodes `size` raw bytes as the XOR with `base_bytes` (the base's bytes,
// `size` of them) into `out`, replacing its contents. When the XOR does not
// compress, the chunk is stored whole instead; when its encoding is larger
// than `whole_size_estimate` (say, what the base's chain started with), the
// chunk is also encoded whole and the smaller kept. Check which with
// ParseDeltaBase.
void EncodeDeltaChunk(const std::byte* raw, const std::byte* base_bytes, size_t size,
                      const DeltaBase& base, const ChunkEncoding& encoding,
                      size_t whole_size_estimate, std::string* out);

// The base of a delta chunk; nullopt for a chunk stored whole. Corruption
// for a delta chunk too short or of depth 0 or above kMaxDeltaDepth.
Result<std::optional<DeltaBase>> ParseDeltaBase(std::string_view stored);

// Delta chunks: XORs the difference `stored` holds into `dest`, which holds
// the base's `expected_size` bytes. Checks as DecodeChunk does.
Status ApplyDeltaChunk(std::string_view stored, size_t expected_size, std::byte* dest);

// The codec byte of a stored chunk (for statistics); kRaw when too short.
ChunkCodec StoredChunkCodec(std::string_view stored);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_CHUNK_CODEC_H_
