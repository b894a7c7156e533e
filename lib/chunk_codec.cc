#include "chunk_codec.h"

// For ZSTD_c_literalCompressionMode: a parameter of zstd's experimental
// section (set through the stable ZSTD_CCtx_setParameter, refused rather
// than misread by a libzstd without it; CompressPlane then does without).
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <memory>

#include "coding.h"
#include "huge_pages.h"

namespace ckptdb {
namespace {

struct ZstdContexts {
  ZstdContexts() : compress(ZSTD_createCCtx()), decompress(ZSTD_createDCtx()) {}
  ~ZstdContexts() {
    ZSTD_freeCCtx(compress);
    ZSTD_freeDCtx(decompress);
  }
  ZSTD_CCtx* compress;
  ZSTD_DCtx* decompress;
};

// One context pair per thread: creating them per chunk costs more than small
// chunks take to compress.
ZstdContexts& ThreadContexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}

// Scratch for byte grouping, reused by the thread.
std::byte* ThreadScratch(size_t size) {
  thread_local ScratchBuffer scratch;
  return scratch.Get(size);
}

// Byte k of element i moves between in[i * kWidth + k] (elements) and
// byte i of plane k. One pass over the elements with the width known at
// compile time lets the compiler vectorize the transposition: 6-10x faster
// than a pass per plane, which ran at ~3.4 GB/s, as slow as zstd itself.
template <size_t kWidth>
void SplitPlanesFixed(const std::byte* in, size_t count, std::byte* out) {
  for (size_t i = 0; i < count; ++i) {
    for (size_t k = 0; k < kWidth; ++k) out[k * count + i] = in[i * kWidth + k];
  }
}

// The inverse, from planes wherever each lies (the pointers are copied into
// locals so that the compiler sees they do not change during the loop).
template <size_t kWidth>
void InterleavePlanesFixed(const std::byte* const* planes, size_t count, std::byte* out) {
  const std::byte* plane[kWidth];
  for (size_t k = 0; k < kWidth; ++k) plane[k] = planes[k];
  for (size_t i = 0; i < count; ++i) {
    for (size_t k = 0; k < kWidth; ++k) out[i * kWidth + k] = plane[k][i];
  }
}

// `width` is 2, 4 or 8 and divides `size` (GroupingApplies). Into `width`
// contiguous planes at `out`.
void GroupBytes(const std::byte* in, size_t size, size_t width, std::byte* out) {
  switch (width) {
    case 2:
      return SplitPlanesFixed<2>(in, size / 2, out);
    case 4:
      return SplitPlanesFixed<4>(in, size / 4, out);
    default:
      assert(width == 8);
      return SplitPlanesFixed<8>(in, size / 8, out);
  }
}

// The inverse, from `width` planes wherever each lies.
void InterleavePlanes(const std::byte* const* planes, size_t size, size_t width, std::byte* out) {
  switch (width) {
    case 2:
      return InterleavePlanesFixed<2>(planes, size / 2, out);
    case 4:
      return InterleavePlanesFixed<4>(planes, size / 4, out);
    default:
      assert(width == 8);
      return InterleavePlanesFixed<8>(planes, size / 8, out);
  }
}

void UngroupBytes(const std::byte* in, size_t size, size_t width, std::byte* out) {
  const std::byte* planes[8];
  for (size_t k = 0; k < width; ++k) planes[k] = in + k * (size / width);
  InterleavePlanes(planes, size, width, out);
}

// Compresses one byte plane. At level 1 (CheckpointerOptions::fast) with a
// 64-entry hash table and 7-byte minimum matches: on the sign and exponent
// plane of trained float32 weights that ran 3.2x faster than zstd's level 1
// (0.87 against 0.27 GB/s on this machine) and stored 0.340 of the plane
// instead of 0.368 (level 1's large table mostly missed the cache; its short
// matches cost more than they saved on a plane of few, random symbols).
// Such a plane is worth its Huffman coding, not a search for matches: the
// match finder also skips ahead (zstd's fast strategy, acceleration 256),
// with the literals still Huffman-coded (which zstd's default stops doing
// once the strategy accelerates). On the sign-and-exponent planes of the
// benchmark's bfloat16 and float32 trajectories that compressed 1.7x faster
// (1.17 against 0.70 GB/s), stored 0.297 of the plane instead of 0.308 and
// decoded 1.4x faster (2.8 against 1.9 GB/s); a long run (zeros) is still
// found as one match at the first position checked inside it.
size_t CompressPlane(std::byte* dest, size_t capacity, const std::byte* plane, size_t size,
                     int level) {
  ZSTD_CCtx* context = ThreadContexts().compress;
  ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level);
  if (level == 1) {
    ZSTD_CCtx_setParameter(context, ZSTD_c_hashLog, 6);
    ZSTD_CCtx_setParameter(context, ZSTD_c_minMatch, 7);
    if (!ZSTD_isError(ZSTD_CCtx_setParameter(context, ZSTD_c_literalCompressionMode,
                                             ZSTD_ps_enable))) {
      ZSTD_CCtx_setParameter(context, ZSTD_c_targetLength, 256);
    }
  }
  return ZSTD_compress2(context, dest, capacity, plane, size);
}

// Whether zstd is worth trying on a whole plane: its first kProbeBytes must
// compress by kMinSavings. The low mantissa bytes of trained floats are
// close to uniformly random; compressing them costs zstd time and saves
// nothing. A plane no larger than the probe is simply compressed whole.
bool PlaneLooksCompressible(const std::byte* plane, size_t size, int level, std::string* scratch) {
  constexpr size_t kProbeBytes = 32 << 10;
  if (size <= kProbeBytes) return true;
  const size_t probe = kProbeBytes;
  scratch->resize(ZSTD_compressBound(probe));
  const size_t compressed = CompressPlane(reinterpret_cast<std::byte*>(scratch->data()),
                                          scratch->size(), plane, probe, level);
  return !ZSTD_isError(compressed) &&
         static_cast<double>(compressed) <= (1.0 - kMinSavings) * static_cast<double>(probe);
}

enum class PlaneMode : uint8_t { kRaw = 0, kZstd = 1 };
constexpr size_t kPlaneDescriptorSize = 5;  // mode, stored length (uint32 LE)

// The header, into the first kChunkHeaderSize bytes of `out`.
void StoreHeader(ChunkCodec codec, size_t width, size_t raw_size, std::string* out) {
  (*out)[0] = static_cast<char>(codec);
  (*out)[1] = static_cast<char>(width);
  StoreLittleEndian(out->data() + 2, static_cast<uint32_t>(raw_size), 4);
}

bool GroupingApplies(size_t width, size_t size) {
  return (width == 2 || width == 4 || width == 8) && size % width == 0;
}

// Codec 0: the bytes as they are.
void StoreRaw(const std::byte* raw, size_t size, std::string* out) {
  out->resize(kChunkHeaderSize);
  StoreHeader(ChunkCodec::kRaw, 0, size, out);
  out->append(reinterpret_cast<const char*>(raw), size);
}

// Codec 3: the byte planes of `raw`, each stored raw or as a zstd frame.
// False (and `out` unspecified) when that saves less than kMinSavings.
bool EncodeBytePlanes(const std::byte* raw, size_t size, size_t width, int level,
                      std::string* out) {
  std::byte* grouped = ThreadScratch(size);
  GroupBytes(raw, size, width, grouped);
  const size_t plane_size = size / width;
  const size_t payload_start = kChunkHeaderSize + width * kPlaneDescriptorSize;
  out->resize(payload_start + width * ZSTD_compressBound(plane_size));
  thread_local std::string probe;
  size_t at = payload_start;
  for (size_t k = 0; k < width; ++k) {
    const std::byte* plane = grouped + k * plane_size;
    size_t stored = plane_size;
    PlaneMode mode = PlaneMode::kRaw;
    if (PlaneLooksCompressible(plane, plane_size, level, &probe)) {
      const size_t compressed =
          CompressPlane(reinterpret_cast<std::byte*>(out->data() + at), out->size() - at, plane,
                        plane_size, level);
      if (!ZSTD_isError(compressed) &&
          static_cast<double>(compressed) <= (1.0 - kMinSavings) * double(plane_size)) {
        stored = compressed;
        mode = PlaneMode::kZstd;
      }
    }
    if (mode == PlaneMode::kRaw) std::memcpy(out->data() + at, plane, plane_size);
    char* descriptor = out->data() + kChunkHeaderSize + k * kPlaneDescriptorSize;
    descriptor[0] = static_cast<char>(mode);
    StoreLittleEndian(descriptor + 1, stored, 4);
    at += stored;
  }
  if (static_cast<double>(at - kChunkHeaderSize) > (1.0 - kMinSavings) * double(size)) {
    return false;
  }
  out->resize(at);
  StoreHeader(ChunkCodec::kBytePlanes, width, size, out);
  return true;
}

// Codec 3's payload into `dest`: zstd planes decode into scratch, raw planes
// are read where they lie, then the planes interleave into elements.
Status DecodeBytePlanes(std::string_view payload, size_t width, size_t raw_size,
                        std::byte* dest) {
  if (!GroupingApplies(width, raw_size)) {
    return Status::Corruption("byte-plane chunk of " + std::to_string(raw_size) +
                              " bytes with width " + std::to_string(width));
  }
  const size_t plane_size = raw_size / width;
  if (payload.size() < width * kPlaneDescriptorSize) {
    return Status::Corruption("byte-plane chunk shorter than its plane descriptors");
  }
  std::string_view planes_bytes = payload.substr(width * kPlaneDescriptorSize);
  std::byte* scratch = ThreadScratch(raw_size);
  const std::byte* planes[8];
  size_t at = 0;
  for (size_t k = 0; k < width; ++k) {
    const char* descriptor = payload.data() + k * kPlaneDescriptorSize;
    const auto mode = static_cast<PlaneMode>(descriptor[0]);
    const uint64_t stored = ReadLittleEndian(descriptor + 1, 4);
    if (stored > planes_bytes.size() - at) {
      return Status::Corruption("byte plane " + std::to_string(k) + " of " +
                                std::to_string(stored) + " bytes overruns the chunk");
    }
    const std::string_view plane = planes_bytes.substr(at, stored);
    at += stored;
    if (mode == PlaneMode::kRaw) {
      if (stored != plane_size) {
        return Status::Corruption("raw byte plane " + std::to_string(k) + " of " +
                                  std::to_string(stored) + " bytes, expected " +
                                  std::to_string(plane_size));
      }
      planes[k] = reinterpret_cast<const std::byte*>(plane.data());
    } else if (mode == PlaneMode::kZstd) {
      std::byte* target = scratch + k * plane_size;
      const size_t decoded = ZSTD_decompressDCtx(ThreadContexts().decompress, target, plane_size,
                                                 plane.data(), plane.size());
      if (ZSTD_isError(decoded)) {
        return Status::Corruption("byte plane " + std::to_string(k) + ": zstd: " +
                                  ZSTD_getErrorName(decoded));
      }
      if (decoded != plane_size) {
        return Status::Corruption("byte plane " + std::to_string(k) + " decoded to " +
                                  std::to_string(decoded) + " bytes, expected " +
                                  std::to_string(plane_size));
      }
      planes[k] = target;
    } else {
      return Status::Corruption("byte plane " + std::to_string(k) + " has unknown mode " +
                                std::to_string(static_cast<unsigned char>(descriptor[0])));
    }
  }
  if (at != planes_bytes.size()) {
    return Status::Corruption("byte-plane chunk has " + std::to_string(planes_bytes.size() - at) +
                              " bytes after its planes");
  }
  InterleavePlanes(planes, raw_size, width, dest);
  return Status::OK();
}

// dest[i] = a[i] ^ b[i]; dest may be a.
void XorBytes(const std::byte* a, const std::byte* b, size_t size, std::byte* dest) {
  for (size_t i = 0; i < size; ++i) dest[i] = a[i] ^ b[i];
}

// The XOR of a delta chunk, apart from ThreadScratch (which encoding and
// decoding the XOR's own chunk use).
std::byte* ThreadDifference(size_t size) {
  thread_local ScratchBuffer difference;
  return difference.Get(size);
}

}  // namespace

void EncodeChunk(const std::byte* raw, size_t size, const ChunkEncoding& encoding,
                 std::string* out) {
  // An empty chunk has no planes to group.
  const bool grouped = size > 0 && GroupingApplies(encoding.element_width, size);
  if (grouped && encoding.byte_planes) {
    if (EncodeBytePlanes(raw, size, encoding.element_width, encoding.zstd_level, out)) return;
    StoreRaw(raw, size, out);
    return;
  }
  const std::byte* source = raw;
  if (grouped) {
    std::byte* scratch = ThreadScratch(size);
    GroupBytes(raw, size, encoding.element_width, scratch);
    source = scratch;
  }
  const size_t bound = ZSTD_compressBound(size);
  out->resize(kChunkHeaderSize + bound);
  const size_t compressed = ZSTD_compressCCtx(
      ThreadContexts().compress, out->data() + kChunkHeaderSize, bound, source, size,
      encoding.zstd_level);
  if (ZSTD_isError(compressed) ||
      static_cast<double>(compressed) > (1.0 - kMinSavings) * static_cast<double>(size)) {
    StoreRaw(raw, size, out);
    return;
  }
  out->resize(kChunkHeaderSize + compressed);
  StoreHeader(grouped ? ChunkCodec::kByteGroupedZstd : ChunkCodec::kZstd,
              grouped ? encoding.element_width : 0, size, out);
}

void EncodeDeltaChunk(const std::byte* raw, const std::byte* base_bytes, size_t size,
                      const DeltaBase& base, const ChunkEncoding& encoding,
                      size_t whole_size_estimate, std::string* out) {
  assert(base.depth >= 1 && base.depth <= kMaxDeltaDepth);
  std::byte* difference = ThreadDifference(size);
  XorBytes(raw, base_bytes, size, difference);
  thread_local std::string inner;
  EncodeChunk(difference, size, encoding, &inner);
  if (StoredChunkCodec(inner) == ChunkCodec::kRaw) {
    // The difference does not compress: the chunk alone may.
    EncodeChunk(raw, size, encoding, out);
    return;
  }
  // A difference larger than the chunk is likely to be stored whole (a
  // tensor that changed wholesale): try that too, keep the smaller. Chunks
  // whose difference is smaller, as training's are, are compressed once.
  if (kDeltaHeaderSize + inner.size() > whole_size_estimate) {
    EncodeChunk(raw, size, encoding, out);
    if (out->size() <= kDeltaHeaderSize + inner.size()) return;
  }
  out->resize(kDeltaHeaderSize);
  StoreHeader(ChunkCodec::kDelta, 0, size, out);
  const std::string digest = base.digest.ToBytes();
  std::memcpy(out->data() + kChunkHeaderSize, digest.data(), digest.size());
  (*out)[kChunkHeaderSize + 16] = static_cast<char>(base.depth);
  out->append(inner);
}

Result<std::optional<DeltaBase>> ParseDeltaBase(std::string_view stored) {
  if (StoredChunkCodec(stored) != ChunkCodec::kDelta) return std::optional<DeltaBase>();
  if (stored.size() < kDeltaHeaderSize) {
    return Status::Corruption("delta chunk of " + std::to_string(stored.size()) +
                              " bytes is shorter than its header");
  }
  if (stored[1] != 0) {
    return Status::Corruption("delta chunk with byte-group width " +
                              std::to_string(static_cast<unsigned char>(stored[1])));
  }
  DeltaBase base;
  base.digest = ChunkDigest::FromBytes(stored.data() + kChunkHeaderSize);
  base.depth = static_cast<uint8_t>(stored[kChunkHeaderSize + 16]);
  if (base.depth == 0 || base.depth > kMaxDeltaDepth) {
    return Status::Corruption("delta chunk of depth " + std::to_string(base.depth) +
                              " (1 to " + std::to_string(kMaxDeltaDepth) + " allowed)");
  }
  return std::optional<DeltaBase>(base);
}

Status ApplyDeltaChunk(std::string_view stored, size_t expected_size, std::byte* dest) {
  Result<std::optional<DeltaBase>> base = ParseDeltaBase(stored);
  if (!base.ok()) return base.status();
  if (!base->has_value()) return Status::Corruption("a whole chunk where a delta chunk belongs");
  const auto raw_size = static_cast<uint32_t>(ReadLittleEndian(stored.data() + 2, 4));
  if (raw_size != expected_size) {
    return Status::Corruption("delta chunk header says " + std::to_string(raw_size) +
                              " raw bytes, the manifest " + std::to_string(expected_size));
  }
  const std::string_view difference = stored.substr(kDeltaHeaderSize);
  if (StoredChunkCodec(difference) == ChunkCodec::kDelta) {
    return Status::Corruption("delta chunk whose difference is itself a delta chunk");
  }
  std::byte* decoded = ThreadDifference(expected_size);
  Status status = DecodeChunk(difference, expected_size, decoded);
  if (!status.ok()) return status.WithContext("the difference of a delta chunk");
  XorBytes(dest, decoded, expected_size, dest);
  return Status::OK();
}

ChunkCodec StoredChunkCodec(std::string_view stored) {
  return stored.empty() ? ChunkCodec::kRaw : static_cast<ChunkCodec>(stored[0]);
}

Status DecodeChunk(std::string_view stored, size_t expected_size, std::byte* dest) {
  if (stored.size() < kChunkHeaderSize) {
    return Status::Corruption("chunk of " + std::to_string(stored.size()) +
                              " bytes is shorter than its header");
  }
  const auto codec = static_cast<ChunkCodec>(stored[0]);
  const size_t width = static_cast<unsigned char>(stored[1]);
  const auto raw_size = static_cast<uint32_t>(ReadLittleEndian(stored.data() + 2, 4));
  if (raw_size != expected_size || raw_size > kMaxChunkRawSize) {
    return Status::Corruption("chunk header says " + std::to_string(raw_size) +
                              " raw bytes, the manifest " + std::to_string(expected_size));
  }
  std::string_view payload = stored.substr(kChunkHeaderSize);
  switch (codec) {
    case ChunkCodec::kRaw:
      if (width != 0)
        return Status::Corruption("raw chunk with byte-group width " + std::to_string(width));
      if (payload.size() != raw_size) {
        return Status::Corruption("raw chunk payload of " + std::to_string(payload.size()) +
                                  " bytes, expected " + std::to_string(raw_size));
      }
      if (raw_size > 0) std::memcpy(dest, payload.data(), raw_size);
      return Status::OK();
    case ChunkCodec::kZstd:
    case ChunkCodec::kByteGroupedZstd: {
      const bool grouped = codec == ChunkCodec::kByteGroupedZstd;
      if (grouped != (width != 0) || (grouped && !GroupingApplies(width, raw_size))) {
        return Status::Corruption("chunk byte-group width " + std::to_string(width) +
                                  " does not fit codec " + std::to_string(stored[0]));
      }
      std::byte* target = grouped ? ThreadScratch(raw_size) : dest;
      size_t decoded = ZSTD_decompressDCtx(ThreadContexts().decompress, target, raw_size,
                                           payload.data(), payload.size());
      if (ZSTD_isError(decoded)) {
        return Status::Corruption(std::string("zstd: ") + ZSTD_getErrorName(decoded));
      }
      if (decoded != raw_size) {
        return Status::Corruption("chunk decoded to " + std::to_string(decoded) +
                                  " bytes, expected " + std::to_string(raw_size));
      }
      if (grouped) UngroupBytes(target, raw_size, width, dest);
      return Status::OK();
    }
    case ChunkCodec::kBytePlanes:
      return DecodeBytePlanes(payload, width, raw_size, dest);
    case ChunkCodec::kDelta:
      return Status::Corruption("a delta chunk decoded without its base");
  }
  return Status::Corruption("unknown chunk codec " +
                            std::to_string(static_cast<unsigned char>(stored[0])));
}

}  // namespace ckptdb
