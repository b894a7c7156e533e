// The keys and values of a store's column families (doc/format.md §2-4):
// shared by the store, which reads and writes them through RocksDB, and
// repair, which salvages them from the files without RocksDB.
#ifndef CKPTDB_LIB_STORE_FORMAT_H_
#define CKPTDB_LIB_STORE_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "chunk_digest.h"
#include "ckptdb/status.h"
#include "store.h"

namespace ckptdb {

// Keys of the default family (doc/format.md §3) and the family names.
inline constexpr char kFormatVersionKey[] = "ckptdb.format_version";
inline constexpr char kHashSecretKey[] = "ckptdb.hash_secret";
inline constexpr char kStoreIdKey[] = "ckptdb.store_id";
inline constexpr char kNextGenerationKey[] = "ckptdb.next_generation";

inline constexpr char kChunksFamily[] = "chunks";
inline constexpr char kIndexFamily[] = "chunk_index";
inline constexpr char kManifestsFamily[] = "manifests";
inline constexpr size_t kChunkKeySize = 8 + 16;
inline constexpr size_t kIndexValueSize = 16;       // a chunk stored whole
inline constexpr size_t kDeltaIndexValueSize = 33;  // and a delta chunk's base
// Generations stay far below 2^64 so that G + 1 never wraps.
inline constexpr uint64_t kMaxGeneration = uint64_t{1} << 62;

// Keys and values (doc/format.md §2-4).
std::string StepKey(int64_t step);
std::string ChunkKey(uint64_t generation, const ChunkDigest& digest);
std::string EncodeLocation(const ChunkLocation& location);
// Corruption when `value` is not an index value.
Result<ChunkLocation> DecodeLocation(std::string_view value);
// The first key of `generation` in the chunks family.
std::string GenerationStart(uint64_t generation);

}  // namespace ckptdb

#endif  // CKPTDB_LIB_STORE_FORMAT_H_
