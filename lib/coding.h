// Fixed-width integers and hex, the byte-level encodings of the on-disk
// format (doc/format.md), in one place (as LevelDB's util/coding.h).
//
// Little-endian: values inside records (index entries, chunk headers, the
// safetensors header length). Big-endian: keys, so that they sort as the
// numbers they hold.

#ifndef CKPTDB_LIB_CODING_H_
#define CKPTDB_LIB_CODING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ckptdb {

// Writes the low `bytes` bytes of `value` at `dest`, least significant first.
inline void StoreLittleEndian(char* dest, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) dest[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
inline void AppendLittleEndian(std::string* out, uint64_t value, int bytes) {
  const size_t at = out->size();
  out->resize(at + static_cast<size_t>(bytes));
  StoreLittleEndian(out->data() + at, value, bytes);
}
inline uint64_t ReadLittleEndian(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  return value;
}

inline void AppendBigEndian64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}
inline uint64_t ReadBigEndian64(const char* eight_bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | static_cast<unsigned char>(eight_bytes[i]);
  return value;
}

// ---- Varints (LevelDB's encoding: 7 bits a byte, least significant
// first, the high bit set on every byte but the last) ----

inline void AppendVarint64(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Reads a varint of at most 64 (32) bits at `*p` (before `end`) and moves
// `*p` past it; false when it is cut short or too long.
inline bool GetVarint64(const char** p, const char* end, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63 && *p < end; shift += 7) {
    const auto byte = static_cast<unsigned char>(*(*p)++);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}
inline bool GetVarint32(const char** p, const char* end, uint32_t* value) {
  uint64_t wide = 0;
  const char* start = *p;
  if (!GetVarint64(p, end, &wide) || wide > UINT32_MAX || *p - start > 5) return false;
  *value = static_cast<uint32_t>(wide);
  return true;
}

// Signed values as varints of their zigzag code: small magnitudes, small
// codes (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).
inline uint64_t ZigZag(int64_t value) {
  return (static_cast<uint64_t>(value) << 1) ^ static_cast<uint64_t>(value >> 63);
}
inline int64_t UnZigZag(uint64_t code) {
  return static_cast<int64_t>((code >> 1) ^ (~(code & 1) + 1));
}

inline constexpr char kHexDigits[] = "0123456789abcdef";

// Two lower-case hex digits per byte.
inline std::string HexEncode(std::string_view bytes) {
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    hex += kHexDigits[byte >> 4];
    hex += kHexDigits[byte & 15];
  }
  return hex;
}

enum class HexCase { kLowerOnly, kEither };

// The bytes `hex` encodes; nullopt unless it is an even number of hex
// digits (lower-case only, or either case).
inline std::optional<std::string> HexDecode(std::string_view hex, HexCase accepted) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto digit = [accepted](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (accepted == HexCase::kEither && c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string bytes;
  bytes.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int high = digit(hex[i]);
    const int low = digit(hex[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(high * 16 + low));
  }
  return bytes;
}

}  // namespace ckptdb

#endif  // CKPTDB_LIB_CODING_H_
