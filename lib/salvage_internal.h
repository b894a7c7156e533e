// Private to lib/salvage*.cc: the encodings RocksDB's table files and logs
// share (crc32c, block checksums; varints are in coding.h), read without
// RocksDB.
#ifndef CKPTDB_LIB_SALVAGE_INTERNAL_H_
#define CKPTDB_LIB_SALVAGE_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "coding.h"

namespace ckptdb::salvage {

// crc32c (Castagnoli) of `size` bytes, continuing `crc` (0 to start).
uint32_t Crc32cExtend(uint32_t crc, const char* data, size_t size);

// RocksDB stores CRCs masked, so that the CRC of data holding CRCs is not
// degenerate.
inline uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

enum ChecksumType : uint8_t { kNoChecksum = 0, kCrc32c = 1, kXxHash = 2, kXxHash64 = 3, kXxh3 = 4 };

// A table block's checksum of `type`: over its bytes and the compression
// type byte after them.
uint32_t BlockChecksum(uint8_t type, const char* data, size_t size, char last_byte);

// "bytes BEGIN-END", for messages.
std::string Range(uint64_t begin, uint64_t end);

}  // namespace ckptdb::salvage

#endif  // CKPTDB_LIB_SALVAGE_INTERNAL_H_
